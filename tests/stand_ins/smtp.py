"""A loopback SMTP server (aiosmtpd) that records mail and can refuse, greylist, stall or require TLS/AUTH.

    async with smtp_stand_in() as smtp:                       # plain SMTP on a free port
        smtp.reply_data("451 4.7.1 Greylisted, try again")    # scripted answers, consumed in order
        ... send to smtp.host:smtp.port ...
        mail = smtp.messages[0]; mail.message["Subject"]; mail.message.get_body(("html",))

    async with smtp_stand_in(tls="starttls", auth=("user", "pw")) as smtp:
        ... the client must trust smtp.client_tls_context (a self-signed cert for 127.0.0.1) ...

aiosmtpd 1.4.6 cannot bind port 0, so a free port is picked first.
"""
from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.stand_ins.http import free_port


@dataclass
class ReceivedMail:
    """One accepted message: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    tls: bool
    authenticated: bool
    at: float = field(default_factory=time.monotonic)


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for `host` (IP SAN) and localhost; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler:
    def __init__(self, owner: SmtpStandIn) -> None:
        self.owner = owner

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.owner.rcpt_replies:
            reply = self.owner.rcpt_replies.popleft()
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)
        if self.owner.data_replies:
            reply = self.owner.data_replies.popleft()
            if not reply.startswith("250"):
                return reply
        data = envelope.original_content or envelope.content
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.owner.messages.append(ReceivedMail(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=data, message=msg,  # type: ignore[arg-type]
            tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(session.authenticated),
        ))
        return "250 Message accepted for delivery"


class SmtpStandIn:
    """State of a running stand-in; build it with `smtp_stand_in()`."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.messages: list[ReceivedMail] = []
        self.rcpt_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()
        self.data_delay: float = 0.0
        self.client_tls_context: ssl.SSLContext | None = None
        """A client context that trusts this stand-in's certificate (None without TLS)."""

    def reply_rcpt(self, *replies: str) -> None:
        """Answer the next RCPT TO commands with these lines (e.g. "550 5.1.1 No such user")."""
        self.rcpt_replies.extend(replies)

    def reply_data(self, *replies: str) -> None:
        """Answer the next DATA commands with these lines (e.g. "451 4.3.0 Try again later")."""
        self.data_replies.extend(replies)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} mails, got {len(self.messages)}")
            await asyncio.sleep(0.01)
        return self.messages


@asynccontextmanager
async def smtp_stand_in(*, tls: Literal["none", "starttls", "ssl"] = "none",
                        auth: tuple[str, str] | None = None) -> AsyncIterator[SmtpStandIn]:
    """Run an aiosmtpd server on 127.0.0.1 for the duration of the block."""
    state = SmtpStandIn()
    kwargs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tocsin-smtp-") as tmp:
        server_ctx: ssl.SSLContext | None = None
        if tls != "none":
            cert, key = self_signed_cert(Path(tmp))
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain(cert, key)
            state.client_tls_context = ssl.create_default_context(cafile=str(cert))
        if tls == "starttls":
            kwargs.update(tls_context=server_ctx, require_starttls=True)
        if auth is not None:
            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                              auth_data: Any) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(),
                                                               auth_data.password.decode()) == auth
                return AuthResult(success=ok, handled=False)
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=tls != "none")
        state.port = free_port()
        controller = Controller(_Handler(state), hostname=state.host, port=state.port,
                                ssl_context=server_ctx if tls == "ssl" else None, **kwargs)
        await asyncio.to_thread(controller.start)
        try:
            yield state
        finally:
            await asyncio.to_thread(controller.stop)
