"""Reading what people submit in Slack: the declare/update modals as Commands, and the answer they read.

The modals themselves are drawn in core/appearance/slack.py; this side turns their submissions into Commands.
"""
from __future__ import annotations

from typing import Any

from bot.commands import HELP, USAGE, Command
from bot.dispatch import Reply
from core.appearance.slack import TEXT_MAX, read_metadata
from core.appearance.vocabulary import escape_slack, truncate
from core.config import SEVERITIES, Config
from core.errors import InvalidInput
from core.validation import check_title


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
    try:  # the service's own rule, said inside the modal before it closes
        title = check_title(title)
    except InvalidInput as exc:
        errors["title"] = f"{str(exc)[:1].upper()}{str(exc)[1:]}."
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
    return truncate(escape_slack(text), TEXT_MAX)
