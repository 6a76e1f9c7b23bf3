"""Slack: the incoming-webhook page and the incident card (Block Kit), with its thread replies.

Plain dicts and strings (no slack SDK), so every shape Slack sees is testable without a network.
Limits from https://api.slack.com/reference/block-kit/blocks: we cut before Slack refuses the call.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from core.appearance.card import IncidentCard
from core.appearance.reminders import SNOOZE_VERB, snooze_button
from core.appearance.common import headline, offers_ack, page_fields, page_links, shown_state
from core.appearance.vocabulary import (
    BUTTON_LABELS,
    KIND_LABELS,
    role_label,
    SEVERITY_EMOJI,
    STATE_EMOJI,
    STATE_LABELS,
    escape_slack,
    fmt_duration,
    kind_label,
    one_line,
    severity_label,
    severity_long,
    state_label,
    truncate,
)
from core.config import SEVERITIES, Config
from core.delivery.message import Notification

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
TEXT_MAX = 3900

# Action ids carry the verb and the incident id, so a press needs no lookup of which card it came from.
ACTION_PREFIX = "incident."
ACTION_VERBS = ("ack", "update", "monitor", "resolve", "snooze")
ACTION_RE = re.compile(r"^incident\.(ack|update|monitor|resolve|snooze):(\d{1,12})$")
OPEN_VERB = "open"
OPEN_RE = re.compile(r"^incident\.open:(\d{1,12})$")
"""The Open incident URL button: the browser opens the link, yet Slack still sends a block_actions, which the
adapter only acknowledges."""
URL_MAX = 3000
"""Block Kit's limit for a button's url."""
DECLARE_VIEW = "incident.declare"
UPDATE_VIEW = "incident.update"

KIND_EMOJI = {"UPDATE": ":memo:", "BRIDGE": ":telephone_receiver:", "RESOLVED": ":white_check_mark:",
              "ACK": ":eyes:", "MONITORING": ":mag:", "ESCALATION": ":rotating_light:", "INITIAL": ":fire:",
              "REMINDER": ":alarm_clock:", "NOTE": ":pushpin:",
              "ROLE": ":bust_in_silhouette:", "HANDOFF": ":busts_in_silhouette:"}


# --- page (incoming webhook) -------------------------------------------------------------------------


def render_slack(n: Notification) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus the `text` fallback for notifications."""
    title = one_line(n.title)
    head = f"{n.incident} · {title}" if n.incident else title
    context = [f"*{kind_label(n.kind)}*"]
    if n.severity:
        context.append(f"{SEVERITY_EMOJI.get(n.severity, '')} {severity_label(n.severity)}".strip())
    if (state := shown_state(n)):
        context.append(f"state: *{escape_slack(state)}*")
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": truncate(head, HEADER_MAX), "emoji": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
    ]
    if n.body.strip():
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": truncate(escape_slack(n.body), SECTION_MAX)}})
    items = page_fields(n)
    for start in range(0, min(len(items), 40), 10):  # a section holds at most 10 fields
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": truncate(f"*{escape_slack(k)}*\n{escape_slack(v)}", FIELD_MAX)}
            for k, v in items[start:start + 10]
        ]})
    links = page_links(n)
    ack = offers_ack(n)
    buttons: list[dict[str, Any]] = []
    if ack:
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": BUTTON_LABELS["ack"]},
                        "url": ack, "style": "danger"})
    for name, url in links[:24]:
        if len(url) <= URL_MAX:
            buttons.append({"type": "button", "text": {"type": "plain_text", "text": truncate(name, 75)},
                            "url": url})
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    return {"text": escape_slack(headline(n)), "blocks": blocks[:50]}


# --- card (bot) ----------------------------------------------------------------------------------------


def text(value: str, *, kind: str = "mrkdwn") -> dict[str, Any]:
    """A Block Kit text object (plain_text ones render emoji)."""
    return {"type": kind, "text": value} if kind == "mrkdwn" else {"type": kind, "text": value, "emoji": True}


def action_id(verb: str, incident_id: int) -> str:
    return f"{ACTION_PREFIX}{verb}:{incident_id}"


