"""The Teams ActivityHandler: activities in, `/incident` commands through bot.dispatch, answers back.

A thin edge: pure translate functions (`command_text`, `actor_of`, `action_text`) turn an activity into the
text the one parser reads and the Actor the core checks; everything else is bot.dispatch and the core.
Typed commands, Action.Submit (a message carrying `value`) and Action.Execute (an `adaptiveCard/action`
invoke) all end in `run_text`, so roles, transitions and wording are the same as on every platform.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from botbuilder.core import ActivityHandler, CardFactory, MessageFactory, TurnContext
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    AdaptiveCardInvokeValue,
    ChannelAccount,
    ConversationReference,
)

from bot.commands import HELP
from bot.dispatch import Reply, run_text
from core.appearance.card import IncidentCard
from core.appearance.reminders import SNOOZE_REPEATED, SNOOZE_VERB
from core.appearance.teams import CONTENT_TYPE, DATA_KEY, answer_card, declare_form, incident_card, message_html
from core.conversations import ConversationStore
from core.errors import InvalidInput, NotFound
from core.incidents import IncidentService
from core.rbac import Actor
from core.seen import SeenKeys

log = logging.getLogger("tocsin.teams")

ERROR_TYPE = "application/vnd.microsoft.error"
INVOKE_VALUE_FIELDS = ("action", "authentication", "state")
INTERNAL_ERROR = "Something went wrong on our side and it has been logged; nothing may have changed. Try again."


# --- pure translation at the boundary -----------------------------------------------------------------


def command_text(activity: Activity) -> str:
    """The message text without the bot's own @mention (from the mention entities Teams sends), so
    `<at>Tocsin</at> incident declare ...` reads like `/incident declare ...`; bot.commands.strip_prefix
    drops the remaining prefix (other mention forms, `incident`, the slash)."""
    text = activity.text or ""
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        if (entity.type or "").lower() != "mention":
            continue
        props = entity.additional_properties or {}
        mentioned = props.get("mentioned")
        said = props.get("text")
        # Teams sends the tag as typed (`<at>Tocsin</at>`); only the bot's own mention is removed, so
        # mentions of people inside an update's text stay.
        if isinstance(mentioned, dict) and mentioned.get("id") == bot_id and isinstance(said, str) and said:
            text = text.replace(said, " ", 1)
    if _ROLE_COMMAND.match(text):
        text = _people(text, activity, bot_id)
    elif (named := _COMMANDER.search(text)) is not None:  # declare ... --commander <at>Bob</at>
        text = text[:named.end()] + _people(text[named.end():], activity, bot_id)
    return text.strip()


_ROLE_COMMAND = re.compile(r"\s*(?:/?incident\s+)?role\b", re.IGNORECASE)
_COMMANDER = re.compile(r"\s(?:--|\u2014)commander\s", re.IGNORECASE)


def _people(text: str, activity: Activity, bot_id: str | None) -> str:
    """In `role INC-1 comms <at>Bob</at>`, the person's mention becomes `<teams:<aad id>|Bob>`, the form the
    core reads (the tag alone carries only the display name; the entity has the id)."""
    for entity in activity.entities or []:
        props = entity.additional_properties or {}
        mentioned, said = props.get("mentioned"), props.get("text")
        if (entity.type or "").lower() != "mention" or not isinstance(mentioned, dict) or not said:
            continue
        uid = mentioned.get("aadObjectId") or mentioned.get("id")
        if uid and uid != bot_id and isinstance(said, str):
            name = " ".join(str(mentioned.get("name") or "").replace("|", " ").replace(">", " ").split())
            text = text.replace(said, f"<teams:{uid}|{name}>", 1)
    return text


def actor_of(activity: Activity) -> Actor:
    """`teams:<AAD object id>` (what config `access` maps to roles); the channel account id is the fallback
    for clients that send no AAD id (the Bot Framework Emulator)."""
    user: ChannelAccount | None = activity.from_property
    uid = (user.aad_object_id or user.id) if user else None
    if not uid:
        raise ValueError("activity has no from.id")
    return Actor(f"teams:{uid}", source="teams", display=(user.name if user else None) or None)


def _word(value: Any) -> str | None:
    """One whitespace-free token from card data, or None (so data cannot smuggle extra arguments)."""
    if not isinstance(value, (str, int)):
        return None
    parts = str(value).split()
    return parts[0] if len(parts) == 1 else None


def action_text(data: dict[str, Any], verb: str | None = None) -> str | None:
    """A card action's data (plus inputs) as command text for the one parser; None if it is not ours."""
    verb = _word(data.get(DATA_KEY)) or _word(verb)
    if verb is None:
        return None
    ref = _word(data.get("incident")) or ""
    if verb in ("ack", "monitor", "resolve", "snooze"):
        return f"{verb} {ref}".strip()
    if verb == "update":
        text = data.get("text")
        return f"update {ref} {text if isinstance(text, str) else ''}".strip()
    if verb == "declare":
        sev, title = data.get("severity"), data.get("title")
        return f"declare {_word(sev) or ''} {title if isinstance(title, str) else ''}".strip()
    return verb  # unknown verbs get the parser's "Unknown command" answer


