"""Slack's declare/update modals: opening them (mixed into SlackAdapter), reading their submissions as
Commands, and the answer people read.

The modals themselves are drawn in core/appearance/slack.py; this side opens them and turns their
submissions into Commands.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import HELP, USAGE, Command
from bot.dispatch import Reply
from bot.slack.answers import Answers
from bot.slack.requests import channel_of
from core.appearance.card import IncidentCard
from core.appearance.slack import TEXT_MAX, declare_modal, read_metadata, update_modal
from core.appearance.vocabulary import escape_slack, truncate
from core.config import SEVERITIES, Config
from core.errors import Forbidden, InvalidInput, NotFound
from core.rbac import Actor, Permission, require
from core.validation import check_title

if TYPE_CHECKING:
    from core.incidents import IncidentService

log = logging.getLogger("tocsin.slack")


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


class Forms(Answers):
    """Opening the modals (refusals are answered to the user). Needs `service` and `client`."""

    service: IncidentService
    client: AsyncWebClient

    async def _open_declare_form(self, body: dict[str, Any], actor: Actor) -> None:
        """Bare `/incident`: the form, unless the user may not declare anyway (say so now, not after
        they typed it all)."""
        try:
            require(self.service.cfg, actor, Permission.SEND_INCIDENTS)
        except Forbidden as exc:
            await self._answer(body, answer_text(Reply(f"Not allowed: {exc}", ok=False), Command("declare")),
                               in_channel=False)
            return
        view = declare_modal(self.service.cfg, channel=body.get("channel_id"),
                             response_url=body.get("response_url"))
        try:
            await self.client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            log.warning("slack.views_open.failed", extra={"error": exc.response.get("error")})
            text = (f"The declare form could not open (Slack said: {exc.response.get('error')}). "
                    "Use `/incident declare <sev1..sev4> <title>`.")
            await self._answer(body, escape_slack(text), in_channel=False)

    async def _open_update_form(self, body: dict[str, Any], actor: Actor, incident_id: int) -> None:
        try:
            require(self.service.cfg, actor, Permission.SEND_INCIDENTS)
            inc = await self.service.get(incident_id, actor=actor)
        except (Forbidden, NotFound) as exc:
            prefix = "Not allowed: " if isinstance(exc, Forbidden) else ""
            await self._tell_user(body, answer_text(Reply(f"{prefix}{exc}", ok=False), Command("update")))
            return
        card = IncidentCard.of(inc, self.service.cfg.server.public_url)
        if not card.open:
            await self._tell_user(body, f"{card.ref} is resolved; it takes no more updates.")
            return
        try:
            await self.client.views_open(trigger_id=body["trigger_id"],
                                         view=update_modal(card, channel=channel_of(body)))
        except SlackApiError as exc:
            log.warning("slack.views_open.failed", extra={"error": exc.response.get("error")})
            text = (f"The update form could not open (Slack said: {exc.response.get('error')}). "
                    f"Use `/incident update {card.ref} <text>`.")
            await self._tell_user(body, escape_slack(text))
