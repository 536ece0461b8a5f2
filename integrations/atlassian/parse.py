"""Provider JSON checked at the edge: strings without NUL, safe image URLs, objects and
lists of the expected type, whatever Atlassian sends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from jiraconnect.hosts import is_loopback


def _clean(value: str) -> str:
    # PostgreSQL text and jsonb refuse NUL: one in a provider string would fail the write.
    return value.replace("\x00", "")


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return _clean(value) if isinstance(value, str) else ""


def _image_url(item: Mapping[str, Any], key: str) -> str:
    """A URL we will render as an image source, or "".

    https is kept. So is plain http on ATLASSIAN_API_URL's own origin when that origin is
    loopback: the local sandbox serves its avatars there. Any other scheme (http elsewhere,
    javascript:, data:) is dropped.
    """
    value = _str(item, key)
    if value.startswith("https://"):
        return value
    api = urlsplit(settings.ATLASSIAN_API_URL)
    # A prefix match up to the "/" that ends the authority: parsing `value` instead could
    # disagree with the browser's parser (userinfo, backslashes) about which host it names.
    if api.scheme == "http" and is_loopback(api.hostname) and value.startswith(f"http://{api.netloc}/"):
        return value
    return ""


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_list(value: Any) -> list[str]:
    return [_clean(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []
