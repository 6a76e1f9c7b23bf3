"""A loopback Slack Web API (auth.test, chat.postMessage, chat.update, chat.postEphemeral, views.open,
conversations.replies over the messages it holds) and response_url endpoint, on the shared recording
HttpStandIn; plus request signing like Slack's."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

from tests.stand_ins.http import HttpStandIn, Recorded

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
INCIDENT_CHANNEL = "CINCIDENTS"


def sign(body: str, *, secret: str = SIGNING_SECRET, ts: int | None = None) -> dict[str, str]:
    """Headers Slack sends: v0 HMAC-SHA256 over `v0:{ts}:{body}`."""
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def slash_body(text: str, *, user: str = "UOP", trigger: str, channel: str = "CGENERAL",
               response_url: str, user_name: str = "op") -> str:
    return urlencode({"token": "legacy", "team_id": "T1", "team_domain": "acme", "channel_id": channel,
                      "channel_name": "general", "user_id": user, "user_name": user_name,
                      "command": "/incident", "text": text, "api_app_id": "A1", "response_url": response_url,
                      "trigger_id": trigger})


def action_body(action_id: str, *, user: str = "UOP", action_ts: str, channel: str = INCIDENT_CHANNEL,
                message_ts: str = "1.000001", response_url: str, trigger: str = "trig-btn") -> str:
    payload = {"type": "block_actions", "team": {"id": "T1", "domain": "acme"},
               "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T1"},
               "api_app_id": "A1", "token": "legacy", "trigger_id": trigger,
               "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                             "is_ephemeral": False},
               "channel": {"id": channel, "name": "incidents"}, "response_url": response_url,
               "message": {"type": "message", "ts": message_ts, "text": "card"},
               "actions": [{"action_id": action_id, "block_id": "actions", "type": "button",
                            "value": action_id.rsplit(":", 1)[-1], "action_ts": action_ts,
                            "text": {"type": "plain_text", "text": "x"}}]}
    return urlencode({"payload": json.dumps(payload)})


def view_body(view: dict[str, Any], values: dict[str, dict[str, Any]], *, user: str = "UOP",
              view_id: str = "V1") -> str:
    """A view_submission of `view` (as we sent it to views.open) with the given input values."""
    submitted = dict(view, id=view_id, hash="h1", state={"values": values}, team_id="T1", app_id="A1")
    payload = {"type": "view_submission", "team": {"id": "T1"}, "api_app_id": "A1", "token": "legacy",
               "trigger_id": "trig-view", "user": {"id": user, "username": user.lower(), "team_id": "T1"},
               "view": submitted}
    return urlencode({"payload": json.dumps(payload)})


def text_value(value: str) -> dict[str, Any]:
    return {"value": {"type": "plain_text_input", "value": value}}


def select_value(value: str | None) -> dict[str, Any]:
    opt = {"text": {"type": "plain_text", "text": value}, "value": value} if value else None
    return {"value": {"type": "static_select", "selected_option": opt}}


class SlackApi(HttpStandIn):
    """The Web API at `base_url` (…/api/) and response_urls at `response_url(n)`; answers like Slack."""

    def __init__(self) -> None:
        super().__init__(default=(404, {"ok": False, "error": "unknown_method"}))
        self._ts = itertools.count(1)
        self._views = itertools.count(1)
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        """(channel, ts) -> every message in the workspace: the bot's posts and `say()`'s human ones."""

    async def start(self) -> SlackApi:
        await super().start()
        self.install()
        return self

    def install(self) -> None:
        """(Re)install the default answers (after `reset()`)."""
        self.on("/api/auth.test", (200, {"ok": True, "url": "https://acme.slack.com/", "team": "Acme",
                                         "user": "tocsin", "team_id": "T1", "user_id": "UBOT",
                                         "bot_id": "BBOT"}))
        self.on("/api/chat.postMessage", self._post)
        self.on("/api/chat.update", lambda r: (200, {"ok": True, "channel": args(r)["channel"],
                                                     "ts": args(r)["ts"], "text": args(r).get("text")}))
        self.on("/api/chat.postEphemeral", lambda r: (200, {"ok": True, "message_ts": f"{time.time():.6f}"}))
        self.on("/api/views.open", lambda r: (200, {"ok": True, "view": {"id": f"V{next(self._views)}"}}))
        self.on("/api/conversations.replies", self._replies)
        self.on("/response/*", (200, "ok"))

    def _post(self, rec: Recorded) -> tuple[int, dict[str, Any]]:
        a = args(rec)
        ts = f"1700000000.{next(self._ts):06d}"
        self._keep(a["channel"], {"type": "message", "ts": ts, "text": a.get("text"), "bot_id": "BBOT",
                                  "user": "UBOT", "thread_ts": a.get("thread_ts")})
        return 200, {"ok": True, "channel": a["channel"], "ts": ts,
                     "message": {"text": a.get("text"), "ts": ts}}

    def _keep(self, channel: str, message: dict[str, Any]) -> None:
        self.messages[(channel, message["ts"])] = {k: v for k, v in message.items() if v is not None}

    def say(self, channel: str, text: str, *, user: str, thread_ts: str | None = None) -> str:
        """A person posts a message (in a thread with `thread_ts`); returns its ts."""
        ts = f"1700000000.{next(self._ts):06d}"
        self._keep(channel, {"type": "message", "ts": ts, "text": text, "user": user, "thread_ts": thread_ts})
        return ts

    def _replies(self, rec: Recorded) -> tuple[int, dict[str, Any]]:
        """conversations.replies as Slack answers it: the thread's parent first, then the replies between
        `oldest` and `latest` (inclusive), at most `limit` messages in all."""
        a = args(rec)
        msg = self.messages.get((a.get("channel"), a.get("ts")))
        if msg is None:
            return 200, {"ok": False, "error": "thread_not_found"}
        root = msg.get("thread_ts") or msg["ts"]
        parent = self.messages[(a["channel"], root)]
        lo, hi = a.get("oldest") or "0", a.get("latest") or "9999999999"
        replies = sorted((m for (c, t), m in self.messages.items() if c == a["channel"] and t != root
                          and m.get("thread_ts") == root and lo <= t <= hi), key=lambda m: m["ts"])
        limit = int(a.get("limit") or 1000)
        return 200, {"ok": True, "messages": [parent, *replies][:limit], "has_more": False}

    @property
    def base_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, n: int | str) -> str:
        return f"{self.url}/response/{n}"

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Arguments of every call to a Web API method, in order."""
        return [args(r) for r in self.requests_to(f"/api/{method}")]

    def responses(self, n: int | str | None = None) -> list[dict[str, Any]]:
        """Bodies posted to response_urls (all, or to `response_url(n)`)."""
        pattern = "/response/*" if n is None else f"/response/{n}"
        return [r.json for r in self.requests_to(pattern)]

    def posts(self, *, thread_ts: str | None = None, top: bool = False) -> list[dict[str, Any]]:
        calls = self.calls("chat.postMessage")
        if top:
            return [c for c in calls if not c.get("thread_ts")]
        return [c for c in calls if thread_ts is None or c.get("thread_ts") == thread_ts]


def args(rec: Recorded) -> dict[str, Any]:
    """A Web API call's arguments, whether the client sent JSON, a form or a query string."""
    if isinstance(rec.json, dict):
        return rec.json
    return {**rec.query, **(rec.form or {})}  # read methods (conversations.replies) are GETs with a query
