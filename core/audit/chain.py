"""Canonical encoding, hashing and verification of the audit chain (pure functions, no I/O)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring as _esc  # C-accelerated JSON string escaping
from typing import Any

GENESIS = "0" * 64
SECRET_MARKERS = ("password", "secret", "token", "key", "authorization", "auth_token", "signing")
REDACTED = "**********"
_SECRET = re.compile("|".join(map(re.escape, SECRET_MARKERS)))
"""Matches a lowercased key containing any of SECRET_MARKERS (one C call instead of a generator per key)."""

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
"""The encoder json.dumps would build on every call with these options; built once (every append uses it)."""


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is. Same input, same bytes."""
    return _CANONICAL.encode(value)


def entry_hash(*, seq: int, ts: str, actor: str, source: str, action: str, resource: str,
               details: str, prev_hash: str) -> str:
    """SHA-256 over the canonical encoding of one entry, including the previous hash."""
    return hash_material(entry_material(seq, ts, actor, source, action, resource, details, prev_hash))


def hash_material(material: str) -> str:
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def entry_material(seq: int, ts: str, actor: str, source: str, action: str, resource: str, details: str,
                   prev_hash: str) -> str:
    """The canonical JSON array [seq, ts, actor, source, action, resource, details, prev_hash] with no
    whitespace and UTF-8 kept: byte for byte what json.dumps(..., separators=(",", ":"), ensure_ascii=False)
    gives, built three times faster because verify runs it for every entry."""
    return "[%d,%s,%s,%s,%s,%s,%s,%s]" % (seq, _esc(ts), _esc(actor), _esc(source), _esc(action),
                                          _esc(resource), _esc(details), _esc(prev_hash))


def checkpoint_signature(key: bytes, *, seq: int, head_hash: str, created_at: str) -> str:
    return hmac.new(key, f"{seq}:{head_hash}:{created_at}".encode(), hashlib.sha256).hexdigest()


def redact(value: Any) -> Any:
    """Replace values under secret-looking keys, recursively (for before/after setting diffs)."""
    if isinstance(value, dict):
        out = {}
        search = _SECRET.search
        for k, v in value.items():
            if search(str(k).lower()) and v not in (None, "", [], {}):
                out[k] = v if isinstance(v, bool) else REDACTED
            else:
                out[k] = redact(v) if isinstance(v, (dict, list)) else v
        return out
    if isinstance(value, list):
        return [redact(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head: str
    problem: str | None = None
    bad_seq: int | None = None

    def describe(self) -> str:
        if self.ok:
            return f"OK: audit chain intact, {self.count} entries, head {self.head[:16]}"
        return f"BROKEN at entry {self.bad_seq}: {self.problem}"


class ChainVerifier:
    """Walks rows in seq order and names the first entry that was edited, deleted, reordered or inserted."""

    def __init__(self) -> None:
        self.expected_seq = 1
        self.prev = GENESIS
        self.count = 0
        self.failure: VerifyResult | None = None

    def feed(self, rows: Iterable[tuple[Any, ...]]) -> bool:
        """Feed (seq, ts, actor, source, action, resource, details, prev_hash, hash) tuples; False once broken."""
        if self.failure:
            return False
        expected_seq, prev, sha, esc = self.expected_seq, self.prev, hashlib.sha256, _esc
        for seq, ts, actor, source, action, resource, details, prev_hash, h in rows:
            if seq != expected_seq:
                what = (f"entry {expected_seq} is missing (deleted), next is {seq}" if seq > expected_seq
                        else f"entry {seq} appears out of order")
                self.failure = VerifyResult(False, self.count, prev, what, expected_seq)
                break
            if prev_hash != prev:
                self.failure = VerifyResult(
                    False, self.count, prev,
                    f"entry {seq} does not link to entry {seq - 1} (reordered, inserted or previous edited)",
                    seq)
                break
            material = "[%d,%s,%s,%s,%s,%s,%s,%s]" % (seq, esc(ts), esc(actor), esc(source), esc(action),
                                                      esc(resource), esc(details), esc(prev_hash))
            if sha(material.encode("utf-8")).hexdigest() != h:
                self.failure = VerifyResult(False, self.count, prev,
                                            f"entry {seq} was edited (hash mismatch; action {action!r})", seq)
                break
            prev = h
            expected_seq += 1
            self.count += 1
        self.expected_seq, self.prev = expected_seq, prev
        return self.failure is None

    def result(self) -> VerifyResult:
        return self.failure or VerifyResult(True, self.count, self.prev)
