"""Web Push sender: one page to every browser the contact's console user subscribed, through pywebpush
(RFC 8291 aes128gcm encryption, VAPID signed with the key pair kept in the database).

Delivered when at least one browser's push service accepted it (201); a 404 or 410 removes that
subscription for good; 429/5xx retry (the shared classifier); no subscription at all is permanent."""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from typing import Any, ClassVar

import aiohttp
from core.appearance.common import headline
from core.appearance.webpush import render_webpush
from core.clock import SystemClock
from core.config import ConfigHolder
from core.db import Database
from core.delivery.base import Wire, classify_http
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.transport import attempt_timeout, log_result
from core.webpush import forget, subscriptions, vapid_keys

log = logging.getLogger(__name__)
GONE = (404, 410)


class WebPushSender:
    """Needs the database (keys and subscriptions): build_senders passes it (`needs_db`)."""

    channel: ClassVar[str] = "webpush"
    rate_per_second: ClassVar[float | None] = None
    needs_db: ClassVar[bool] = True

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession, db: Database | None = None) -> None:
        self._config = config
        self._http = http
        self._db = db

    def push_data(self, envelope: Envelope) -> str:
        """The JSON each subscribed browser decrypts (one text for all of a user's browsers)."""
        return json.dumps(render_webpush(envelope.notification), ensure_ascii=False)

    def wire(self, envelope: Envelope) -> Wire:
        """What the outbox shows: the decrypted push every browser of the user would get, with the push
        headers; the encrypted bytes differ per browser and attempt, the VAPID key stays in the database."""
        c = self._config.cfg.channels.webpush
        return Wire(headline(envelope.notification), {
            "user": envelope.address, "headers": {"TTL": str(c.ttl_seconds), "Content-Encoding": "aes128gcm"},
            "vapid_subject": c.subject, "data": json.loads(self.push_data(envelope))})

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        if self._db is None:
            return log_result(log, envelope, DeliveryResult.permanent("web push needs the database in this "
                                                                      "process"), started=started)
        cfg = self._config.cfg
        subs = await subscriptions(self._db, envelope.address)
        if not subs:
            return log_result(log, envelope, DeliveryResult.permanent(
                f"console user {envelope.address!r} has no browser subscribed to push (open the console's "
                "bell and turn on notifications)"), started=started)
        keys = await vapid_keys(self._db, now=SystemClock().now())
        data = self.push_data(envelope)
        timeout = attempt_timeout(cfg, self.channel)
        results: list[DeliveryResult] = []
        for sub in subs:
            info: dict[str, Any] = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
            status, text, retry_after = await self._push(info, data, keys.private_key, timeout)
            if status in GONE:
                await forget(self._db, sub.id)
                log.info("webpush.subscription.removed", extra={"event": "webpush.subscription.removed",
                                                                 "user": envelope.address, "status": status})
            results.append(classify_http(status, retry_after=retry_after, summary=text) if status else
                           DeliveryResult.retry(text))
        ok = sum(1 for r in results if r.outcome == "delivered")
        if ok:
            result = DeliveryResult.ok(f"accepted by {ok} of {len(subs)} browsers", 201)
        elif any(r.outcome == "retry" for r in results):
            first = next(r for r in results if r.outcome == "retry")
            result = DeliveryResult.retry(first.summary, first.status_code, first.retry_after)
        else:
            result = DeliveryResult.permanent("; ".join(r.summary for r in results)[:300], results[0].status_code)
        return log_result(log, envelope, result, started=started)

    async def _push(self, info: dict[str, Any], data: str, private_key: str,
                    timeout: float) -> tuple[int | None, str, str | None]:
        """(status, body excerpt, Retry-After) of one push; status None for a transport failure."""
        # pywebpush (with py_vapid, http_ece and requests: ~30 MB resident) loads with the first push sent,
        # in a thread so the event loop keeps running; a server that never pushes never loads it.
        if "pywebpush" not in sys.modules:
            await asyncio.to_thread(importlib.import_module, "pywebpush")
        from pywebpush import WebPushException, webpush_async

        claims = {"sub": self._config.cfg.channels.webpush.subject}
        try:
            resp = await webpush_async(info, data, vapid_private_key=private_key, vapid_claims=claims,
                                       ttl=self._config.cfg.channels.webpush.ttl_seconds, timeout=timeout,
                                       aiohttp_session=self._http)
        except WebPushException as exc:
            r = exc.response
            if r is None:
                return None, str(exc)[:200], None
            status = getattr(r, "status", None) or getattr(r, "status_code", None)
            try:
                text = await r.text() if hasattr(r, "status") else r.text
            except Exception:  # the body is only for the summary
                text = ""
            return status, str(text)[:200], r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: push service unreachable", None
        if not isinstance(resp, aiohttp.ClientResponse):
            return None, "unexpected answer", None
        return resp.status, "", resp.headers.get("Retry-After")

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""
