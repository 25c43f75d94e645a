"""Verifiable credit for seeding: identities, signed receipts and the local ledger.

A client owns a long-lived Ed25519 identity. Peers that download from it sign
cumulative receipts ("I received N bytes of torrent T from you"); it keeps the
best one per peer and torrent in its ledger and submits them to the tracker,
which turns them into a standing. ``spec/od-credit.md`` is the normative
description; the peer-wire part is :mod:`opendistro.wire.extensions.od_credit`
and the tracker part :mod:`opendistro.tracker.credit`::

    identity = CreditIdentity.load_or_create(state_dir)
    with CreditLedger.open(state_dir, owner=identity.public_key) as ledger:
        receipt = issue_receipt(identity, torrent=info_hash, giver=peer_key, total=n)
"""

from __future__ import annotations

from .identity import CreditIdentity, is_valid_signature
from .ledger import CreditLedger, Exchange, LedgerSummary, PeerTotals
from .receipts import Receipt, issue_receipt, verify_receipt

__all__ = [
    "CreditIdentity",
    "CreditLedger",
    "Exchange",
    "LedgerSummary",
    "PeerTotals",
    "Receipt",
    "is_valid_signature",
    "issue_receipt",
    "verify_receipt",
]
