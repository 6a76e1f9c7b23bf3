"""Reading Slack requests: who acts, whether a signed body is usable, where it came from."""
from __future__ import annotations

from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest

from core.rbac import Actor


def actor_of(user_id: str, name: str | None) -> Actor:
    """The Slack user as the core knows them: `slack:U123` (roles come from config `access`)."""
    return Actor(f"slack:{user_id}", source="slack", display=name or None)


def malformed(body: Any) -> str | None:
    """What a signed request lacks that we need to act on it once and answer (None when usable)."""
    if not isinstance(body, dict):
        return "body is not an object"
    if "command" in body:
        missing = [k for k in ("user_id", "trigger_id") if not body.get(k)]
        return f"slash command without {', '.join(missing)}" if missing else None
    kind = body.get("type")
    if kind not in ("block_actions", "view_submission"):
        return None  # url_verification, ssl_check, events: bolt answers those itself
    if not isinstance(body.get("user"), dict) or not body["user"].get("id"):
        return f"{kind} without user.id"
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, dict) and a.get("action_id") for a in actions):
            return "block_actions without actions[].action_id"
    if kind == "view_submission" and not (isinstance(body.get("view"), dict) and body["view"].get("id")):
        return "view_submission without view.id"
    return None


def retry_num(request: AsyncBoltRequest) -> str | None:
    values = request.headers.get("x-slack-retry-num") or []
    return values[0] if values else None


def channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel")
    if isinstance(channel, dict) and channel.get("id"):
        return str(channel["id"])
    container = body.get("container")
    if isinstance(container, dict) and container.get("channel_id"):
        return str(container["channel_id"])
    return None
