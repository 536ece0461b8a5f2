from __future__ import annotations

import functools
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from fernet_fields import EncryptedTextField


@functools.lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def current_fernet() -> MultiFernet:
    """MultiFernet over settings.FERNET_KEYS, newest first: encrypts with the first
    key and decrypts with any, so a new key can be added before the old one goes."""
    return _multifernet(tuple(settings.FERNET_KEYS))


class TokenField(EncryptedTextField):  # type: ignore[misc]
    """A Fernet-encrypted text column that never raises on read.

    The upstream field caches its keys for the life of the process and raises
    InvalidToken on a tampered byte or a removed key, which would turn every page that
    loads the row into a 500. Here an unreadable value reads as None; the services
    then mark the connection "needs reconnect" and never write the None back over
    the ciphertext (they update named columns only), so re-adding a key recovers it.
    """

    @property
    def fernet(self) -> MultiFernet:
        return current_fernet()

    def from_db_value(self, value: Any, expression: Any, connection: Any, *args: Any) -> str | None:
        if value is None:
            return None
        try:
            return str(current_fernet().decrypt(bytes(value)).decode())
        except (InvalidToken, UnicodeDecodeError):
            return None
