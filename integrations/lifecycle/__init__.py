"""A Jira connection's life, one module per stage (docs/architecture.md has the map).

config   whether Jira is configured at all (`jira_configured`, ConfigurationError)
connect  the callback's upsert, the connection's sites, disconnect
status   needs reconnect, and the email that tells the user
due      THE due rule: the query, the predicate and the reason a person reads
refresh  one connection, single-flight: claim, compare-and-swap store, backoff
run      the scheduled batch (`manage.py refresh_tokens`)
consent  the 365-day consent limit: warnings 14 days and 1 day ahead
access   a usable token for every Jira call: ConnectionTokens, `jira_for(user)`
events   every audit-trail write, staff actions included, and its pruning
keys     re-encrypting stored tokens under the newest Fernet key
webhooks Jira webhooks per site: registered under a claim, extended, health, scope drift
deliveries  what the webhook receiver stores (once per delivery), the signal, pruning
"""