def card_attachment(card: IncidentCard) -> Any:
    return CardFactory.adaptive_card(incident_card(card))


def outgoing(reference: ConversationReference, *, reply_to: str | None, text: str | None = None,
             attachment: Any = None) -> Activity:
    """A message addressed by `reference`; a thread reply when `reply_to` names the activity to answer.

    Built here rather than by TurnContext.send_activity, which always replies to the turn's own activity:
    wrong for a proactive post (a synthetic continuation activity) and for a button (answer the card)."""
    out = Activity(type=ActivityTypes.message, text=text,
                   attachments=[attachment] if attachment is not None else None)
    TurnContext.apply_conversation_reference(out, reference)
    out.reply_to_id = reply_to
    return out


def personal_user(activity: Activity) -> str | None:
    """The person whose 1:1 chat with the bot this activity comes from (their `actor_of` id, the one
    contacts[].chat.teams holds), or None outside a personal chat."""
    conv = activity.conversation
    if conv is None or conv.conversation_type != "personal":
        return None
    user = activity.from_property
    return (user.aad_object_id or user.id) if user else None


def dedup_key(activity: Activity) -> str | None:
    conv = activity.conversation.id if activity.conversation else None
    return f"teams:{conv}:{activity.id}" if activity.id and conv else None


# --- the handler ----------------------------------------------------------------------------------------


