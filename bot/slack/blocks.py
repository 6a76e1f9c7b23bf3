"""Block Kit rendering for Slack: the incident card, its thread replies, the declare/update modals, answers.

Pure functions only (no I/O), so every shape Slack sees is testable without a network.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from bot.commands import HELP, USAGE, Command
from bot.dispatch import Reply
from bot.surface import IncidentCard
from core.config import SEVERITIES, Config
from core.delivery.message import Notification

# Action ids carry the verb and the incident id, so a press needs no lookup of which card it came from.
ACTION_PREFIX = "incident."
ACTION_VERBS = ("ack", "update", "monitor", "resolve")
ACTION_RE = re.compile(r"^incident\.(ack|update|monitor|resolve):(\d{1,12})$")
DECLARE_VIEW = "incident.declare"
UPDATE_VIEW = "incident.update"

SEVERITY_EMOJI = {"sev1": ":red_circle:", "sev2": ":large_orange_circle:", "sev3": ":large_yellow_circle:",
                  "sev4": ":large_blue_circle:"}
SEVERITY_LABEL = {"sev1": "SEV1 (critical)", "sev2": "SEV2 (high)", "sev3": "SEV3 (medium)",
                  "sev4": "SEV4 (low)"}
KIND_EMOJI = {"UPDATE": ":memo:", "BRIDGE": ":telephone_receiver:", "RESOLVED": ":white_check_mark:",
              "ACK": ":eyes:", "MONITORING": ":mag:", "ESCALATION": ":rotating_light:", "INITIAL": ":fire:"}
KIND_LABEL = {"UPDATE": "Update", "BRIDGE": "Bridge", "RESOLVED": "Resolved", "ACK": "Acknowledged",
              "MONITORING": "Monitoring", "ESCALATION": "Escalation", "INITIAL": "Declared"}
BUTTON_LABEL = {"ack": "Acknowledge", "update": "Add update", "monitor": "Monitoring", "resolve": "Resolve"}

# Slack's limits (https://api.slack.com/reference/block-kit/blocks): we cut before Slack refuses the call.
HEADER_MAX = 150
SECTION_MAX = 3000
TEXT_MAX = 3900


def escape(text: str) -> str:
    """Slack mrkdwn control characters: a title like `<!channel>` must not ping a whole channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def who(identity: str | None) -> str:
    """`slack:U123` renders as a mention; other identities (cli:alice, api:grafana) as plain text."""
    if not identity:
        return "-"
    platform, _, user = identity.partition(":")
    if platform == "slack" and re.fullmatch(r"[UW][A-Z0-9]{2,20}", user):
        return f"<@{user}>"
    return escape(identity)


def action_id(verb: str, incident_id: int) -> str:
    return f"{ACTION_PREFIX}{verb}:{incident_id}"


def parse_action_id(value: str) -> tuple[str, int] | None:
    m = ACTION_RE.match(value or "")
    return (m.group(1), int(m.group(2))) if m else None


def _text(text: str, *, kind: str = "mrkdwn") -> dict[str, Any]:
    return {"type": kind, "text": text} if kind == "mrkdwn" else {"type": kind, "text": text, "emoji": True}


