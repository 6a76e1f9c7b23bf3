"""SMS sender: AWS SNS Publish to an E.164 number (boto3 runs in a worker thread, never on the loop)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, ClassVar

import aiohttp
import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from core.config import Config
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.render import render_sms
from core.delivery.webhook import attempt_timeout, log_result

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "KMSThrottlingException", "SlowDown",
})
TRANSIENT_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
                             "RequestTimeoutException", "KMSDisabledException"})


def classify_aws(exc: botocore.exceptions.ClientError) -> DeliveryResult:
    """Throttling and 5xx retry; the rest (InvalidParameter, AuthorizationError, ...) is permanent."""
    err: dict[str, Any] = exc.response.get("Error", {}) or {}
    code = str(err.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    text = f"SNS {code or 'error'}: {err.get('Message', '')}".strip()[:300]
    if code in THROTTLING_CODES or code in TRANSIENT_CODES or status == 429 or (status or 0) >= 500:
        return DeliveryResult.retry(text, status)
    return DeliveryResult.permanent(text, status)


class SnsSmsSender:
    """Transactional SMS through SNS; the text fits `max_segments` (GSM-7 160 / UCS-2 70 per segment)."""

    channel: ClassVar[str] = "sms"
    rate_per_second: ClassVar[float | None] = 20.0
    """SNS's default SMS throughput per account and region."""

    def __init__(self, cfg: Config, *, http: aiohttp.ClientSession | None = None) -> None:
        self._c = cfg.channels.sms
        self._timeout = attempt_timeout(cfg, self.channel)
        self._client: Any = None
        self._lock = asyncio.Lock()

    def _make_client(self) -> Any:
        c = self._c
        session = boto3.session.Session(
            aws_access_key_id=c.access_key_id.get_secret_value() if c.access_key_id else None,
            aws_secret_access_key=c.secret_access_key.get_secret_value() if c.secret_access_key else None,
            region_name=c.region,
        )
        return session.client(
            "sns",
            endpoint_url=c.endpoint_url,
            # The worker owns retries and backoff; botocore must not add hidden ones with sleeps.
            config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                              connect_timeout=self._timeout, read_timeout=self._timeout),
        )

    async def _sns(self) -> Any:
        """Built once, lazily, in a thread: loading botocore's service model blocks for a while."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._make_client)
        return self._client

    def _attributes(self) -> dict[str, dict[str, str]]:
        attrs = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if self._c.sender_id:
            attrs["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self._c.sender_id}
        return attrs

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        if not E164.match(envelope.address):
            return log_result(log, envelope, DeliveryResult.permanent("not an E.164 phone number"),
                              started=started)
        text = render_sms(envelope.notification, max_segments=self._c.max_segments)
        try:
            client = await self._sns()
            answer = await asyncio.to_thread(client.publish, PhoneNumber=envelope.address, Message=text,
                                             MessageAttributes=self._attributes())
            result = DeliveryResult.ok(f"MessageId={answer.get('MessageId')}",
                                       answer.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        except botocore.exceptions.ClientError as exc:
            result = classify_aws(exc)
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            result = DeliveryResult.retry(f"SNS unreachable: {type(exc).__name__}: {exc}"[:300])
        except botocore.exceptions.NoCredentialsError:
            result = DeliveryResult.permanent("no AWS credentials for SNS (channels.sms.access_key_id)")
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
