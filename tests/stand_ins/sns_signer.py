"""An SNS look-alike for HTTP(S) subscriptions: a self-signed RSA certificate (cryptography package) served
on a loopback stand-in, and messages signed exactly as SNS signs them (SignatureVersion 1 or 2)."""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from core.sns_inbound import string_to_sign
from tests.stand_ins.http import HttpStandIn, Reply

CERT_PATH = "/SimpleNotificationService-test.pem"
CONFIRM_PATH = "/confirm"


def self_signed() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


class SnsSigner:
    """Signs SNS messages with its own key; `peer` serves the certificate and the SubscribeURL."""

    def __init__(self, peer: HttpStandIn, *, topic_arn: str) -> None:
        self.peer = peer
        self.topic_arn = topic_arn
        self.key, self.cert_pem = self_signed()
        peer.on(CERT_PATH, lambda _rec: Reply(200, self.cert_pem.decode(), {"Content-Type": "text/plain"}))
        peer.on(CONFIRM_PATH, lambda _rec: Reply(200, "<ConfirmSubscriptionResponse/>"))

    @property
    def host(self) -> str:
        return self.peer.url.split("//", 1)[1].rstrip("/")

    def sign(self, msg: dict[str, Any], *, version: str = "2", key: rsa.RSAPrivateKey | None = None,
             cert_url: str | None = None) -> dict[str, Any]:
        out = {**msg, "SignatureVersion": version,
               "SigningCertURL": cert_url or f"{self.peer.url.rstrip('/')}{CERT_PATH}"}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        sig = (key or self.key).sign(string_to_sign(out), padding.PKCS1v15(), algorithm)
        out["Signature"] = base64.b64encode(sig).decode()
        return out

    def confirmation(self, *, now: datetime, topic_arn: str | None = None, **kw: Any) -> dict[str, Any]:
        arn = topic_arn or self.topic_arn
        return self.sign({
            "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": "tok-" + uuid.uuid4().hex,
            "TopicArn": arn, "Message": f"You have chosen to subscribe to the topic {arn}.",
            "SubscribeURL": f"{self.peer.url.rstrip('/')}{CONFIRM_PATH}?Action=ConfirmSubscription&TopicArn={arn}",
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}, **kw)

    def inbound_sms(self, *, number: str, body: str, now: datetime, message_id: str | None = None,
                    topic_arn: str | None = None, **kw: Any) -> dict[str, Any]:
        """A Notification carrying an inbound SMS, as AWS End User Messaging publishes it."""
        sms = {"originationNumber": number, "destinationNumber": "+15550009996", "messageKeyword": "KEYWORD_1",
               "messageBody": body, "inboundMessageId": str(uuid.uuid4()), "previousPublishedMessageId": None}
        return self.sign({
            "Type": "Notification", "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn or self.topic_arn, "Message": json.dumps(sms),
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "UnsubscribeURL": f"{self.peer.url}/unsubscribe"}, **kw)
