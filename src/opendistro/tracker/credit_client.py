"""Talking to a tracker's credit endpoint: submit receipts, read standings.

``POST /credit`` carries a bencoded list of receipts (``spec/od-credit.md``);
``GET /credit?identity=HEX`` answers a standing. The endpoint lives beside the
announce URL, so :func:`credit_url_for` derives it the way BEP 48 derives a
scrape URL. As with announces, every failure comes out as
:class:`~opendistro.errors.TrackerError`, and answers are size-capped and
time-limited because the tracker is a stranger.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from .. import http_get
from ..credit.receipts import Receipt
from ..errors import TrackerError
from .credit import Standing, SubmitResult, encode_submission

__all__ = ["credit_url_for", "fetch_standing", "submit_receipts"]

_MAX_ANSWER = 64 * 1024


def credit_url_for(announce_url: str) -> str:
    """The credit endpoint of an HTTP(S) tracker: ``.../announce`` becomes ``.../credit``."""
    parts = urlsplit(announce_url)
    if parts.scheme.lower() not in ("http", "https"):
        raise TrackerError(f"{announce_url!r} is not an HTTP tracker; it has no credit endpoint")
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        raise TrackerError(f"cannot derive a credit URL from {announce_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/credit", "", ""))


async def submit_receipts(
    url: str,
    receipts: Sequence[Receipt],
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> SubmitResult:
    """POST ``receipts`` (at most 256) to the credit endpoint ``url``; the tracker's tally.

    Receipts counted ``accepted`` or ``stale`` are known to the tracker now,
    so the caller can mark them submitted in its ledger.
    """
    status, answer = await http_get.post(
        url,
        encode_submission(receipts),
        content_type="application/x-bittorrent",
        error=TrackerError,
        what="tracker",
        max_body=_MAX_ANSWER,
        timeout=timeout,
        ssl_context=ssl_context,
    )
    result = SubmitResult.decode(answer)  # a failure reason raises, whatever the status
    if status != 200:
        raise TrackerError(f"tracker {url} answered {status}")
    return result


async def fetch_standing(
    url: str,
    identity: bytes,
    *,
    timeout: float = 15,
    ssl_context: ssl.SSLContext | None = None,
) -> Standing:
    """The tracker's standing of ``identity`` (a 32-byte public key)."""
    status, body = await http_get.get(
        f"{url}?identity={bytes(identity).hex()}",
        error=TrackerError,
        what="tracker",
        max_body=_MAX_ANSWER,
        timeout=timeout,
        ssl_context=ssl_context,
    )
    standing = Standing.decode(body)
    if status != 200:
        raise TrackerError(f"tracker {url} answered {status}")
    if standing.identity != identity:
        raise TrackerError(f"tracker {url} answered the standing of another identity")
    return standing
