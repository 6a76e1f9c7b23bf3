"""Teams (Adaptive Card 1.4): the incoming-webhook page, and the bot's incident card, declare form and notes.

Plain dicts (no botbuilder types). Card buttons are `Action.Execute` (Universal Actions, answered by an
`adaptiveCard/action` invoke that returns the refreshed card) with an `Action.Submit` fallback for clients
without it (which arrives as a message activity carrying `value`); both carry the same `data`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from core.appearance.card import IncidentCard
from core.appearance.common import json_bytes, offers_ack, page_fields, page_links, shown_state
from core.appearance.reminders import SNOOZE_VERB, snooze_button
from core.appearance.vocabulary import (
    BUTTON_LABELS,
    KIND_LABELS,
    role_label,
    escape_html,
    fmt_duration,
    kind_label,
    one_line,
    severity_long,
    state_label,
    truncate,
)
from core.config import SEVERITIES
from core.delivery.message import Notification

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_BYTES = 28_000
"""Teams rejects messages over about 28 KB; we measure the whole serialized body, in UTF-8 bytes."""
MAX_TEXT = 2000
"""Card text blocks; the title is capped at 500 by the core."""
DATA_KEY = "tocsin"
"""Key in an action's data naming our verb, so foreign card submissions are told apart from ours."""


# --- page (incoming webhook) -------------------------------------------------------------------------


def _color(severity: str | None, *, resolved: bool) -> str:
    if resolved:
        return "Good"
    return {"sev1": "Attention", "sev2": "Attention", "sev3": "Warning"}.get(severity or "", "Default")


def _teams_card(n: Notification, body_text: str) -> dict[str, Any]:
    meta = [kind_label(n.kind)]
    if n.incident:
        meta.insert(0, n.incident)
    if n.severity:
        meta.append(severity_long(n.severity))
    if (state := shown_state(n)):
        meta.append(f"state: {state}")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": " · ".join(meta), "weight": "Bolder",
         "color": _color(n.severity, resolved=n.kind.upper() == "RESOLVED"),
         "wrap": True},
        {"type": "TextBlock", "text": one_line(n.title), "size": "Large", "weight": "Bolder", "wrap": True},
    ]
    if body_text:
        body.append({"type": "TextBlock", "text": body_text, "wrap": True})
    if n.fields:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in page_fields(n)]})
    actions: list[dict[str, Any]] = []
    ack = offers_ack(n)
    if ack:
        actions.append({"type": "Action.OpenUrl", "title": BUTTON_LABELS["ack"], "url": ack, "style": "destructive"})
    actions += [{"type": "Action.OpenUrl", "title": name, "url": url} for name, url in page_links(n)]
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if actions:
        card["actions"] = actions
    return card


def teams_message(card: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [
        {"contentType": CONTENT_TYPE, "contentUrl": None, "content": card}
    ]}


def json_size(obj: Any) -> int:
    return len(json_bytes(obj))


