"""SMS sender: AWS SNS Publish to an E.164 number (boto3 runs in a worker thread, never on the loop)."""
from __future__ import annotations

import asyncio
import importlib
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from pydantic import SecretStr

from core.appearance.common import headline
from core.appearance.sms import render_sms, sms_info
from core.config import ConfigHolder, SmsChannel
from core.delivery.base import Wire
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.transport import attempt_timeout, log_result

if TYPE_CHECKING:
    import botocore.exceptions

# boto3/botocore (~25 MB resident) are imported by the first SMS sent through SNS, not with this module:
# a server without SNS configured never loads them.

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "KMSThrottlingException", "SlowDown",
})
TRANSIENT_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
                             "RequestTimeoutException", "KMSDisabledException"})


def _plain(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


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

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession | None = None) -> None:
        self._config = config
        """channels.sms is read at send time; the boto3 client is rebuilt when what it was built from changes."""
        self._client: Any = None
        self._client_for: tuple[Any, ...] | None = None
        self._lock = asyncio.Lock()

    @property
    def _c(self) -> SmsChannel:
        return self._config.cfg.channels.sms

    def _client_key(self) -> tuple[Any, ...]:
        c = self._c
        return (c.region, c.endpoint_url, _plain(c.access_key_id), _plain(c.secret_access_key),
                attempt_timeout(self._config.cfg, self.channel))

    def _make_client(self, key: tuple[Any, ...]) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        region, endpoint_url, access_key_id, secret_access_key, timeout = key
        session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                        region_name=region)
        return session.client(
            "sns",
            endpoint_url=endpoint_url,
            # The worker owns retries and backoff; botocore must not add hidden ones with sleeps.
            config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                              connect_timeout=timeout, read_timeout=timeout),
        )

    async def _sns(self) -> Any:
        """Built lazily, in a thread (loading botocore's service model blocks for a while), and again after
        a reload changed the region, endpoint, credentials or timeout."""
        key = self._client_key()
        if self._client is None or self._client_for != key:
            async with self._lock:
                if self._client is None or self._client_for != key:
                    old, self._client = self._client, await asyncio.to_thread(self._make_client, key)
                    self._client_for = key
                    if old is not None:
                        await asyncio.to_thread(old.close)
        return self._client

    def _attributes(self) -> dict[str, dict[str, str]]:
        attrs = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if self._c.sender_id:
            attrs["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self._c.sender_id}
        return attrs

    def publish_args(self, envelope: Envelope) -> dict[str, Any]:
        """The SNS Publish call `send` makes."""
        return {"PhoneNumber": envelope.address,
                "Message": render_sms(envelope.notification, max_segments=self._c.max_segments),
                "MessageAttributes": self._attributes()}

    def wire(self, envelope: Envelope) -> Wire:
        args = self.publish_args(envelope)
        info = sms_info(args["Message"])
        return Wire(headline(envelope.notification), {
            **args, "encoding": info.encoding, "segments": info.segments, "units": info.units,
            "max_segments": self._c.max_segments})

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        if not E164.match(envelope.address):
            return log_result(log, envelope, DeliveryResult.permanent("not an E.164 phone number"),
                              started=started)
        if "boto3" not in sys.modules:  # first SNS send: import in a thread, the event loop keeps running
            await asyncio.to_thread(importlib.import_module, "boto3")
        import botocore.exceptions

        try:
            client = await self._sns()
            answer = await asyncio.to_thread(client.publish, **self.publish_args(envelope))
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
