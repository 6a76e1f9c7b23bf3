"""Email sender: multipart/alternative (plain + HTML) over SMTP with aiosmtplib (none, STARTTLS or TLS)."""
from __future__ import annotations

import email.policy
import functools
import hashlib
import logging
import re
import ssl
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import ClassVar

import aiohttp
import aiosmtplib

from core.appearance.email import render_email
from core.config import ConfigHolder, EmailChannel
from core.delivery.base import Wire
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.transport import attempt_timeout, log_result

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def message_id(idempotency_key: str, domain: str) -> str:
    """Stable per delivery, so a retried send carries the same Message-ID and clients dedupe it."""
    return f"<tocsin.{hashlib.sha256(idempotency_key.encode('utf-8')).hexdigest()[:40]}@{domain}>"


def incident_thread_id(incident: str, domain: str) -> str:
    """A virtual thread root: every message of one incident references it, so mail clients group them."""
    return f"<tocsin.{re.sub(r'[^A-Za-z0-9-]', '', incident).lower()}@{domain}>"


_header = email.policy.default.header_factory
"""What EmailMessage's default policy builds for `msg[name] = value` (str() of it is what msg[name] reads)."""


@functools.lru_cache(maxsize=64)
def _parts(text: str, html: str) -> tuple[str, str]:
    """The plain and HTML parts as a message built from them reads them back (set_content normalizes line
    ends and adds the final newline): per distinct content, not per recipient of a fan-out."""
    msg = EmailMessage()
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    plain, rich = (part.get_content() for part in msg.iter_parts())
    return plain, rich


def classify_smtp(code: int, message: str) -> DeliveryResult:
    """4xx is transient (greylisting, mailbox busy): retry; 5xx is a refusal: permanent."""
    text = f"SMTP {code}: {' '.join(message.split())}"[:300]
    if 400 <= code < 500:
        return DeliveryResult.retry(text, code)
    return DeliveryResult.permanent(text, code)


class EmailSender:
    """One SMTP connection per message: pages are rare and a fresh session survives relay restarts."""

    channel: ClassVar[str] = "email"
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context` overrides the system trust store (a private relay CA; tests' self-signed peer)."""
        self._config = config
        """channels.email is read at send time, so a reload (relay, credentials, from) applies at once."""
        self._tls_context = tls_context

    @property
    def _c(self) -> EmailChannel:
        return self._config.cfg.channels.email

    @property
    def _domain(self) -> str:
        return parseaddr(self._c.from_address)[1].rpartition("@")[2] or "tocsin.localhost"

    def headers(self, envelope: Envelope, subject: str) -> list[tuple[str, str]]:
        """Every header we set, in order: the one list both the message and its outbox copy are made of."""
        n = envelope.notification
        out = [("Subject", subject), ("From", self._c.from_address), ("To", envelope.address),
               ("Date", format_datetime(datetime.now(timezone.utc))),
               ("Message-ID", message_id(envelope.idempotency_key, self._domain))]
        if n.incident and n.kind.upper() != "INITIAL":
            root = incident_thread_id(n.incident, self._domain)
            out += [("In-Reply-To", root), ("References", root)]
        # RFC 3834: tell autoresponders (out-of-office) not to answer a machine.
        out += [("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")]
        if n.severity in ("sev1", "sev2") and n.kind.upper() not in ("RESOLVED",):
            out += [("Importance", "high"), ("X-Priority", "1")]
        out.append(("X-Tocsin-Delivery", str(envelope.delivery_id)))
        if n.incident:
            out.append(("X-Tocsin-Incident", n.incident))
        return out

    def build_message(self, envelope: Envelope) -> EmailMessage:
        content = render_email(envelope.notification)
        msg = EmailMessage()
        for name, value in self.headers(envelope, content.subject):
            msg[name] = value
        msg.set_content(content.text)
        msg.add_alternative(content.html, subtype="html")
        return msg

    def wire(self, envelope: Envelope) -> Wire:
        """The message `send` hands the relay: addressing headers, subject and both parts. Equal to reading
        them back from build_message(), without building the MIME parts per recipient: the headers are
        parsed as EmailMessage parses them, and the parts' text is read back once per distinct content."""
        content = render_email(envelope.notification)
        headers = {k: str(_header(k, v)) for k, v in self.headers(envelope, content.subject)
                   if k not in ("Content-Type", "MIME-Version", "Date")}
        text, html = _parts(content.text, content.html)
        return Wire(headers["Subject"], {"headers": headers, "subject": headers["Subject"],
                                         "text": text, "html": html})

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        if not _ADDRESS.match(envelope.address):
            result = DeliveryResult.permanent("not an email address")
            return log_result(log, envelope, result, started=started)
        msg = self.build_message(envelope)
        c = self._c
        timeout = attempt_timeout(self._config.cfg, self.channel)
        try:
            await aiosmtplib.send(
                msg,
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password.get_secret_value() if c.password else None,
                use_tls=c.security == "ssl",
                start_tls=c.security == "starttls",
                timeout=timeout,
                tls_context=self._tls_context,
            )
            result = DeliveryResult.ok(f"accepted by {c.host}:{c.port}")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            if first is None:
                result = DeliveryResult.permanent("recipient refused")
            else:
                result = classify_smtp(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            result = classify_smtp(exc.code, exc.message)
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            result = DeliveryResult.retry(f"SMTP timed out after {timeout:g}s")
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
            result = DeliveryResult.retry(f"SMTP connection failed: {type(exc).__name__}: {exc}"[:300])
        except aiosmtplib.SMTPException as exc:
            # E.g. STARTTLS or AUTH not offered by the server: a configuration mismatch retries cannot fix.
            result = DeliveryResult.permanent(f"SMTP: {exc}"[:300])
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: every send opens and closes its own SMTP session."""