def render_teams(n: Notification, *, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """The webhook body (message + Adaptive Card 1.4), body text cut until the whole is under max_bytes."""
    msg = teams_message(_teams_card(n, n.body))
    if json_size(msg) <= max_bytes:
        return msg
    lo, hi = 0, len(n.body)
    while lo < hi:  # longest body prefix that fits
        mid = (lo + hi + 1) // 2
        if json_size(teams_message(_teams_card(n, truncate(n.body, mid)))) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    msg = teams_message(_teams_card(n, truncate(n.body, lo) if lo else ""))
    if json_size(msg) > max_bytes:  # fields/links alone are too big: drop the facts, keep the page
        trimmed = Notification.from_json({**n.to_json(), "fields": {}, "body": ""})
        msg = teams_message(_teams_card(trimmed, truncate(n.body, 2000)))
    return msg


# --- card (bot) ----------------------------------------------------------------------------------------


def _when(dt: datetime) -> str:
    """Adaptive Card date functions show the time in each reader's own time zone and locale."""
    stamp = dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{{{{DATE({stamp},SHORT)}}}} {{{{TIME({stamp})}}}}"


def _action(verb: str, title: str, ref: str, *, style: str | None = None) -> dict[str, Any]:
    """An Action.Execute with an Action.Submit fallback carrying the same data."""
    data = {DATA_KEY: verb, "incident": ref}
    action: dict[str, Any] = {"type": "Action.Execute", "title": title, "verb": verb, "data": data,
                              "fallback": {"type": "Action.Submit", "title": title, "data": data}}
    if style:
        action["style"] = style
        action["fallback"]["style"] = style
    return action


def incident_card(card: IncidentCard) -> dict[str, Any]:
    """The incident card: headline, title, description, facts, the buttons still meaningful, and links."""
    facts = [{"title": "Severity", "value": severity_long(card.severity)},
             {"title": "State", "value": state_label(card.state, flapping=card.flapping)},
             *({"title": role_label(role), "value": name} for role, _, name in card.roles()),
             {"title": KIND_LABELS["INITIAL"], "value": _when(card.created_at)}]
    if card.acknowledged_by:
        facts.append({"title": "Acknowledged by",
                      "value": f"{card.acknowledged_by} after {fmt_duration(card.time_to_ack)}" if card.time_to_ack
                      else card.acknowledged_by})
    if card.time_to_resolve:
        facts.append({"title": "Resolved after", "value": fmt_duration(card.time_to_resolve)})
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"{card.ref} · {card.severity.upper()} · {card.state.upper()}",
         "weight": "Bolder", "color": _color(card.severity, resolved=card.state == "resolved"), "wrap": True},
        {"type": "TextBlock", "text": truncate(card.title, 500), "size": "Large", "weight": "Bolder", "wrap": True},
    ]
    if card.description and card.description != card.title:
        body.append({"type": "TextBlock", "text": truncate(card.description, MAX_TEXT), "wrap": True})
    body.append({"type": "FactSet", "facts": facts})
    actions: list[dict[str, Any]] = []
    for verb in card.buttons:
        if verb in ("ack", "monitor", "resolve"):
            actions.append(_action(verb, BUTTON_LABELS[verb], card.ref,
                                   style="positive" if verb == "resolve" else None))
        elif verb == "update":
            actions.append({"type": "Action.ShowCard", "title": BUTTON_LABELS["update"], "card": {
                "type": "AdaptiveCard", "version": "1.4",
                "body": [{"type": "Input.Text", "id": "text", "isMultiline": True, "maxLength": MAX_TEXT,
                          "placeholder": "What changed?", "isRequired": True, "errorMessage": "Write the update"}],
                "actions": [_action("update", "Post", card.ref)]}})
    if card.link.startswith(("https://", "http://")):
        actions.append({"type": "Action.OpenUrl", "title": BUTTON_LABELS["open"], "url": card.link})
    out: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": "1.4", "body": body,
                           "msteams": {"width": "Full"}}
    if actions:
        out["actions"] = actions
    return out


def declare_form() -> dict[str, Any]:
    """What `/incident` alone opens: severity and title, submitted as a `declare` action."""
    choices = [{"title": severity_long(s), "value": s} for s in SEVERITIES]
    return {"type": "AdaptiveCard", "$schema": SCHEMA, "version": "1.4", "body": [
        {"type": "TextBlock", "text": "Declare an incident", "size": "Large", "weight": "Bolder"},
        {"type": "Input.ChoiceSet", "id": "severity", "label": "Severity", "value": "sev3", "choices": choices,
         "isRequired": True},
        {"type": "Input.Text", "id": "title", "label": "Title", "maxLength": 500, "isRequired": True,
         "errorMessage": "An incident needs a title"},
    ], "actions": [{"type": "Action.Submit", "title": "Declare", "data": {DATA_KEY: "declare"}}]}


def note_text(note: Notification) -> str:
    """A thread reply for one incident change (the card itself shows the new state)."""
    word = kind_label(note.kind)
    return f"{word}: {truncate(note.body, MAX_TEXT)}" if note.body else word


def post_text(note: Notification) -> str:
    """A plain post in the incident conversation that belongs to no incident (an on-call handoff)."""
    return truncate(note.body or note.title, MAX_TEXT)


def note_card(note: Notification) -> dict[str, Any] | None:
    """A thread reply with a button (a reminder's Snooze) as an Adaptive Card; None: text alone."""
    snooze = snooze_button(note)
    if snooze is None or not note.incident:
        return None
    return answer_card(note_text(note), actions=[_action(SNOOZE_VERB, snooze[1], note.incident)])


def answer_card(text: str, *, actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A card of one text (what a pressed Snooze is replaced with: the answer to the press)."""
    out: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": "1.4",
                           "body": [{"type": "TextBlock", "text": truncate(text, MAX_TEXT), "wrap": True}]}
    if actions:
        out["actions"] = actions
    return out


def message_html(text: str) -> str:
    """Plain text as Teams message markup: `<INC-n>`-style placeholders must not vanish as HTML tags."""
    return "<br>".join(escape_html(line) for line in text.split("\n"))