def _date(dt: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """Slack renders `<!date^...>` in each reader's own timezone; the fallback is UTC."""
    return f"<!date^{int(dt.timestamp())}^{fmt}|{dt:%Y-%m-%d %H:%M} UTC>"


def card_text(card: IncidentCard) -> str:
    """Notification/fallback text of the card (shown in push notifications and screen readers)."""
    return cut(f"{card.ref} [{card.severity.upper()}] {card.state}: {escape(card.title)}", TEXT_MAX)


def card_blocks(card: IncidentCard, *, now: datetime) -> list[dict[str, Any]]:
    """The incident card: title, severity, state, commander, time open, links, and the buttons still
    meaningful. Once resolved: no buttons, time to ack and time to resolve instead."""
    emoji = ":white_check_mark:" if not card.open else SEVERITY_EMOJI.get(card.severity, ":rotating_light:")
    fields = [
        f"*Severity*\n{SEVERITY_LABEL.get(card.severity, card.severity.upper())}",
        f"*State*\n{card.state.capitalize()}",
        f"*Commander*\n{who(card.commander)}",
    ]
    if card.acknowledged_at:
        fields.append(f"*Acknowledged by*\n{who(card.acknowledged_by)}")
    if card.open:
        fields.append(f"*Open for*\n{card.time_open(now)}")
    else:
        fields.append(f"*Time to ack*\n{card.time_to_ack or 'not acknowledged'}")
        fields.append(f"*Time to resolve*\n{card.time_to_resolve or '-'}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _text(cut(f"{card.ref}: {card.title}", HEADER_MAX), kind="plain_text")},
        {"type": "section", "block_id": "summary", "fields": [_text(f) for f in fields]},
    ]
    if card.description and card.description.strip() != card.title.strip():
        blocks.append({"type": "section", "block_id": "description",
                       "text": _text(cut(escape(card.description), SECTION_MAX))})
    context = [f"{emoji} Declared {_date(card.created_at)}", f"<{card.link}|Open in Tocsin>"]
    if card.resolved_at:
        context.insert(1, f"Resolved {_date(card.resolved_at)}")
    blocks.append({"type": "context", "block_id": "links", "elements": [_text(" · ".join(context))]})
    if card.buttons:
        blocks.append({"type": "actions", "block_id": f"actions:{card.id}",
                       "elements": [_button(verb, card) for verb in card.buttons]})
    return blocks


def _button(verb: str, card: IncidentCard) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "action_id": action_id(verb, card.id), "value": str(card.id),
                         "text": _text(BUTTON_LABEL[verb], kind="plain_text")}
    if verb == "ack":
        b["style"] = "primary"
    if verb == "resolve":
        b["style"] = "danger"
        b["confirm"] = {"title": _text("Resolve incident?", kind="plain_text"),
                        "text": _text(cut(f"Resolve {card.ref}: {escape(card.title)}?", 300)),
                        "confirm": _text("Resolve", kind="plain_text"),
                        "deny": _text("Cancel", kind="plain_text")}
    return b


def thread_text(note: Notification) -> str:
    """One thread reply per incident change (UPDATE, BRIDGE, ACK, MONITORING, RESOLVED, ESCALATION)."""
    label = KIND_LABEL.get(note.kind, note.kind.capitalize())
    emoji = KIND_EMOJI.get(note.kind, ":speech_balloon:")
    return cut(f"{emoji} *{label}*: {escape(note.body or note.title)}", TEXT_MAX)


# --- modals ---------------------------------------------------------------------------------------


def _metadata(**values: Any) -> str:
    return json.dumps({k: v for k, v in values.items() if v is not None}, separators=(",", ":"))[:3000]


def read_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """private_metadata is ours (we wrote it), but arrives through the client: tolerate garbage."""
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": _text(cut(label, 75), kind="plain_text"), "value": value[:150]}


