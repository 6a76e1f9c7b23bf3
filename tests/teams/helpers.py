"""Teams test kit: Bot Framework activities as Teams sends them, a loopback Bot Connector, signed tokens.

The Bot Connector stand-in is the shared recording HTTP stand-in (tests/stand_ins/http.py) answering the
Connector calls the bot makes, each with a fresh activity id:
  createConversation  POST /v3/conversations (a 1:1 chat: `a:dm-<member id>`, or the status in `refused`)
  replyToActivity     POST /v3/conversations/{id}/activities/{activityId}
  sendToConversation  POST /v3/conversations/{id}/activities
  updateActivity      PUT  /v3/conversations/{id}/activities/{activityId}
"""
from __future__ import annotations

import html
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from botbuilder.schema import Activity, ChannelAccount
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.stand_ins.http import HttpStandIn, Recorded

BOT_ID = "28:tocsin-bot"
TEAMS_CONV = "19:ops@thread.tacv2"
INCIDENT_CONV = "19:incidents@thread.tacv2"
OPERATOR = "aad-operator-1"
VIEWER = "aad-viewer-1"
TEAMS_ACCESS = {f"teams:{OPERATOR}": "operator"}


def teams_msg(text: str, aad: str) -> Activity:
    """A chat message from the Teams user with AAD object id `aad`, for the bot's in-process TestAdapter."""
    return Activity(type="message", text=text, from_property=ChannelAccount(id=f"29:{aad}", name=aad,
                                                                            aad_object_id=aad))


def teams_config(service_url: str, **over: Any) -> dict[str, Any]:
    """Config overrides for make_ctx: Teams on, open endpoint (local testing), operator mapped."""
    teams = {"enabled": True, "allow_unauthenticated": True, "service_url": service_url}
    teams.update(over)
    return {"teams": teams, "access": TEAMS_ACCESS}


_ids = itertools.count(1)


def activity(kind: str = "message", *, service_url: str, user: str = OPERATOR, user_name: str = "Olga Operator",
             conversation: str = TEAMS_CONV, **fields: Any) -> dict[str, Any]:
    """A Bot Framework activity as the Teams channel posts it to /api/messages."""
    body: dict[str, Any] = {
        "type": kind, "id": f"act-{next(_ids)}", "channelId": "msteams", "serviceUrl": service_url,
        "timestamp": "2026-01-01T00:00:00.000Z", "locale": "en-US",
        "from": {"id": f"29:{user}", "name": user_name, "aadObjectId": user},
        "recipient": {"id": BOT_ID, "name": "Tocsin"},
        "conversation": {"id": conversation, "conversationType": "channel", "isGroup": True, "tenantId": "t-1"},
        "channelData": {"tenant": {"id": "t-1"}, "teamsChannelId": conversation},
    }
    body.update(fields)
    return body


def mention_message(text: str, **kw: Any) -> dict[str, Any]:
    """`<at>Tocsin</at> <text>` with the mention entity Teams attaches."""
    return activity("message", text=f"<at>Tocsin</at> {text}", entities=[
        {"type": "mention", "text": "<at>Tocsin</at>", "mentioned": {"id": BOT_ID, "name": "Tocsin"}},
        {"type": "clientInfo", "locale": "en-US"}], **kw)