class TeamsBot(ActivityHandler):
    """Runs commands and card actions as the Teams user; answers in the conversation.

    `cards_follow` is true when the incident conversation's cards are kept by the chat surface (the
    delivery queue); then a declare answers with text only and the card appears there, instead of here.
    """

    def __init__(self, *, service: IncidentService, seen: SeenKeys, cards_follow: bool,
                 conversations: ConversationStore | None = None) -> None:
        self.service = service
        self.seen = seen
        self.cards_follow = cards_follow
        self.conversations = conversations or ConversationStore(service.db, service.clock)
        """Each person's 1:1 chat reference (from installs and personal messages), for teams_dm pages."""

    async def on_turn(self, turn_context: TurnContext) -> None:
        """A failed turn still gets an answer in the conversation; the error goes on to the edge (500)."""
        activity = turn_context.activity
        if activity.type == ActivityTypes.invoke and isinstance(activity.value, dict):
            # botbuilder builds AdaptiveCardInvokeValue(**value) and logs a warning for each field it does
            # not model (Teams adds `trigger`): keep what it reads, so every button press is not a warning.
            activity.value = {k: v for k, v in activity.value.items() if k in INVOKE_VALUE_FIELDS}
        try:
            await super().on_turn(turn_context)
        except Exception:
            if turn_context.activity.type == ActivityTypes.message:
                try:
                    await self._say(turn_context, INTERNAL_ERROR, to=turn_context.activity.id)
                except Exception:  # the original error is what matters; this one is only logged
                    log.exception("teams.error_notice.failed")
            raise

    # messages: typed commands and Action.Submit --------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if not await self._first_time(activity):
            return
        await self._remember(activity)
        if isinstance(activity.value, dict) and DATA_KEY in activity.value:
            await self._on_submit(turn_context, activity.value)
            return
        text = command_text(activity)
        cmd, reply = await run_text(self.service, actor_of(activity), text)
        self._log(activity, cmd.verb if cmd else None, reply)
        if cmd is not None and cmd.verb == "form":
            await turn_context.send_activity(MessageFactory.attachment(CardFactory.adaptive_card(declare_form())))
            return
        await self._answer(turn_context, reply, verb=cmd.verb if cmd else None, to=activity.id)

    async def _on_submit(self, turn_context: TurnContext, data: dict[str, Any]) -> None:
        """Action.Submit: run it, then replace the card it came from (Teams does not, unlike Execute)."""
        activity = turn_context.activity
        text = action_text(data) or ""
        cmd, reply = await run_text(self.service, actor_of(activity), text)
        self._log(activity, cmd.verb if cmd else None, reply, button=True)
        card_id = activity.reply_to_id
        if cmd is not None and cmd.verb == "snooze":  # a reminder's button: answer under it, keep it
            await self._say(turn_context, reply.text, to=card_id)
            return
        if cmd is not None and cmd.verb == "declare":
            await self._answer(turn_context, reply, verb="declare", to=card_id)
            return
        if not reply.ok or reply.incident_id is None:
            await self._answer(turn_context, reply, verb=cmd.verb if cmd else None, to=card_id)
            return
        if card_id:
            inc = await self.service.get(reply.incident_id)
            card = IncidentCard.of(inc, self.service.cfg.server.public_url)
            await turn_context.update_activity(Activity(id=card_id, type=ActivityTypes.message,
                                                        attachments=[card_attachment(card)]))

    # invokes: Action.Execute ------------------------------------------------------------------------------

    async def on_adaptive_card_invoke(self, turn_context: TurnContext,
                                      invoke_value: AdaptiveCardInvokeValue) -> AdaptiveCardInvokeResponse:
        """Action.Execute: run it and return the refreshed card, which Teams puts in place of the old one."""
        activity = turn_context.activity
        action: dict[str, Any] = invoke_value.action if isinstance(invoke_value.action, dict) else {}
        raw = action.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        text = action_text(data, action.get("verb"))
        ref = _word(data.get("incident"))
        if not await self._first_time(activity):
            if text is not None and text.split()[0] == SNOOZE_VERB:  # keep the reminder card, not the incident's
                return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE,
                                                  value=answer_card(SNOOZE_REPEATED))
            return await self._card_response(ref, None)
        if text is None:
            return _error_response(400, "BadRequest", "This card action is not one of Tocsin's.")
        cmd, reply = await run_text(self.service, actor_of(activity), text)
        self._log(activity, cmd.verb if cmd else None, reply, button=True)
        if cmd is not None and cmd.verb == "snooze":
            # A reminder's Snooze: the reminder card becomes the answer (until when, or why not).
            return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE, value=answer_card(reply.text))
        if not reply.ok:
            # Refusals and conflicts are answered in the card's thread, where everyone sees the card.
            await self._say(turn_context, reply.text, to=activity.reply_to_id)
        return await self._card_response(ref, reply)

    async def _card_response(self, ref: str | None, reply: Reply | None) -> AdaptiveCardInvokeResponse:
        target: str | int | None = reply.incident_id if reply and reply.incident_id else ref
        if target is None:
            return _error_response(400, "BadRequest", reply.text if reply else "No incident named.")
        try:
            inc = await self.service.get(target)
        except (NotFound, InvalidInput) as exc:
            return _error_response(404, "NotFound", str(exc))
        card = IncidentCard.of(inc, self.service.cfg.server.public_url)
        return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE, value=incident_card(card))

    # conversation updates: introduce ourselves where we were added --------------------------------------

    async def on_members_added_activity(self, members_added: list[ChannelAccount],
                                        turn_context: TurnContext) -> None:
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        await self._remember(activity)
        if not any(m.id == bot_id for m in members_added or []):
            return
        conv = activity.conversation.id if activity.conversation else ""
        log.info("teams.installed", extra={"conversation": conv, "service_url": activity.service_url,
                                           "tenant": getattr(activity.conversation, "tenant_id", None)})
        await turn_context.send_activity(MessageFactory.text(message_html(
            "Tocsin is here. Mention me with `incident help` to see the commands.\n"
            f"To get every incident card in this conversation, set teams.incident_conversation to {conv}")))

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        await self._remember(turn_context.activity)

    async def on_installation_update_remove(self, turn_context: TurnContext) -> None:
        """The person removed the app: the stored chat is gone with it (a DM page opens a new one or fails)."""
        user = personal_user(turn_context.activity)
        if user:
            await self.conversations.forget("teams", user)

    async def _remember(self, activity: Activity) -> None:
        """Keep the reference of a person's 1:1 chat with the bot (personal install, or a message there), so a
        teams_dm page reaches them through it before asking the connector to open a chat."""
        user = personal_user(activity)
        if user:
            reference = TurnContext.get_conversation_reference(activity)
            await self.conversations.save("teams", user, reference.serialize())

    # helpers -------------------------------------------------------------------------------------------------

    async def _first_time(self, activity: Activity) -> bool:
        """Bot Framework redelivers when we answer slowly; each activity acts once."""
        key = dedup_key(activity)
        if key is None or await self.seen.first_time(key):
            return True
        log.info("teams.duplicate", extra={"key": key})
        return False

    async def _answer(self, turn_context: TurnContext, reply: Reply, *, verb: str | None, to: str | None) -> None:
        """The dispatcher's answer; a declare where no surface keeps cards also gets the card here."""
        if reply.ok and verb == "declare" and reply.incident_id is not None and not self.cards_follow:
            inc = await self.service.get(reply.incident_id)
            card = IncidentCard.of(inc, self.service.cfg.server.public_url)
            await self._say(turn_context, reply.text, to=to, attachment=card_attachment(card))
            return
        await self._say(turn_context, reply.text or HELP, to=to)

    @staticmethod
    async def _say(turn_context: TurnContext, text: str, *, to: str | None, attachment: Any = None) -> None:
        """Post in this conversation, as a reply to activity `to` (the command, or the card's thread)."""
        reference = TurnContext.get_conversation_reference(turn_context.activity)
        out = outgoing(reference, reply_to=to, text=message_html(text), attachment=attachment)
        await turn_context.adapter.send_activities(turn_context, [out])

    @staticmethod
    def _log(activity: Activity, verb: str | None, reply: Reply, *, button: bool = False) -> None:
        log.info("teams.command", extra={"verb": verb, "ok": reply.ok, "button": button,
                                         "conversation": activity.conversation.id if activity.conversation
                                         else None, "actor": actor_of(activity).identity,
                                         "incident_id": reply.incident_id})


def _error_response(status: int, code: str, message: str) -> AdaptiveCardInvokeResponse:
    return AdaptiveCardInvokeResponse(status_code=status, type=ERROR_TYPE,
                                      value={"code": code, "message": message[:500]})
