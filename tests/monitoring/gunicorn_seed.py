"""Seeds the gunicorn metrics test's database; run inside `manage.py shell` (its settings).

Prints JSON: one signed-in session key per user, each user with one connection whose
access token has expired while another worker holds its refresh claim.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from accounts.models import User
from integrations.models import JiraConnection, JiraSite


def main(users: int) -> None:
    now = timezone.now()
    sessions = []
    for n in range(users):
        user = User.objects.create_user(f"user{n}@example.com", "unused horse battery staple")
        connection = JiraConnection.objects.create(
            user=user,
            account_id=f"557058:gunicorn-{n}",
            access_token=f"access-{n}-secret",
            refresh_token=f"refresh-{n}-secret",
            access_token_expires_at=now - timedelta(minutes=1),
            tokens_issued_at=now - timedelta(hours=1),
            first_consented_at=now,
            claim_id="6f1c3a52-0000-4000-8000-00000000000" + str(n),
            claimed_until=now + timedelta(minutes=10),
        )
        JiraSite.objects.create(connection=connection, cloud_id=f"cloud-{n}", url=f"https://s{n}.atlassian.net")
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "accounts.backends.EmailBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sessions.append(session.session_key)
    sys.stdout.write(json.dumps(sessions) + "\n")