def parse_action_id(value: str) -> tuple[str, int] | None:
    m = ACTION_RE.match(value or "")
    return (m.group(1), int(m.group(2))) if m else None


def who(identity: str | None) -> str:
    """`slack:U123` renders as a mention; other identities (cli:alice, api:grafana) as plain text."""
    if not identity:
        return "-"
    platform, _, user = identity.partition(":")
    if platform == "slack" and re.fullmatch(r"[UW][A-Z0-9]{2,20}", user):
        return f"<@{user}>"
    return escape_slack(identity)


def _date(dt: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """Slack renders `<!date^...>` in each reader's own timezone; the fallback is UTC."""
    return f"<!date^{int(dt.timestamp())}^{fmt}|{dt:%Y-%m-%d %H:%M} UTC>"


def card_text(card: IncidentCard) -> str:
    """Notification/fallback text of the card (shown in push notifications and screen readers)."""
    return truncate(f"{card.ref} [{card.severity.upper()}] {card.state}: {escape_slack(card.title)}", TEXT_MAX)


def card_blocks(card: IncidentCard, *, now: datetime) -> list[dict[str, Any]]:
    """The incident card: title, severity, state, commander, time open, links, and the buttons still
    meaningful. Once resolved: no buttons, time to ack and time to resolve instead."""
    emoji = STATE_EMOJI["resolved"] if not card.open else SEVERITY_EMOJI.get(card.severity, ":rotating_light:")
    fields = [
        f"*Severity*\n{severity_long(card.severity)}",
        f"*State*\n{state_label(card.state, flapping=card.flapping)}",
    ]
    # Commander first, then comms and scribe once someone holds them; Slack users render as mentions.
    fields += [f"*{role_label(role)}*\n{who(ident) if ident.startswith('slack:') else escape_slack(name)}"
               for role, ident, name in card.roles()]
    if card.acknowledged_at:
        fields.append(f"*Acknowledged by*\n{who(card.acknowledged_by)}")
    if card.open:
        fields.append(f"*Open for*\n{fmt_duration(card.time_open(now))}")
    else:
        tta = fmt_duration(card.time_to_ack) if card.time_to_ack else "not acknowledged"
        fields.append(f"*Time to ack*\n{tta}")
        fields.append(f"*Time to resolve*\n{fmt_duration(card.time_to_resolve)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": text(truncate(f"{card.ref}: {card.title}", HEADER_MAX), kind="plain_text")},
        {"type": "section", "block_id": "summary", "fields": [text(f) for f in fields]},
    ]
    if card.description and card.description.strip() != card.title.strip():
        blocks.append({"type": "section", "block_id": "description",
                       "text": text(truncate(escape_slack(card.description), SECTION_MAX))})
    context = [f"{emoji} {KIND_LABELS['INITIAL']} {_date(card.created_at)}"]
    if card.resolved_at:
        context.append(f"{STATE_LABELS['resolved']} {_date(card.resolved_at)}")
    blocks.append({"type": "context", "block_id": "links", "elements": [text(" · ".join(context))]})
    elements = [_button(verb, card) for verb in card.buttons]
    if (opener := open_button(card)) is not None:
        elements.append(opener)
    if elements:
        blocks.append({"type": "actions", "block_id": f"actions:{card.id}", "elements": elements})
    return blocks


def open_button(card: IncidentCard) -> dict[str, Any] | None:
    """Open incident: a URL button to the console page (server.public_url), beside the card's actions and
    kept once resolved, as on Teams and Telegram; None for a link Block Kit would refuse."""
    if not card.link.startswith(("https://", "http://")) or len(card.link) > URL_MAX:
        return None
    return {"type": "button", "action_id": action_id(OPEN_VERB, card.id), "url": card.link,
            "text": text(BUTTON_LABELS[OPEN_VERB], kind="plain_text")}


def _button(verb: str, card: IncidentCard) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "action_id": action_id(verb, card.id), "value": str(card.id),
                         "text": text(BUTTON_LABELS[verb], kind="plain_text")}
    if verb == "ack":
        b["style"] = "primary"
    if verb == "resolve":
        b["style"] = "danger"
        b["confirm"] = {"title": text("Resolve incident?", kind="plain_text"),
                        "text": text(truncate(f"Resolve {card.ref}: {escape_slack(card.title)}?", 300)),
                        "confirm": text("Resolve", kind="plain_text"),
                        "deny": text("Cancel", kind="plain_text")}
    return b


