"""The console bell, following an incident, and browser push opt-in: thin routes over core/bell.py,
core/subscriptions.py and core/webpush.py.

Reads use the session; writes also need the page's CSRF token in the X-CSRF-Token header. The service worker
is served from /sw.js so its scope covers the whole console."""
from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.bell import bell, mark_read
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from core.webpush import subscribe, unsubscribe, vapid_keys

if TYPE_CHECKING:
    from bot.web.app import Console, Handler

SERVICE_WORKER = """// Tocsin: show a page pushed to this browser, open its incident when clicked.
self.addEventListener("push", function (event) {
  var d = {};
  try { d = event.data ? event.data.json() : {}; } catch (e) { d = {title: "Tocsin", body: event.data.text()}; }
  event.waitUntil(self.registration.showNotification(d.title || "Tocsin", {
    body: d.body || "", tag: d.tag || undefined, data: {url: d.url || "/"},
    requireInteraction: !!d.require_interaction
  }));
});
self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  event.waitUntil(clients.openWindow(event.notification.data.url || "/"));
});
"""


def mount_bell(console: Console, router: web.UrlDispatcher, auth: Callable[[Handler], Handler]) -> None:
    from bot.web.app import SESSION  # the module mounting us; imported here to keep imports one-way

    ctx = console.ctx

    def user(request: web.Request) -> str:
        return str(request[SESSION].user)

    def check_csrf(request: web.Request) -> None:
        if not secrets.compare_digest(request.headers.get("X-CSRF-Token", ""), request[SESSION].csrf):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") \
                from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
        return data

    async def get_bell(request: web.Request) -> web.Response:
        return web.json_response((await bell(ctx.db, ctx.cfg, user(request))).to_json())

    async def read_bell(request: web.Request) -> web.Response:
        check_csrf(request)
        await mark_read(ctx.db, user(request), now=ctx.clock.now())
        return web.json_response({"unread": 0})

    async def push_key(request: web.Request) -> web.Response:
        keys = await vapid_keys(ctx.db, now=ctx.clock.now())
        return web.json_response({"public_key": keys.public_key})

    async def push_subscribe(request: web.Request) -> web.Response:
        check_csrf(request)
        data = await body(request)
        try:
            sub_id = await subscribe(ctx.db, user=user(request), subscription=data,
                                     user_agent=request.headers.get("User-Agent", ""), now=ctx.clock.now())
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"subscribed": True, "id": sub_id}, status=201)

    async def push_unsubscribe(request: web.Request) -> web.Response:
        check_csrf(request)
        data = await body(request)
        removed = await unsubscribe(ctx.db, user=user(request), endpoint=str(data.get("endpoint", "")))
        return web.json_response({"removed": removed})

    async def service_worker(_request: web.Request) -> web.Response:
        return web.Response(text=SERVICE_WORKER, content_type="application/javascript",
                            headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"})

    async def follow(request: web.Request) -> web.Response:
        """Follow or stop following the incident (the incident page's button); a refusal is said there."""
        from bot.web.app import incident_id

        await console.check_csrf(request)
        iid = incident_id(request)
        actor, what = console.actor(request), f"INC-{iid}"
        try:
            if request.match_info["action"] == "follow":
                await console.subscriptions.subscribe(actor=actor, what=what)
            else:
                await console.subscriptions.unsubscribe(actor=actor, what=what)
        except (Forbidden, InvalidInput, InvalidTransition, NotFound) as exc:
            status = next(code for cls, code in ((Forbidden, 403), (NotFound, 404), (InvalidTransition, 409),
                                                 (InvalidInput, 400)) if isinstance(exc, cls))
            return await console.incident(request, notice=str(exc), status=status)
        raise web.HTTPSeeOther(f"/incidents/{iid}?msg={request.match_info['action']}ed")

    router.add_post(r"/incidents/{id:\d+}/{action:follow|unfollow}", auth(follow))
    router.add_get("/bell", auth(get_bell))
    router.add_post("/bell/read", auth(read_bell))
    router.add_get("/push/key", auth(push_key))
    router.add_post("/push/subscribe", auth(push_subscribe))
    router.add_post("/push/unsubscribe", auth(push_unsubscribe))
    router.add_get("/sw.js", service_worker)
