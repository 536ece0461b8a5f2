"""gunicorn settings, read from the working directory by default (`gunicorn jiraconnect.wsgi`).

Only what the portal needs differently from gunicorn's defaults; command-line flags
still win (`--workers`, `--bind`).
"""

# gunicorn's default access-log line holds the whole request line, query string
# included, and Atlassian's redirect puts the authorization code there
# (/integrations/jira/callback/?code=...&state=...). Log the path alone (%(U)s),
# and no Referer either: the consent page that sent the browser back may carry them.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'


def worker_exit(server: object, worker: object) -> None:
    """Write the monitoring counts a stopping worker still buffers (monitoring.recorder):
    they would otherwise be lost with it."""
    from django.apps import apps

    if apps.ready:
        from monitoring.recorder import flush

        flush()
