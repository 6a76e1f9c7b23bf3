"""Console sign-in: the form (with its CSRF nonce cookie), the password check behind a per-user and
per-address throttle, and the audited refusal; a session cookie on success."""
from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from bot.context import Context
from bot.web.session import COOKIE, LOGIN_COOKIE, SessionCodec
from bot.web.throttle import LoginThrottle, retry_after
from core.users import UserService

log = logging.getLogger("tocsin.console")


class SignIn:
    """The two sign-in routes of the console (GET and POST /login)."""

    def __init__(self, ctx: Context, *, sessions: SessionCodec, users: UserService, throttle: LoginThrottle,
                 secure: bool, render: Callable[..., web.Response]) -> None:
        self.ctx, self.svc = ctx, ctx.service
        self.sessions, self.users, self.throttle = sessions, users, throttle
        self.secure, self.render = secure, render

    def login_page(self, request: web.Request, *, nxt: str, error: str | None, status: int = 200,
                   headers: dict[str, str] | None = None) -> web.Response:
        """The sign-in form with a fresh CSRF nonce cookie and the token that matches it."""
        nonce = self.sessions.login_nonce()
        resp = self.render("login.html", request, status=status, next=nxt, error=error,
                           login_csrf=self.sessions.login_csrf(nonce))
        resp.headers.update(headers or {})
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", secure=self.secure, path="/login",
                        max_age=int(self.sessions.ttl))
        return resp

    async def login_form(self, request: web.Request) -> web.Response:
        return self.login_page(request, nxt=request.query.get("next", "/"), error=None)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        name, password = str(form.get("name", ""))[:200], str(form.get("password", ""))
        nxt = str(form.get("next", "/"))
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        source = request.remote or "web"
        if not self.sessions.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))):
            log.info("console.login.csrf", extra={"source": source})
            return self.login_page(request, nxt=nxt, status=403,
                                   error="The sign-in form expired or came from another site: sign in again.")
        keys = self.throttle.keys(user=name, address=source)
        now = self.svc.clock.now().timestamp()
        wait = self.throttle.wait(keys, now=now)
        if wait > 0:
            await self.throttled(name=name, source=source, wait=wait)
            return self.login_page(request, nxt=nxt, status=429, headers={"Retry-After": str(retry_after(wait))},
                                   error=f"Too many failed sign-ins: try again in {retry_after(wait)} seconds.")
        user = await self.users.authenticate(name=name, password=password, source=source)
        if user is None:
            wait = self.throttle.failure(keys, now=now)
            if wait > 0:
                await self.throttled(name=name, source=source, wait=wait)
                return self.login_page(request, nxt=nxt, status=429,
                                       headers={"Retry-After": str(retry_after(wait))},
                                       error=f"Wrong name or password. Too many failed sign-ins: try again in "
                                             f"{retry_after(wait)} seconds.")
            return self.login_page(request, nxt=nxt, status=401, error="Wrong name or password.")
        self.throttle.success(keys[0])
        value, _ = self.sessions.issue(user.name, user.role)
        resp = web.HTTPFound(nxt)
        resp.set_cookie(COOKIE, value, httponly=True, samesite="Strict", secure=self.secure, path="/",
                        max_age=int(self.sessions.ttl))
        resp.del_cookie(LOGIN_COOKIE, path="/login")
        raise resp

    async def throttled(self, *, name: str, source: str, wait: float) -> None:
        """Audit a refused or newly blocked sign-in (who, from where, for how long)."""
        log.warning("console.login.throttled", extra={"user": name[:100], "source": source,
                                                      "retry_after": retry_after(wait)})
        async with self.ctx.db.transaction() as s:
            await self.ctx.audit.append(s, actor=f"web:{name[:100]}", source=source, action="login.throttled",
                                        resource="console", details={"retry_after": retry_after(wait)},
                                        now=self.svc.clock.now())
