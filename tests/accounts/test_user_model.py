"""accounts.User: the database itself keeps one account per address, whatever its case."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from accounts.models import User

pytestmark = pytest.mark.django_db


# objects.create skips the manager's lower-casing, so only the Lower("email") constraint
# stands between these pairs (a plain unique column compares case-sensitively).
@pytest.mark.parametrize(
    ("first", "second"),
    [("alice@example.com", "ALICE@example.com"), ("Dora@Example.com", "dORA@EXAMPLE.COM")],
)
def test_database_refuses_a_second_user_whose_email_differs_only_in_case(first: str, second: str) -> None:
    User.objects.create(email=first)

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email=second)

    assert list(User.objects.values_list("email", flat=True)) == [first]


def test_database_accepts_addresses_that_differ_in_more_than_case() -> None:
    User.objects.create(email="Dora@Example.com")

    User.objects.create(email="Dora@Example.org")

    assert User.objects.count() == 2
