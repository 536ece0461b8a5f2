"""My Jira: the page of a user's open Jira issues across their sites.

page   what the page shows (fetched in parallel, one query for every connection)
views  the view: parse the query string, call page, render
urls   mounted at /my-jira/
"""
