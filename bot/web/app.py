"""Console routes: sign-in, board (live over server-sent events), incident page, audit, charts.

Read-only except acknowledge/resolve, which call the same IncidentService as every other entry point, and
follow/unfollow (bot/web/bell.py), which call the same Subscriptions as `/incident subscribe`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from bot.context import Context
from bot.server import Provided, Runtime
from bot.web.bell import mount_bell
from bot.web.metrics import mount_metrics
from bot.web.charts import SEV_COLORS, oncall_timeline
from bot.web.session import COOKIE, Session, SessionCodec
from bot.web.signin import SignIn
from bot.web.throttle import LoginThrottle
from core.appearance.export import filename as export_filename
from core.appearance.export import render as render_export
from core.timeline import build as build_timeline
from core.timeline import incident_timeline
from core.appearance.oncall import now_and_next, override_line, when
from core.appearance.vocabulary import BUTTON_LABELS, ROLE_LABELS, fmt_duration, holder_name, role_label, state_label
from core.audit_reads import AuditReads
from core.clock import utc
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from core.events import IncidentEvent
from core.incidents import parse_ref
from core.maintenance import Maintenance
from core.rbac import Actor, Permission, Role, allows
from core.subscriptions import Subscriptions
from core.users import UserService

log = logging.getLogger("tocsin.console")
STATIC = Path(__file__).parent / "static"
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BOARD_LIMIT, BOARD_MAX = 200, 2000
"""Incidents on the board by default, and at most (`/?limit=`)."""

NOTICES = {"acked": "Acknowledged.", "resolved": "Resolved.",
           "followed": "Following: its news reaches you on your news channels and in the bell.",
           "unfollowed": "No longer following this incident."}
"""The only notices a link may show (`?msg=<key>`): a link someone else wrote cannot put words on the page."""


class Console:
    """The console: its state (templates, session codec, sign-in throttle, live-board subscribers) and one
    method per route; `routes` adds them to the app."""

    name = "console"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.svc = ctx.service
        cfg = ctx.cfg.console
        key = cfg.session_secret.get_secret_value().encode() if cfg.session_secret else b""
        if not key:
            key = secrets.token_bytes(32)
            log.warning("console.session_secret.unset",
                        extra={"why": "sessions end on restart and are not shared between processes; "
                                      "set console.session_secret"})
        self.sessions = SessionCodec(key, hours=cfg.session_hours)
        self.users = UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder)
        self.audit_reads = AuditReads(ctx.db, ctx.holder)
        self.subscriptions = Subscriptions(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock)
        self.env = Environment(loader=PackageLoader("bot.web", "templates"), autoescape=select_autoescape(),
                               enable_async=False)
        self.env.globals.update(sev_colors=SEV_COLORS, fmt_duration=fmt_duration, state_label=state_label,
                                role_label=role_label, buttons=BUTTON_LABELS)
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.secure = ctx.cfg.server.public_url.startswith("https://")
        self.throttle = LoginThrottle()
        self.signin = SignIn(ctx, sessions=self.sessions, users=self.users, throttle=self.throttle,
                             secure=self.secure, render=self.render)

    async def start(self) -> None:
        self.ctx.service.events.subscribe(self._on_event)

    async def close(self) -> None:
        self.ctx.service.events.unsubscribe(self._on_event)
        for q in list(self.subscribers):
            q.put_nowait("")  # wake streams so they end

    def _on_event(self, ev: IncidentEvent) -> None:
        data = json.dumps({"kind": ev.kind, "incident": ev.incident_id, "state": ev.state})
        for q in list(self.subscribers):
            if q.qsize() < 100:
                q.put_nowait(data)

    def routes(self, router: web.UrlDispatcher) -> None:
        """Every console route; all but sign-in need a session."""
        auth = self.login_required
        router.add_get("/login", self.signin.login_form)
        router.add_post("/login", self.signin.login)
        router.add_post("/logout", auth(self.logout))
        router.add_get("/", auth(self.board))
        router.add_get("/board/rows", auth(self.board_fragment))
        router.add_get(r"/incidents/{id:\d+}", auth(self.incident))
        router.add_post(r"/incidents/{id:\d+}/{action:ack|resolve}", auth(self.act))
        router.add_get(r"/incidents/{id:\d+}/export.{fmt:md|json}", auth(self.export))
        router.add_get("/audit", auth(self.audit_page))
        router.add_post("/audit/verify", auth(self.audit_verify))
        router.add_get("/schedules", auth(self.schedules_page))
        router.add_get("/schedules/{name}", auth(self.schedules_page))
        router.add_get("/events", auth(self.events))
        mount_bell(self, router, auth)
        mount_metrics(self, router, auth)
        router.add_static("/static/", STATIC, show_index=False)

    # --- helpers -----------------------------------------------------------------------------

    def render(self, name: str, request: web.Request, status: int = 200, **kw: Any) -> web.Response:
        sess: Session | None = request.get(SESSION)
        html = self.env.get_template(name).render(session=sess, csrf=sess.csrf if sess else "", **kw)
        resp = web.Response(text=html, content_type="text/html", status=status)
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                                   "frame-ancestors 'none'; form-action 'self'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        return resp

    def actor(self, request: web.Request) -> Actor:
        sess = request[SESSION]
        return Actor(f"web:{sess.user}", source=request.remote or "web", display=sess.user, role=Role(sess.role))

    async def check_csrf(self, request: web.Request) -> dict[str, Any]:
        form = dict(await request.post())
        sess = request[SESSION]
        if not secrets.compare_digest(str(form.get("csrf", "")), sess.csrf):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")
        return form

    def login_required(self, handler: Handler) -> Handler:
        """`handler` behind a session: no session goes to sign-in; a refusal or unknown id is an error page."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            sess = self.sessions.read(request.cookies.get(COOKIE))
            if sess is None:
                raise web.HTTPFound(f"/login?next={request.path_qs}")
            request[SESSION] = sess
            try:
                return await handler(request)
            except Forbidden as exc:
                return self.render("error.html", request, status=403, message=str(exc))
            except NotFound as exc:
                return self.render("error.html", request, status=404, message=str(exc))
        return wrapped

    # --- sign-in -------------------------------------------------------------------------------

    async def logout(self, request: web.Request) -> web.Response:
        await self.check_csrf(request)
        resp = web.HTTPFound("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    # --- board and schedules -------------------------------------------------------------------

    async def board_rows(self, request: web.Request) -> dict[str, Any]:
        """The newest `?limit=` incidents (default 200), open first, and how many older ones are not shown.
        Age is time since declared for every incident; time to resolve has its own column."""
        raw = request.query.get("limit", "")
        limit = min(int(raw), BOARD_MAX) if raw.isdigit() and int(raw) > 0 else BOARD_LIMIT
        page = await self.svc.page(state="all", actor=self.actor(request), limit=limit)
        now = self.svc.clock.now()
        order = {"open": 0, "monitoring": 1, "resolved": 2}
        incidents = sorted(page.incidents, key=lambda i: (order.get(i.state, 3), i.severity, -i.id))
        rows = [{"i": i, "age": fmt_duration(utc(now) - utc(i.created_at)),  # type: ignore[operator]
                 "resolved_in": fmt_duration(i.time_to_resolve) if i.time_to_resolve is not None else "—"}
                for i in incidents]
        return {"rows": rows,
                "more": page.more, "limit": limit, "wider": min(limit * 2, BOARD_MAX)}

    async def oncall_now(self, request: web.Request) -> list[dict[str, Any]]:
        """Who is on call now per schedule, for the board (nothing when no schedule is configured)."""
        out = []
        for sc in self.svc.cfg.schedules:
            _, segs, _ = await self.svc.schedules.timeline(sc.name, actor=self.actor(request), days=14)
            cur = segs[0] if segs else None
            out.append({"name": sc.name, "who": cur.contact if cur else None, "source": cur.source if cur else "",
                        "until": when(cur.end if cur else None, sc.timezone)})
        return out

    async def board(self, request: web.Request) -> web.Response:
        windows = await Maintenance(self.svc).list(actor=self.actor(request))
        return self.render("board.html", request, **await self.board_rows(request),
                           oncall=await self.oncall_now(request),
                           maintenance=[v.line(self.svc.clock.now()) for v in windows])

    async def board_fragment(self, request: web.Request) -> web.Response:
        return self.render("board_rows.html", request, **await self.board_rows(request))

    async def schedules_page(self, request: web.Request) -> web.Response:
        """Each schedule as a two-week timeline (overrides marked), with its overrides listed."""
        names = ([request.match_info["name"]] if "name" in request.match_info
                 else [s.name for s in self.svc.cfg.schedules])
        items = []
        for name in names:
            sc, segs, rows = await self.svc.schedules.timeline(name, actor=self.actor(request), days=14)
            start = self.svc.clock.now()
            svg = oncall_timeline(segs, utc(start), utc(start) + timedelta(days=14), sc.timezone)  # type: ignore[arg-type]
            items.append({"sc": sc, "svg": Markup(svg), "now": now_and_next(name, sc.timezone, segs),
                          "overrides": [override_line(o.id, o.schedule, o.contact, o.starts_at, o.ends_at,
                                                      sc.timezone, o.created_by) for o in rows]})
        return self.render("schedules.html", request, items=items)

    # --- one incident --------------------------------------------------------------------------

    async def incident(self, request: web.Request, *, notice: str | None = None,
                       status: int = 200) -> web.Response:
        d = await self.svc.detail(incident_id(request), actor=self.actor(request))
        # The same timeline the postmortem export prints (core/timeline.py): state changes, thread, pages.
        timeline = [(e.at, e.kind, e.actor, e.text) for e in build_timeline(self.svc.cfg, d, self.svc.clock.now())
                    .entries]
        channels = sorted({x.channel for x in d.deliveries if x.purpose != "surface"})
        matrix: dict[str, dict[str, dict[str, Any]]] = {}
        for x in d.deliveries:
            if x.purpose == "surface":
                continue
            cell = matrix.setdefault(x.recipient, {}).setdefault(x.channel, {"statuses": {}, "attempts": 0,
                                                                             "last_error": None, "status": None})
            cell["statuses"][x.status] = cell["statuses"].get(x.status, 0) + 1
            cell["attempts"] += x.attempts
            cell["status"] = x.status
            if x.last_error:
                cell["last_error"] = x.last_error
            if x.reason:
                cell["reason"] = x.reason
        inc = d.incident
        tta, ttr = inc.time_to_ack, inc.time_to_resolve
        can_act = allows(request[SESSION].role, Permission.SEND_INCIDENTS)
        message = notice or NOTICES.get(request.query.get("msg", ""))
        following = await self.subscriptions.follows(actor=self.actor(request), incident_id=inc.id)
        return self.render("incident.html", request, status=status, inc=inc, timeline=timeline, channels=channels,
                           matrix=matrix, tta=tta, ttr=ttr, can_act=can_act, message=message, following=following,
                           roles=[(r, holder_name(getattr(inc, r), inc.role_names, r)) for r in ROLE_LABELS])

    async def export(self, request: web.Request) -> web.Response:
        """The timeline and an empty postmortem as a download (`.md` or `.json`), like `tocsin incident export`."""
        fmt = request.match_info["fmt"]
        tl = await incident_timeline(self.svc, incident_id(request), actor=self.actor(request))
        return web.Response(text=render_export(tl, fmt), charset="utf-8",
                            content_type="text/markdown" if fmt == "md" else "application/json",
                            headers={"Content-Disposition": f'attachment; filename="{export_filename(tl, fmt)}"'})

    async def act(self, request: web.Request) -> web.Response:
        """Acknowledge or resolve; success redirects to a fixed notice, a refusal is said on the page."""
        await self.check_csrf(request)
        iid = incident_id(request)
        actor = self.actor(request)
        try:
            if request.match_info["action"] == "ack":
                out = await self.svc.acknowledge(iid, actor=actor)
                if out.note:  # already acknowledged: say by whom, on this answer only
                    return await self.incident(request, notice=out.note)
                key = "acked"
            else:
                await self.svc.resolve(iid, actor=actor, text="Resolved from the console.")
                key = "resolved"
        except (Forbidden, InvalidTransition, InvalidInput) as exc:
            status = 403 if isinstance(exc, Forbidden) else 409 if isinstance(exc, InvalidTransition) else 400
            return await self.incident(request, notice=str(exc), status=status)
        raise web.HTTPSeeOther(f"/incidents/{iid}?msg={key}")

    # --- audit, live events -------------------------------------------------------------

    async def audit_page(self, request: web.Request, result: str | None = None,
                         ok: bool | None = None) -> web.Response:
        entries = list(await self.audit_reads.entries(actor=self.actor(request), limit=200))
        return self.render("audit.html", request, entries=list(reversed(entries)), result=result, ok=ok)

    async def audit_verify(self, request: web.Request) -> web.Response:
        await self.check_csrf(request)
        res = await self.audit_reads.verify(actor=self.actor(request))
        return await self.audit_page(request, result=res.describe(), ok=res.ok)

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue()
        self.subscribers.add(q)
        try:
            await resp.write(b": connected\n\n")
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), timeout=15)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if not data:
                    break
                await resp.write(f"event: incident\ndata: {data}\n\n".encode())
        except ConnectionResetError:
            log.debug("console.events.disconnected", extra={"remote": request.remote})
        finally:
            self.subscribers.discard(q)
        return resp


def mount_console(rt: Runtime) -> Provided:
    """Add the console routes to the app (mounted from bot/server.py when console.enabled)."""
    if not rt.cfg.console.enabled:
        return Provided()
    console = Console(rt.ctx)
    console.routes(rt.app.router)
    return Provided(components=[console])


def incident_id(request: web.Request) -> int:
    """The route's digits as an incident id; digits no incident can have (too many) are 404, like any
    unknown id, not a parse error."""
    raw = request.match_info["id"]
    try:
        return parse_ref(raw)
    except InvalidInput:
        raise NotFound(f"no incident INC-{raw[:20]}{'...' if len(raw) > 20 else ''}") from None
