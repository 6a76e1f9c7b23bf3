"""POST /sns/sms: AWS two-way SMS replies delivered by an SNS HTTPS subscription.

Every message's SNS signature is verified (core/sns_inbound.py) before anything else: a
SubscriptionConfirmation is confirmed only for channels.sms.reply_topic_arn (GET its SubscribeURL, which
must be an SNS host too); a Notification carrying an inbound SMS goes to core/sms_replies.py."""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bot.server import Provided, Runtime
from core.clock import Clock
from core.sms_replies import SmsReplies
from core.sns_inbound import SnsRejected, SnsVerifier, inbound_sms

log = logging.getLogger("tocsin.sns")

SNS_SMS_PATH = "/sns/sms"


def _reject(status: int, error: str, reason: str) -> web.Response:
    log.warning("sms.reply.rejected", extra={"event": "sms.reply.rejected", "provider": "sns", "reason": reason})
    return web.json_response({"error": error, "reason": reason}, status=status)


def sns_sms_handler(*, verifier: SnsVerifier, http: aiohttp.ClientSession, replies: SmsReplies,
                    clock: Clock) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        try:
            msg: Any = json.loads(await request.text())
        except ValueError:
            return _reject(400, "bad_request", "body is not JSON")
        if not isinstance(msg, dict):
            return _reject(400, "bad_request", "body is not a JSON object")
        try:
            await verifier.verify(msg, now=clock.now())
        except SnsRejected as exc:
            return _reject(403, "forbidden", str(exc))
        kind = msg["Type"]
        if kind == "SubscriptionConfirmation":
            url = str(msg["SubscribeURL"])
            if not verifier.allowed(url):
                return _reject(403, "forbidden", "SubscribeURL is not an SNS host of the topic's region")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False) as resp:
                    if resp.status != 200:
                        return _reject(502, "confirm_failed", f"SNS answered HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _reject(502, "confirm_failed", f"SNS unreachable ({type(exc).__name__})")
            log.info("sms.sns.subscribed", extra={"event": "sms.sns.subscribed", "topic": msg["TopicArn"]})
            return web.json_response({"status": "confirmed"})
        if kind != "Notification":
            return web.json_response({"status": "ignored"})
        sms = inbound_sms(msg)
        if sms is None:
            return _reject(400, "bad_request", "Message is not an inbound SMS (originationNumber, messageBody)")
        handled = await replies.handle(number=sms[0], text=sms[1], provider="sns", message_id=str(msg["MessageId"]))
        return web.json_response({"status": handled.outcome})

    return handler


def mount_sns_sms(rt: Runtime) -> Provided:
    """Mounted when channels.sms.reply_topic_arn names the topic replies arrive on."""
    sms = rt.cfg.channels.sms
    if not sms.reply_topic_arn:
        return Provided()
    verifier = SnsVerifier(rt.http, topic_arn=sms.reply_topic_arn, extra_hosts=sms.sns_cert_hosts)
    rt.app.router.add_post(SNS_SMS_PATH, sns_sms_handler(
        verifier=verifier, http=rt.http, replies=SmsReplies(rt.ctx.service, rt.ctx.seen), clock=rt.ctx.clock))
    return Provided()
