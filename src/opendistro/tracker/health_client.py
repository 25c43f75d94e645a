"""Reading a tracker's health document: what ``opendistro health TRACKER_URL`` shows.

Our tracker serves ``/health.json`` beside its announce URL (see
:mod:`opendistro.tracker.metrics` for what the figures mean). This module
derives that URL from whatever the user has at hand (an announce URL, the
tracker's root, or the health URL itself), fetches it with the same caution
as an announce (size cap, deadline, redirects checked) and checks that the
answer has the document's shape. Every failure is a
:class:`~opendistro.errors.TrackerError`.
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from .. import http_get
from ..errors import TrackerError

__all__ = ["HEALTH_PATH", "fetch_tracker_health", "health_url_for"]

HEALTH_PATH: Final = "health.json"
_MAX_ANSWER: Final = 4 * 1024 * 1024  # 100 torrents x 50 peers is well under this
_INFO_HASH_SIZES: Final = (20, 32)


def health_url_for(url: str, info_hash: bytes | None = None) -> str:
    """The health URL of the HTTP(S) tracker ``url``, asking about ``info_hash`` if given.

    ``.../announce…``, ``.../scrape…`` and ``.../stats.json`` become
    ``.../health.json`` (as BEP 48 derives a scrape URL); a root URL gets
    ``/health.json``. A v2 info-hash (32 bytes) is truncated to the 20 bytes
    trackers key swarms by (BEP 52).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise TrackerError(f"{url!r} is not an HTTP tracker; it has no health endpoint")
    head, _, last = parts.path.rpartition("/")
    if last == "" or last.startswith(("announce", "scrape")) or last in (
        "stats.json",
        HEALTH_PATH,
    ):
        path = f"{head}/{HEALTH_PATH}"
    else:
        raise TrackerError(f"cannot derive a health URL from {url!r}")
    query = parts.query
    if info_hash is not None:
        if len(info_hash) not in _INFO_HASH_SIZES:
            raise TrackerError("an info-hash is 20 bytes (or 32 for a v2 torrent)")
        query = "&".join(part for part in (query, f"info_hash={info_hash[:20].hex()}") if part)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


async def fetch_tracker_health(
    url: str,
    info_hash: bytes | None = None,
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """The tracker's health document: ``{"tracker": {...}, "torrents": [{...}, ...]}``.

    With ``info_hash`` the list holds that torrent only (all zeros if the
    tracker has no swarm for it, empty if it does not track it); without, the
    tracker's largest swarms.
    """
    target = health_url_for(url, info_hash)
    status, body = await http_get.get(
        target,
        error=TrackerError,
        what="tracker",
        max_body=_MAX_ANSWER,
        timeout=timeout,
        ssl_context=ssl_context,
    )
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: RecursionError
        raise TrackerError(f"tracker {target} answered {status} without a JSON document") from None
    if not isinstance(document, dict):
        raise TrackerError(f"tracker {target} answered a JSON {type(document).__name__}")
    if status != 200:
        reason = document.get("error")
        detail = f": {reason}" if isinstance(reason, str) else ""
        raise TrackerError(f"tracker {target} answered {status}{detail}")
    tracker, torrents = document.get("tracker"), document.get("torrents")
    if not isinstance(tracker, dict) or not isinstance(torrents, list) or not all(
        isinstance(torrent, dict) for torrent in torrents
    ):
        raise TrackerError(f"tracker {target} sent no health document")
    return document