def declare_modal(cfg: Config, *, channel: str | None, response_url: str | None = None) -> dict[str, Any]:
    """The form behind a bare `/incident`: title, severity, contact list (from config), description.
    The slash command's response_url rides along, so the answer reaches the user wherever they typed."""
    severities = [_option(s, SEVERITY_LABEL[s]) for s in SEVERITIES]
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": "title", "label": _text("Title", kind="plain_text"),
         "element": {"type": "plain_text_input", "action_id": "value", "max_length": 500,
                     "placeholder": _text("What is broken?", kind="plain_text")}},
        {"type": "input", "block_id": "severity", "label": _text("Severity", kind="plain_text"),
         "element": {"type": "static_select", "action_id": "value", "options": severities,
                     "initial_option": severities[2]}},
    ]
    lists = [_option(c.name, c.name) for c in cfg.contact_lists][:100]
    if lists:
        blocks.append({"type": "input", "block_id": "contact_list", "optional": True,
                       "label": _text("Contact list to page", kind="plain_text"),
                       "hint": _text("Routing rules page their targets anyway; this adds a list.",
                                     kind="plain_text"),
                       "element": {"type": "static_select", "action_id": "value", "options": lists}})
    blocks.append({"type": "input", "block_id": "description", "optional": True,
                   "label": _text("Description", kind="plain_text"),
                   "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                               "max_length": 3000}})
    return {"type": "modal", "callback_id": DECLARE_VIEW,
            "title": _text("Declare incident", kind="plain_text"),
            "submit": _text("Declare", kind="plain_text"), "close": _text("Cancel", kind="plain_text"),
            "private_metadata": _metadata(channel=channel, response_url=response_url), "blocks": blocks}


def update_modal(card: IncidentCard, *, channel: str | None) -> dict[str, Any]:
    """The form behind the card's Add update button."""
    return {"type": "modal", "callback_id": UPDATE_VIEW, "title": _text("Add update", kind="plain_text"),
            "submit": _text("Post update", kind="plain_text"), "close": _text("Cancel", kind="plain_text"),
            "private_metadata": _metadata(channel=channel, incident=card.id),
            "blocks": [
                {"type": "section", "text": _text(cut(f"*{card.ref}*: {escape(card.title)}", SECTION_MAX))},
                {"type": "input", "block_id": "text", "label": _text("Update", kind="plain_text"),
                 "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                             "max_length": 3000}},
            ]}


def _value(view: dict[str, Any], block: str) -> str | None:
    """The submitted value of input block `block` (text input or static select), or None."""
    state = ((view.get("state") or {}).get("values") or {}).get(block) or {}
    el = state.get("value") if isinstance(state, dict) else None
    if not isinstance(el, dict):
        return None
    if el.get("type") == "static_select" or "selected_option" in el:
        opt = el.get("selected_option") or {}
        return str(opt["value"]) if isinstance(opt, dict) and opt.get("value") else None
    v = el.get("value")
    return str(v) if v is not None else None


def read_declare(view: dict[str, Any], cfg: Config) -> Command | dict[str, str]:
    """The declare form as a Command, or per-block errors to show in the modal (checked before ack)."""
    errors: dict[str, str] = {}
    title = " ".join((_value(view, "title") or "").split())
    if not title:
        errors["title"] = "An incident needs a title."
    elif len(title) > 500:
        errors["title"] = "The title is longer than 500 characters."
    severity = _value(view, "severity") or ""
    if severity not in SEVERITIES:
        errors["severity"] = "Pick a severity."
    contact_list = _value(view, "contact_list")
    if contact_list and cfg.contact_list(contact_list) is None:
        errors["contact_list"] = f"There is no contact list {contact_list!r} any more."
    if errors:
        return errors
    description = (_value(view, "description") or "").strip()
    return Command("declare", severity=severity, title=title, text=description, target=contact_list)


def read_update(view: dict[str, Any]) -> Command | dict[str, str]:
    """The update form as a Command, or per-block errors."""
    incident = read_metadata(view).get("incident")
    text = (_value(view, "text") or "").strip()
    if not text:
        return {"text": "Write the update."}
    if not isinstance(incident, int):
        return {"text": "This form lost track of its incident; press Add update on the card again."}
    return Command("update", incident=f"INC-{incident}", text=text)


# --- answers ----------------------------------------------------------------------------------------


def answer_text(reply: Reply, cmd: Command | None) -> str:
    """What the user reads. Failures always say how to use the command, so nobody is left guessing."""
    text = reply.text
    if not reply.ok and "Usage:" not in text and "Incident commands:" not in text:
        usage = USAGE.get(cmd.verb) if cmd else None
        text += f"\nUsage: {usage}" if usage else f"\n{HELP}"
    return cut(escape(text), TEXT_MAX)
