"""`/incident role` and `/incident note` typed in Teams over real HTTP (loopback Bot Connector): a person's
@mention names the holder by their Teams id, the incident card in the incident conversation lists the roles,
the new holder (no contact) gets what the role does in a 1:1 chat, refusals are answered and store nothing.
SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from core.models import AuditEntry, IncidentMessage
from core.rbac import Actor
from tests.teams.helpers import (
    BOT_ID,
    INCIDENT_CONV,
    OPERATOR,
    TEAMS_CONV,
    VIEWER,
    activity,
    bot_connector,
    card_of,
    card_text,
    plain,
    teams_config,
)
from tests.teams.test_http import post, teams_server
from tests.twoway.helpers import drive_dm_pages

BOB = "aad-bob"


def say(text: str, *, service_url: str, user: str = OPERATOR, people: dict[str, str] | None = None) -> dict[str, Any]:
    """`<at>Tocsin</at> incident <text>`, with a mention entity for the bot and one per `<at>Name</at>` of
    `people` (name -> AAD id), as Teams sends them."""
    entities = [{"type": "mention", "text": "<at>Tocsin</at>", "mentioned": {"id": BOT_ID, "name": "Tocsin"}}]
    for name, aad in (people or {}).items():
        entities.append({"type": "mention", "text": f"<at>{name}</at>",
                         "mentioned": {"id": f"29:{aad}", "name": name, "aadObjectId": aad}})
    return activity("message", text=f"<at>Tocsin</at> incident {text}", entities=entities, user=user,
                    service_url=service_url)


async def test_role_and_note_from_teams(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url, incident_conversation=INCIDENT_CONV))
        async with teams_server(ctx) as (url, rt):
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="Disk full on db-1", severity="sev2")
            await drive_dm_pages(ctx, rt.chat_senders["chat:teams"], "chat:teams")

            status, _ = await post(url, say("role INC-1 comms <at>Bob Builder</at>", service_url=bc.url,
                                            people={"Bob Builder": BOB}))
            assert status == 200
            answer = plain(bc.replies(TEAMS_CONV)[-1].json["text"])
            assert answer == ("INC-1: Bob Builder is now comms (assigned by Olga Operator); "
                              "1 private message(s) queued."), answer
            inc = await ctx.service.get(1)
            assert (inc.comms, inc.role_names) == (f"teams:{BOB}", {"comms": "Bob Builder"})

            # The card in the incident conversation now lists the roles; the thread says who took what.
            assert [r.outcome for r in await drive_dm_pages(ctx, rt.chat_senders["chat:teams"], "chat:teams")] \
                == ["delivered"]
            facts = {f["title"]: f["value"] for b in card_of(bc.updates(INCIDENT_CONV)[-1].json)["body"]
                     if b["type"] == "FactSet" for f in b["facts"]}
            assert facts["Commander"] == "cli:op" and facts["Comms"] == "Bob Builder"
            assert plain(bc.replies(INCIDENT_CONV)[-1].json["text"]).startswith("Role: Bob Builder is now comms")

            # Bob is no contact: the bot opens a 1:1 chat with his Teams id and tells him what comms does.
            assert [r.outcome for r in await drive_dm_pages(ctx, rt.chat_senders["teams_dm"], "teams_dm")] \
                == ["delivered"]
            [created] = [r.json for r in bc.created()]
            assert created["members"][0]["id"] == BOB
            dm_text = " ".join(plain(r.json.get("text")) for r in bc.replies(f"a:dm-{BOB}"))
            assert "You are now comms of INC-1 (Disk full on db-1)." in dm_text
            assert "post regular updates" in dm_text
            assert "Disk full on db-1" in card_text(card_of(bc.sends(f"a:dm-{BOB}")[0].json))

            # A note from Teams lands in the timeline and on the card's thread, paging nobody.
            status, _ = await post(url, say("note INC-1 Freed 40 GB on /var", service_url=bc.url))
            assert plain(bc.replies(TEAMS_CONV)[-1].json["text"]) == "INC-1: note added to the timeline."
            await drive_dm_pages(ctx, rt.chat_senders["chat:teams"], "chat:teams")
            assert plain(bc.replies(INCIDENT_CONV)[-1].json["text"]) == "Note: Freed 40 GB on /var"

            # A viewer may not name someone else, nor add notes: answered, nothing stored.
            async with ctx.db.sessions() as s:
                before = [int((await s.execute(select(func.count()).select_from(m))).scalar_one())
                          for m in (IncidentMessage, AuditEntry)]
            await post(url, say("role INC-1 scribe <at>Bob Builder</at>", service_url=bc.url, user=VIEWER,
                                people={"Bob Builder": BOB}))
            refusal = plain(bc.replies(TEAMS_CONV)[-1].json["text"])
            assert refusal.startswith(f"Not allowed: teams:{VIEWER} has role VIEWER, which may not assign "
                                      "incident roles to others"), refusal
            await post(url, say("note INC-1 hi", service_url=bc.url, user=VIEWER))
            assert "may not add notes" in plain(bc.replies(TEAMS_CONV)[-1].json["text"])
            await post(url, say("role INC-1 scribe <at>Nobody</at>", service_url=bc.url))  # no entity for it
            assert "unknown person '<at>Nobody</at>'" in plain(bc.replies(TEAMS_CONV)[-1].json["text"])
            async with ctx.db.sessions() as s:
                after = [int((await s.execute(select(func.count()).select_from(m))).scalar_one())
                         for m in (IncidentMessage, AuditEntry)]
            assert after == before

            # ... but may take the empty scribe role themselves.
            await post(url, say("role INC-1 scribe me", service_url=bc.url, user=VIEWER))
            assert plain(bc.replies(TEAMS_CONV)[-1].json["text"]).startswith("INC-1: Olga Operator took scribe")
            assert (await ctx.service.get(1)).scribe == f"teams:{VIEWER}"


async def test_declare_naming_the_commander_from_teams(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url))
        async with teams_server(ctx) as (url, _rt):
            await post(url, say("declare sev2 <at>Bob Builder</at> says DB is down --commander <at>Bob Builder</at>",
                                service_url=bc.url, people={"Bob Builder": BOB}))
            answer = plain(bc.replies(TEAMS_CONV)[-1].json["text"])
            assert answer.startswith("Declared INC-1 [sev2] <at>Bob Builder</at> says DB is down: ")
            assert answer.endswith("Commander: Bob Builder.")
            inc = await ctx.service.get(1)
            assert (inc.commander, inc.title) == (f"teams:{BOB}", "<at>Bob Builder</at> says DB is down")