def thread_text(note: Notification) -> str:
    """One thread reply per incident change (UPDATE, BRIDGE, ACK, MONITORING, RESOLVED, ESCALATION)."""
    label = kind_label(note.kind)
    emoji = KIND_EMOJI.get(note.kind, ":speech_balloon:")
    return truncate(f"{emoji} *{label}*: {escape_slack(note.body or note.title)}", TEXT_MAX)


def post_text(note: Notification) -> str:
    """A plain post in the incident channel that belongs to no incident (an on-call handoff)."""
    emoji = KIND_EMOJI.get(note.kind, ":speech_balloon:")
    return truncate(f"{emoji} {escape_slack(note.body or note.title)}", TEXT_MAX)


def thread_blocks(note: Notification) -> list[dict[str, Any]] | None:
    """Blocks of a thread reply that has a button (a reminder's Snooze); None: the text alone."""
    snooze = snooze_button(note)
    if snooze is None:
        return None
    incident_id, label = snooze
    return [{"type": "section", "text": text(thread_text(note))},
            {"type": "actions", "block_id": f"reminder:{incident_id}", "elements": [
                {"type": "button", "action_id": action_id(SNOOZE_VERB, incident_id), "value": str(incident_id),
                 "text": text(label, kind="plain_text")}]}]


# --- modals (forms the bot opens) ---------------------------------------------------------------------


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
    return {"text": text(truncate(label, 75), kind="plain_text"), "value": value[:150]}


def declare_modal(cfg: Config, *, channel: str | None, response_url: str | None = None) -> dict[str, Any]:
    """The form behind a bare `/incident`: title, severity, contact list (from config), description.
    The slash command's response_url rides along, so the answer reaches the user wherever they typed."""
    severities = [_option(s, severity_long(s)) for s in SEVERITIES]
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": "title", "label": text("Title", kind="plain_text"),
         "element": {"type": "plain_text_input", "action_id": "value", "max_length": 500,
                     "placeholder": text("What is broken?", kind="plain_text")}},
        {"type": "input", "block_id": "severity", "label": text("Severity", kind="plain_text"),
         "element": {"type": "static_select", "action_id": "value", "options": severities,
                     "initial_option": severities[2]}},
    ]
    lists = [_option(c.name, c.name) for c in cfg.contact_lists][:100]
    if lists:
        blocks.append({"type": "input", "block_id": "contact_list", "optional": True,
                       "label": text("Contact list to page", kind="plain_text"),
                       "hint": text("Routing rules page their targets anyway; this adds a list.",
                                     kind="plain_text"),
                       "element": {"type": "static_select", "action_id": "value", "options": lists}})
    blocks.append({"type": "input", "block_id": "description", "optional": True,
                   "label": text("Description", kind="plain_text"),
                   "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                               "max_length": 3000}})
    return {"type": "modal", "callback_id": DECLARE_VIEW,
            "title": text("Declare incident", kind="plain_text"),
            "submit": text("Declare", kind="plain_text"), "close": text("Cancel", kind="plain_text"),
            "private_metadata": _metadata(channel=channel, response_url=response_url), "blocks": blocks}


def update_modal(card: IncidentCard, *, channel: str | None) -> dict[str, Any]:
    """The form behind the card's Add update button."""
    return {"type": "modal", "callback_id": UPDATE_VIEW, "title": text(BUTTON_LABELS["update"], kind="plain_text"),
            "submit": text("Post update", kind="plain_text"), "close": text("Cancel", kind="plain_text"),
            "private_metadata": _metadata(channel=channel, incident=card.id),
            "blocks": [
                {"type": "section", "text": text(truncate(f"*{card.ref}*: {escape_slack(card.title)}", SECTION_MAX))},
                {"type": "input", "block_id": "text", "label": text("Update", kind="plain_text"),
                 "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                             "max_length": 3000}},
            ]}
