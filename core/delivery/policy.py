"""Retry policy per channel: config overrides, else these defaults. Backoff with jitter."""
from __future__ import annotations

import random

from core.config import Config, RetryPolicy

DEFAULT_RETRY: dict[str, RetryPolicy] = {
    "email": RetryPolicy(max_retries=3, base_seconds=2.0, factor=2.0, timeout_seconds=30.0),
    "slack_webhook": RetryPolicy(max_retries=3, base_seconds=1.0, factor=2.0),
    "teams_webhook": RetryPolicy(max_retries=3, base_seconds=1.0, factor=2.0),
    "webhook": RetryPolicy(max_retries=5, base_seconds=1.0, factor=2.0),
    "sms": RetryPolicy(max_retries=3, base_seconds=2.0, factor=2.0),
    "voice": RetryPolicy(max_retries=3, base_seconds=5.0, factor=2.0, timeout_seconds=20.0),
    "telegram": RetryPolicy(max_retries=3, base_seconds=1.0, factor=2.0),
    "ntfy": RetryPolicy(max_retries=3, base_seconds=1.0, factor=2.0),
    "pagerduty": RetryPolicy(max_retries=5, base_seconds=1.0, factor=2.0),
    "webpush": RetryPolicy(max_retries=3, base_seconds=1.0, factor=2.0),
    "outbox": RetryPolicy(max_retries=3, base_seconds=0.5, factor=2.0),
}
FALLBACK = RetryPolicy(max_retries=3)


def retry_policy(cfg: Config, channel: str) -> RetryPolicy:
    """The channel's configured policy, else its default (chat surfaces `chat:<platform>` use slack's)."""
    section = getattr(cfg.channels, channel, None)
    if section is not None and section.retry is not None:
        return section.retry
    if channel.startswith("chat:") or channel.endswith("_dm"):
        return DEFAULT_RETRY["slack_webhook"]
    return DEFAULT_RETRY.get(channel, FALLBACK)


def backoff_seconds(policy: RetryPolicy, attempt: int, *, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): base * factor^(attempt-1), capped, +/- jitter."""
    delay = min(policy.max_seconds, policy.base_seconds * policy.factor ** max(0, attempt - 1))
    if policy.jitter:
        r = (rng or random).uniform(-policy.jitter, policy.jitter)
        delay = max(0.0, delay * (1 + r))
    return delay