def execute(verb: str, ref: str, *, card_id: str = "card-1", **kw: Any) -> dict[str, Any]:
    """An Action.Execute press: an `adaptiveCard/action` invoke."""
    data = {"tocsin": verb, "incident": ref, **kw.pop("inputs", {})}
    return activity("invoke", name="adaptiveCard/action", replyToId=card_id,
                    value={"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
                    **kw)


def submit(value: dict[str, Any], *, card_id: str = "card-1", **kw: Any) -> dict[str, Any]:
    """An Action.Submit press: a message activity carrying `value`, replying to the card."""
    return activity("message", replyToId=card_id, value=value, **kw)


def plain(text: str | None) -> str:
    """Message text back from Teams markup (the bot escapes `<` and joins lines with <br>)."""
    return html.unescape((text or "").replace("<br>", "\n"))


def card_of(payload: dict[str, Any]) -> dict[str, Any]:
    atts = payload.get("attachments") or []
    assert atts and atts[0]["contentType"] == "application/vnd.microsoft.card.adaptive", payload
    return dict(atts[0]["content"])


def card_text(card: dict[str, Any]) -> str:
    """Every string in a card, for loose assertions."""
    return json.dumps(card, ensure_ascii=False)


def action_titles(card: dict[str, Any]) -> list[str]:
    return [a["title"] for a in card.get("actions", [])]


# --- the Bot Connector stand-in --------------------------------------------------------------------------


@dataclass
class Connector:
    """Bot Connector stand-in plus readers for the three calls."""

    peer: HttpStandIn
    refused: dict[str, int] = field(default_factory=dict)
    """Member ids createConversation refuses, with the status (403: app not installed for them)."""

    def created(self) -> list[Recorded]:
        """createConversation calls."""
        return self.peer.requests_to("/v3/conversations")

    @property
    def url(self) -> str:
        return self.peer.url

    def replies(self, conversation: str | None = None) -> list[Recorded]:
        """replyToActivity calls."""
        return [r for r in self._calls(conversation) if r.method == "POST" and self._has_activity_id(r)]

    def sends(self, conversation: str | None = None) -> list[Recorded]:
        """sendToConversation calls."""
        return [r for r in self._calls(conversation) if r.method == "POST" and not self._has_activity_id(r)]

    def updates(self, conversation: str | None = None) -> list[Recorded]:
        """updateActivity calls."""
        return [r for r in self._calls(conversation) if r.method == "PUT"]

    def _calls(self, conversation: str | None) -> list[Recorded]:
        out = self.peer.requests_to("/v3/conversations/*")
        # a channel thread is the conversation `<channel>;messageid=<root>`
        return [r for r in out if conversation is None or r.path.split("/")[3].split(";")[0] == conversation]

    @staticmethod
    def _has_activity_id(r: Recorded) -> bool:
        return len([p for p in r.path.split("/") if p]) == 5  # v3 conversations {id} activities {activityId}


@asynccontextmanager
async def bot_connector() -> AsyncIterator[Connector]:
    ids = itertools.count(1)

    def answer(req: Recorded) -> tuple[int, dict[str, str]]:
        return 200, {"id": f"srv-{next(ids)}"}

    async with HttpStandIn() as peer:
        connector = Connector(peer)

        def create(req: Recorded) -> tuple[int, dict[str, Any]]:
            members = [m.get("id") for m in (req.json or {}).get("members") or []]
            if len(members) != 1 or not members[0]:
                return 400, {"error": {"code": "BadArgument", "message": "one member expected"}}
            if members[0] in connector.refused:
                return connector.refused[members[0]], {"error": {"code": "Forbidden",
                                                                 "message": "The bot is not part of the roster"}}
            return 201, {"id": f"a:dm-{members[0]}", "serviceUrl": peer.url}

        peer.on("/v3/conversations", create)
        peer.on("/v3/conversations/*", answer)
        yield connector


# --- tokens the Bot Framework channel would sign -----------------------------------------------------------


class TokenIssuer:
    """Signs Bot Framework channel tokens and serves its OpenID metadata + keys from a loopback stand-in."""

    ISSUER = "https://api.botframework.com"

    def __init__(self, peer: HttpStandIn, *, kid: str = "test-key-1") -> None:
        self.peer = peer
        self.kid = kid
        # botbuilder caches metadata per URL for the whole process: a unique path per issuer keeps a
        # reused loopback port from serving another test's keys.
        self.path = f"/openid-{uuid.uuid4().hex[:8]}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "endorsements": ["msteams"]})
        peer.on(self.path, lambda _r: (200, {"issuer": self.ISSUER, "jwks_uri": f"{peer.url}/keys"}))
        peer.on("/keys", lambda _r: (200, {"keys": [jwk]}))

    @property
    def metadata_url(self) -> str:
        return f"{self.peer.url}{self.path}"

    def token(self, *, audience: str, service_url: str, key: Any = None, issuer: str | None = None,
              expires_in: int = 3600) -> str:
        now = int(time.time())
        claims = {"iss": issuer or self.ISSUER, "aud": audience, "serviceurl": service_url,
                  "nbf": now - 60, "exp": now + expires_in}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})
