"""Adaptive Card 1.4 rendering for Teams: the incident card, the declare form, and the thread notes.

Pure functions from neutral data to plain dicts (no botbuilder types), so they are easy to test and to keep
if the SDK changes. Buttons are `Action.Execute` (Universal Actions, answered by an `adaptiveCard/action`
invoke that returns the refreshed card) with an `Action.Submit` fallback for clients without it (which
arrives as a message activity carrying `value`); both carry the same `data`, read by `bot.action_text`.
"""
from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from bot.surface import IncidentCard
from core.config import SEVERITIES
from core.delivery.message import Notification

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
DATA_KEY = "tocsin"
"""Key in an action's data naming our verb, so foreign card submissions are told apart from ours."""
MAX_TEXT = 2000
"""Teams rejects messages over about 28 KB; the title is capped at 500 by the core, this caps the rest."""

BUTTONS: dict[str, str] = {"ack": "Acknowledge", "monitor": "Monitoring", "resolve": "Resolve"}
KIND_WORDS: dict[str, str] = {"INITIAL": "New incident", "UPDATE": "Update", "BRIDGE": "Bridge",
                              "RESOLVED": "Resolved", "ACK": "Acknowledged", "MONITORING": "Monitoring",
                              "ESCALATION": "Escalation", "ONE_TIME": "Notice", "ALERT": "Alert"}
SEVERITY_WORDS: dict[str, str] = {"sev1": "critical", "sev2": "high", "sev3": "medium", "sev4": "low"}


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(dt: datetime) -> str:
    """Adaptive Card date functions show the time in each reader's own time zone and locale."""
    stamp = dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{{{{DATE({stamp},SHORT)}}}} {{{{TIME({stamp})}}}}"


def _color(card: IncidentCard) -> str:
    if card.state == "resolved":
        return "Good"
    return {"sev1": "Attention", "sev2": "Attention", "sev3": "Warning"}.get(card.severity, "Default")


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
    facts = [{"title": "Severity", "value": f"{card.severity.upper()} ({SEVERITY_WORDS.get(card.severity, '')})"},
             {"title": "State", "value": card.state.capitalize()},
             {"title": "Commander", "value": card.commander},
             {"title": "Declared", "value": _when(card.created_at)}]
    if card.acknowledged_by:
        facts.append({"title": "Acknowledged by",
                      "value": f"{card.acknowledged_by} after {card.time_to_ack}" if card.time_to_ack
                      else card.acknowledged_by})
    if card.time_to_resolve:
        facts.append({"title": "Resolved after", "value": card.time_to_resolve})
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"{card.ref} · {card.severity.upper()} · {card.state.upper()}",
         "weight": "Bolder", "color": _color(card), "wrap": True},
        {"type": "TextBlock", "text": _cut(card.title, 500), "size": "Large", "weight": "Bolder", "wrap": True},
    ]
    if card.description and card.description != card.title:
        body.append({"type": "TextBlock", "text": _cut(card.description), "wrap": True})
    body.append({"type": "FactSet", "facts": facts})
    actions: list[dict[str, Any]] = []
    for verb in card.buttons:
        if verb in BUTTONS:
            actions.append(_action(verb, BUTTONS[verb], card.ref,
                                   style="positive" if verb == "resolve" else None))
        elif verb == "update":
            actions.append({"type": "Action.ShowCard", "title": "Post update", "card": {
                "type": "AdaptiveCard", "version": "1.4",
                "body": [{"type": "Input.Text", "id": "text", "isMultiline": True, "maxLength": MAX_TEXT,
                          "placeholder": "What changed?", "isRequired": True, "errorMessage": "Write the update"}],
                "actions": [_action("update", "Post", card.ref)]}})
    if card.link.startswith(("https://", "http://")):
        actions.append({"type": "Action.OpenUrl", "title": "Open incident", "url": card.link})
    out: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": "1.4", "body": body,
                           "msteams": {"width": "Full"}}
    if actions:
        out["actions"] = actions
    return out


def declare_form() -> dict[str, Any]:
    """What `/incident` alone opens: severity and title, submitted as a `declare` action."""
    choices = [{"title": f"{s.upper()} ({SEVERITY_WORDS[s]})", "value": s} for s in SEVERITIES]
    return {"type": "AdaptiveCard", "$schema": SCHEMA, "version": "1.4", "body": [
        {"type": "TextBlock", "text": "Declare an incident", "size": "Large", "weight": "Bolder"},
        {"type": "Input.ChoiceSet", "id": "severity", "label": "Severity", "value": "sev3", "choices": choices,
         "isRequired": True},
        {"type": "Input.Text", "id": "title", "label": "Title", "maxLength": 500, "isRequired": True,
         "errorMessage": "An incident needs a title"},
    ], "actions": [{"type": "Action.Submit", "title": "Declare", "data": {DATA_KEY: "declare"}}]}


def note_text(note: Notification) -> str:
    """A thread reply for one incident change (the card itself shows the new state)."""
    word = KIND_WORDS.get(note.kind.upper(), note.kind.replace("_", " ").title())
    return f"{word}: {_cut(note.body)}" if note.body else word


def message_html(text: str) -> str:
    """Plain text as Teams message markup: `<INC-n>`-style placeholders must not vanish as HTML tags."""
    return "<br>".join(html.escape(line, quote=False) for line in text.split("\n"))
