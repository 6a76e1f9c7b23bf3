"""`/ack/<token>`: the page a signed ack link opens. GET confirms (never changes state); POST acknowledges.

No account is involved, so the form carries its own CSRF proof: a per-render nonce and issue time, HMAC'd
with the ack-link secret over the token. A cross-site POST cannot produce it without first reading the
page; the Origin header, when a browser sends one, must be ours too.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from bot.server import Provided, Runtime
from core import acklinks
from core.appearance.vocabulary import BUTTON_LABELS, severity_long, state_label

log = logging.getLogger("tocsin.ack_link")
FORM_TTL = 3600
"""Seconds a rendered confirmation form stays valid."""
TOKEN_ROUTE = r"/ack/{token:[A-Za-z0-9_\-]{1,900}\.[A-Za-z0-9_\-]{1,64}}"


def form_proof(key: bytes, token: str, nonce: str, issued: int) -> str:
    msg = f"ack-form|{token}|{nonce}|{issued}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def form_ok(key: bytes, token: str, form: Any, now: float) -> bool:
    nonce, proof = str(form.get("nonce", "")), str(form.get("proof", ""))
    try:
        issued = int(str(form.get("issued", "")))
    except ValueError:
        return False
    if not nonce or not 0 <= now - issued <= FORM_TTL:
        return False
    return hmac.compare_digest(form_proof(key, token, nonce, issued), proof)


def same_origin(request: web.Request, public_url: str) -> bool:
    """A browser's Origin (when sent) must be our public URL's origin."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    ours = urlsplit(public_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)


def mount_ack_links(rt: Runtime) -> Provided:
    """GET/POST /ack/<token> (mounted from bot/server.py next to the console, when server.ack_link_secret
    is set; without it pages carry the console link and this route does not exist)."""
    cfg = rt.cfg
    if cfg.server.ack_link_secret is None or not cfg.server.ack_link_secret.get_secret_value():
        return Provided()
    service = rt.ctx.service
    env = Environment(loader=PackageLoader("bot.web", "templates"), autoescape=select_autoescape())

    def key() -> bytes:
        secret = service.cfg.server.ack_link_secret
        return secret.get_secret_value().encode() if secret is not None else b""

    def page(answer: acklinks.AckAnswer, token: str, *, status: int | None = None) -> web.Response:
        form: dict[str, Any] | None = None
        if answer.status == "ok":
            nonce, issued = secrets.token_urlsafe(16), int(time.time())
            form = {"nonce": nonce, "issued": issued, "proof": form_proof(key(), token, nonce, issued)}
        inc = answer.incident
        html = env.get_template("ack.html").render(
            session=None, answer=answer, form=form, incident=inc, ack_label=BUTTON_LABELS["ack"],
            severity=severity_long(inc.severity) if inc else "", state=state_label(inc.state) if inc else "")
        resp = web.Response(text=html, content_type="text/html", status=status or answer.http)
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; style-src 'self'; frame-ancestors 'none'; "
                                                   "form-action 'self'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # The token is a credential until used: never leak it to another site, never cache the page.
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def confirm(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        answer = await acklinks.check(service, token)
        return page(answer, token)

    async def acknowledge(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        form = await request.post()
        if not same_origin(request, service.cfg.server.public_url) or not form_ok(key(), token, form, time.time()):
            log.info("ack_link.form_refused", extra={"source": request.remote or ""})
            refused = acklinks.AckAnswer("refused", "This form expired or came from another site: open the "
                                                    "link from your page again.", 403)
            return page(refused, token)
        answer = await acklinks.redeem(service, token)
        log.info("ack_link.used", extra={"outcome": answer.status, "contact": answer.contact or "",
                                         "incident": answer.incident.ref if answer.incident else "",
                                         "source": request.remote or ""})
        return page(answer, token)

    rt.app.router.add_get(TOKEN_ROUTE, confirm)
    rt.app.router.add_post(TOKEN_ROUTE, acknowledge)
    return Provided()
