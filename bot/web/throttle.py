"""Sign-in throttle: failed attempts per user name and per client address back off exponentially.

Guessing passwords through the console costs an argon2 hash per try and fills the audit chain; a few free
failures cover typos, after that each key waits base * 2**(failures - free) seconds (capped). State is per
process (a restart forgets it; several processes each keep their own), which bounds guessing without a
shared store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Counts failures per key ("user:NAME", "addr:IP"); `wait()` says how long a key must still wait."""

    free_per_user: int = 3
    free_per_address: int = 10
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    forget_after: float = 3600.0
    """A key with no failure for this long starts over."""
    max_keys: int = 100_000
    """Bound on remembered keys, so a flood of made-up names cannot grow memory without limit."""
    _records: dict[str, _Record] = field(default_factory=dict)

    @staticmethod
    def keys(*, user: str, address: str) -> tuple[str, str]:
        return f"user:{user.strip().lower()[:100]}", f"addr:{address}"

    def wait(self, keys: tuple[str, ...], *, now: float) -> float:
        """Seconds until every key may try again (0 when none is blocked)."""
        out = 0.0
        for key in keys:
            rec = self._records.get(key)
            if rec is not None:
                out = max(out, rec.blocked_until - now)
        return max(0.0, out)

    def failure(self, keys: tuple[str, ...], *, now: float) -> float:
        """Record one failed attempt for each key; the wait it now imposes (0 while attempts are free)."""
        self._prune(now)
        for key in keys:
            rec = self._records.get(key)
            if rec is None or now - rec.last > self.forget_after:
                rec = self._records[key] = _Record()
            rec.failures += 1
            rec.last = now
            free = self.free_per_user if key.startswith("user:") else self.free_per_address
            over = rec.failures - free
            if over > 0:
                rec.blocked_until = now + min(self.max_seconds, self.base_seconds * 2 ** min(over - 1, 30))
        return self.wait(keys, now=now)

    def success(self, user_key: str) -> None:
        """A right password clears that user's count (not the address's: one known account must not
        reset an address that is guessing at others)."""
        self._records.pop(user_key, None)

    def _prune(self, now: float) -> None:
        if len(self._records) < self.max_keys:
            return
        stale = [k for k, r in self._records.items() if now - r.last > self.forget_after and r.blocked_until <= now]
        for k in stale:
            del self._records[k]
        if len(self._records) >= self.max_keys:  # still full: drop the oldest half
            for k, _ in sorted(self._records.items(), key=lambda kv: kv[1].last)[: self.max_keys // 2]:
                del self._records[k]


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (never 0 for a real wait)."""
    return max(1, math.ceil(seconds))
