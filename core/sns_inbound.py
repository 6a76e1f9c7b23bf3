"""Verifying Amazon SNS HTTP(S) messages (two-way SMS replies arrive on an SNS topic).

Follows AWS's "Verifying the signatures of Amazon SNS messages": the signing certificate must come over
HTTPS from an SNS host of the topic's region (`sns.<region>.amazonaws.com`, `.com.cn` in China), the
signed string is `Name\\nValue\\n` for a fixed list of fields per message type, SignatureVersion 1 is
SHA1withRSA and 2 is SHA256withRSA. Hosts in `channels.sms.sns_cert_hosts` are also allowed (tests serve
a self-signed certificate on loopback); nothing else is ever fetched."""
from __future__ import annotations

import base64
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger("tocsin.sns")

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
MAX_AGE = timedelta(hours=24)
"""Older signed messages are refused (SNS retries for about an hour); replays inside it are caught by
the dedup key, kept longer than this (core/seen.py KEEP["sms:"])."""
CERT_MAX_BYTES = 16 * 1024


class SnsRejected(Exception):
    """Why a message is refused (HTTP 403 with this reason); never acted on."""


def string_to_sign(msg: dict[str, Any]) -> bytes:
    kind = msg.get("Type")
    if kind == "Notification":
        names = NOTIFICATION_FIELDS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        names = CONFIRMATION_FIELDS
    else:
        raise SnsRejected(f"unknown message Type {kind!r}")
    out = ""
    for name in names:
        if name == "Subject" and "Subject" not in msg:
            continue
        value = msg.get(name)
        if not isinstance(value, str):
            raise SnsRejected(f"missing field {name}")
        out += f"{name}\n{value}\n"
    return out.encode("utf-8")


def region_of(topic_arn: str) -> str:
    return topic_arn.split(":")[3]


def sns_host_allowed(url: str, *, region: str, extra_hosts: list[str]) -> bool:
    """An HTTPS URL on sns.<region>.amazonaws.com(.cn), or a host:port the config names for testing."""
    parts = urlsplit(url)
    if parts.netloc in extra_hosts or parts.hostname in extra_hosts:
        return parts.scheme in ("https", "http")
    official = re.fullmatch(rf"sns\.{re.escape(region)}\.amazonaws\.com(\.cn)?", parts.hostname or "")
    return parts.scheme == "https" and official is not None and parts.port in (None, 443)


class SnsVerifier:
    """Checks topic, freshness, certificate host and signature; certificates are cached by URL."""

    def __init__(self, http: aiohttp.ClientSession, *, topic_arn: str, extra_hosts: list[str]) -> None:
        self._http = http
        self.topic_arn = topic_arn
        self.region = region_of(topic_arn)
        self.extra_hosts = list(extra_hosts)
        self._certs: dict[str, rsa.RSAPublicKey] = {}

    def allowed(self, url: str) -> bool:
        return sns_host_allowed(url, region=self.region, extra_hosts=self.extra_hosts)

    async def verify(self, msg: dict[str, Any], *, now: datetime) -> None:
        """Raise SnsRejected unless this is a fresh message of our topic signed by SNS."""
        if msg.get("TopicArn") != self.topic_arn:
            raise SnsRejected("not the configured topic (channels.sms.reply_topic_arn)")
        version = str(msg.get("SignatureVersion", ""))
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA by definition
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsRejected(f"unsupported SignatureVersion {version!r}")
        cert_url = str(msg.get("SigningCertURL") or msg.get("SigningCertUrl") or "")
        if not self.allowed(cert_url):
            raise SnsRejected(f"signing certificate not from an SNS host of {self.region}")
        try:
            when = datetime.fromisoformat(str(msg.get("Timestamp", "")).replace("Z", "+00:00"))
        except ValueError:
            raise SnsRejected("bad Timestamp") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if abs(now - when) > MAX_AGE:
            raise SnsRejected("message older than 24 hours (a replay?)")
        try:
            signature = base64.b64decode(str(msg.get("Signature", "")), validate=True)
        except ValueError:
            raise SnsRejected("Signature is not base64") from None
        key = await self._key(cert_url)
        try:
            key.verify(signature, string_to_sign(msg), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsRejected("bad signature") from None

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=10),
                                      allow_redirects=False) as resp:
                body = await resp.content.read(CERT_MAX_BYTES + 1)
                if resp.status != 200 or len(body) > CERT_MAX_BYTES:
                    raise SnsRejected(f"signing certificate unavailable (HTTP {resp.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsRejected(f"signing certificate unavailable ({type(exc).__name__})") from None
        try:
            key = x509.load_pem_x509_certificate(body).public_key()
        except ValueError:
            raise SnsRejected("signing certificate is not a PEM certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected("signing certificate has no RSA key")
        self._certs[url] = key
        return key


def inbound_sms(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(originationNumber, messageBody) from an inbound-SMS notification, or None if it is not one."""
    try:
        body = json.loads(str(msg.get("Message", "")))
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    number, text = body.get("originationNumber"), body.get("messageBody")
    if not isinstance(number, str) or not isinstance(text, str):
        return None
    return number, text
