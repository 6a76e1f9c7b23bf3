"""The Slack bot end to end: signed requests into the real server app, a loopback Web API out, and the
database and audit log checked after each step. Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode


from core.appearance.slack import DECLARE_VIEW, UPDATE_VIEW
from core.incidents import IncidentService
from core.rbac import Actor
from tests.slack.conftest import SlackEnv
from tests.slack.standin import (
    INCIDENT_CHANNEL,
    action_body,
    select_value,
    sign,
    slash_body,
    text_value,
    view_body,
)
from tests.stand_ins.http import retry_after


def actions_of(blocks: list[dict[str, Any]]) -> list[str]:
    return [el["action_id"] for b in blocks if b["type"] == "actions" for el in b["elements"]]


def fields_of(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", []))


# --- the incident lifecycle from Slack ----------------------------------------------------------------


async def test_declare_ack_update_monitor_resolve_from_slack(env: SlackEnv) -> None:
    status, answers = await env.command("declare sev2 Checkout is down")
    assert status == 200
    [inc] = await env.incidents()
    assert (inc.ref, inc.severity, inc.state, inc.commander) == ("INC-1", "sev2", "open", "slack:UOP")
    [entry] = await env.audit("incident.declare")
    assert (entry.actor, entry.source, entry.resource) == ("slack:UOP", "slack", "INC-1")
    assert answers == [{"text": "Declared INC-1 [sev2] Checkout is down: 2 pages queued.",
                        "response_type": "in_channel", "replace_original": False}]

    # The card appears in the incident channel with all four buttons.
    assert [r.outcome for r in await env.sync_cards()] == ["delivered"]
    [card] = env.api.posts(top=True)
    assert card["channel"] == INCIDENT_CHANNEL
    assert actions_of(card["blocks"]) == ["incident.ack:1", "incident.update:1", "incident.monitor:1",
                                          "incident.resolve:1", "incident.open:1"]
    assert "*Commander*\n<@UOP>" in fields_of(card["blocks"])
    card_ts = "1700000000.000001"

    # Acknowledge (3 minutes in): done as the presser; the card loses its Acknowledge button; the thread
    # says who.
    env.ctx.clock.advance(minutes=3)
    assert await env.press("ack", 1, user="UADMIN") == 200
    [inc] = await env.incidents()
    assert inc.acknowledged_by == "slack:UADMIN"
    assert [e.actor for e in await env.audit("incident.ack")] == ["slack:UADMIN"]
    await env.sync_cards()
    [upd] = env.api.calls("chat.update")
    assert upd["ts"] == card_ts and upd["channel"] == INCIDENT_CHANNEL
    assert actions_of(upd["blocks"]) == ["incident.update:1", "incident.monitor:1", "incident.resolve:1",
                                         "incident.open:1"]
    [reply] = env.api.posts(thread_ts=card_ts)
    assert "*Acknowledged*" in reply["text"] and "uadmin" in reply["text"]
    assert env.api.calls("chat.postEphemeral") == []  # success speaks through the card, not to the presser

    # Add update: the button opens a modal; submitting it posts the update as the submitter.
    assert await env.press("update", 1) == 200
    [opened] = env.api.calls("views.open")
    assert opened["view"]["callback_id"] == UPDATE_VIEW and opened["trigger_id"].startswith("trig-btn-")
    status, body = await env.submit(opened["view"], {"text": text_value("Rolled back the deploy")})
    assert (status, body) == (200, "")
    assert [e.actor for e in await env.audit("incident.update")] == ["slack:UOP"]
    await env.sync_cards()
    assert "Rolled back the deploy" in env.api.posts(thread_ts=card_ts)[-1]["text"]

    # Monitoring, then Resolve.
    assert await env.press("monitor", 1) == 200
    assert (await env.incidents())[0].state == "monitoring"
    await env.sync_cards()
    last = env.api.calls("chat.update")[-1]
    assert actions_of(last["blocks"]) == ["incident.update:1", "incident.resolve:1", "incident.open:1"]
    env.ctx.clock.advance(minutes=40)
    assert await env.press("resolve", 1) == 200
    [inc] = await env.incidents()
    assert inc.state == "resolved"
    assert [e.action for e in await env.audit()] == ["incident.declare", "incident.ack", "incident.update",
                                                     "incident.monitor", "incident.resolve"]
    await env.sync_cards()
    final = env.api.calls("chat.update")[-1]
    assert actions_of(final["blocks"]) == ["incident.open:1"]  # the actions go away, the link stays
    assert "*Time to ack*\n3m00s" in fields_of(final["blocks"])
    assert "*Time to resolve*\n43m00s" in fields_of(final["blocks"])
    kinds = [p["text"].split("*")[1] for p in env.api.posts(thread_ts=card_ts)]
    assert kinds == ["Acknowledged", "Update", "Monitoring", "Resolved"]
    assert env.api.posts(thread_ts=card_ts)[-1]["reply_broadcast"] is True

    # A late press on the resolved card is refused to the presser, nothing changes.
    before = await env.audit_count()
    assert await env.press("resolve", 1) == 200
    [eph] = env.api.calls("chat.postEphemeral")
    assert eph["user"] == "UOP" and eph["channel"] == INCIDENT_CHANNEL and "already resolved" in eph["text"]
    assert await env.audit_count() == before


async def test_bare_incident_opens_declare_modal_and_submission_declares(env: SlackEnv) -> None:
    status, answers = await env.command("", trigger="trig-form")
    assert status == 200 and answers == []
    [opened] = env.api.calls("views.open")
    view = opened["view"]
    assert opened["trigger_id"] == "trig-form" and view["callback_id"] == DECLARE_VIEW
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert list(blocks) == ["title", "severity", "contact_list", "description"]
    assert [o["value"] for o in blocks["severity"]["element"]["options"]] == ["sev1", "sev2", "sev3", "sev4"]
    assert [o["value"] for o in blocks["contact_list"]["element"]["options"]] == ["oncall", "leads"]

    # An empty title is refused inside the modal (errors in the ack), and nothing is declared.
    status, body = await env.submit(view, {"title": text_value("  "), "severity": select_value("sev1"),
                                           "contact_list": select_value(None), "description": text_value("")})
    assert status == 200 and json.loads(body) == {"response_action": "errors",
                                                  "errors": {"title": "An incident needs a title."}}
    assert await env.incidents() == []

    status, body = await env.submit(view, {"title": text_value("Payments failing"),
                                           "severity": select_value("sev1"),
                                           "contact_list": select_value("leads"),
                                           "description": text_value("5xx on /pay since 10:02")})
    assert (status, body) == (200, "")
    [inc] = await env.incidents()
    assert (inc.title, inc.severity, inc.contact_list, inc.description, inc.commander) == (
        "Payments failing", "sev1", "leads", "5xx on /pay since 10:02", "slack:UOP")
    [entry] = await env.audit("incident.declare")
    assert json.loads(entry.details)["contact_list"] == "leads"
    # The answer travels back through the slash command's response_url kept in the modal.
    [answer] = env.api.responses(1)
    assert answer["response_type"] == "in_channel" and answer["text"].startswith("Declared INC-1 [sev1]")


async def test_card_follows_incidents_declared_elsewhere(env: SlackEnv) -> None:
    """Same incident everywhere: a CLI declare gets a Slack card; a CLI ack edits it and replies."""
    service: IncidentService = env.ctx.service
    await service.declare(actor=Actor("cli:op", "cli"), title="Disk full on db-3", severity="sev3")
    await env.sync_cards()
    [card] = env.api.posts(top=True)
    assert card["blocks"][0]["text"]["text"] == "INC-1: Disk full on db-3"
    assert "*Commander*\ncli:op" in fields_of(card["blocks"])
    await service.acknowledge(1, actor=Actor("cli:admin", "cli"))
    await env.sync_cards()
    assert "incident.ack:1" not in actions_of(env.api.calls("chat.update")[0]["blocks"])
    assert "Acknowledged by cli:admin" in env.api.posts(thread_ts="1700000000.000001")[0]["text"]


async def test_card_follows_cli_incident_through_the_delivery_worker(make_slack_env: Any) -> None:
    """With the worker running (as in `tocsin run`), the queued chat:slack delivery reaches Slack
    by itself."""
    env: SlackEnv = await make_slack_env(worker={"enabled": True, "poll_seconds": 0.2})
    await env.ctx.service.declare(actor=Actor("cli:op", "cli"), title="Queue backlog", severity="sev2")
    [card] = await env.api.wait_for(1, "/api/chat.postMessage", timeout=10)
    assert card.json["channel"] == INCIDENT_CHANNEL
    assert card.json["blocks"][0]["text"]["text"] == "INC-1: Queue backlog"


async def test_every_change_is_a_thread_reply(make_slack_env: Any) -> None:
    """BRIDGE and ESCALATION (and UPDATE/ACK/MONITORING/RESOLVED above) each reply in the card's thread."""
    env: SlackEnv = await make_slack_env(
        escalation_policies=[{"name": "db",
                              "levels": [{"wait_minutes": 5, "targets": {"lists": ["leads"]}}]}],
        routing={"rules": [{"name": "all", "targets": {"lists": ["oncall"]}, "escalation_policy": "db"}]})
    await env.command("declare sev1 Replica lag")
    await env.sync_cards()
    await env.command("bridge INC-1 https://meet.example/inc1 join here")
    _, [answer] = await env.command("escalate INC-1")
    assert answer["text"].startswith("INC-1: escalated to level 1, ")
    await env.sync_cards()
    replies = env.api.posts(thread_ts="1700000000.000001")
    assert [r["text"].split("*")[1] for r in replies] == ["Bridge", "Escalation"]
    assert "https://meet.example/inc1" in replies[0]["text"] and "level 1" in replies[1]["text"]
    assert len(env.api.calls("chat.update")) == 2  # and the card is refreshed each time


async def test_url_verification_is_answered_by_bolt(env: SlackEnv) -> None:
    body = json.dumps({"type": "url_verification", "token": "legacy", "challenge": "c-123"})
    resp = await env.client.post("/slack/events", data=body,
                                 headers={"Content-Type": "application/json", **sign(body)})
    assert resp.status == 200 and (await resp.json()) == {"challenge": "c-123"}


async def test_update_form_needs_text(env: SlackEnv) -> None:
    await env.command("declare sev3 x")
    await env.press("update", 1)
    view = env.api.calls("views.open")[0]["view"]
    status, body = await env.submit(view, {"text": text_value("   ")})
    assert status == 200 and json.loads(body)["errors"] == {"text": "Write the update."}
    assert await env.audit("incident.update") == []


# --- errors are answered, never silent ------------------------------------------------------------------


async def test_bad_commands_answer_ephemerally_with_usage(env: SlackEnv) -> None:
    cases = {
        "frobnicate INC-1": "Unknown command 'frobnicate'",
        "declare": "`declare` needs a severity and a title.",
        "declare sev9 x": "'sev9' is not a severity",
        "ack": "`ack` needs an incident id like INC-12.",
        "update INC-1": "`update` needs the text of the update.",
        "ack INC-999": "no incident INC-999",
        "resolve INC-42 done": "no incident INC-42",
    }
    for text, problem in cases.items():
        status, answers = await env.command(text)
        assert status == 200, text
        [answer] = answers
        assert answer["response_type"] == "ephemeral", text
        assert problem in answer["text"], (text, answer["text"])
        assert "Usage:" in answer["text"] or "Incident commands:" in answer["text"], answer["text"]
        assert "Traceback" not in answer["text"]
    assert await env.incidents() == [] and await env.audit_count() == 0


async def test_status_list_and_help_answer_only_the_asker(env: SlackEnv) -> None:
    await env.command("declare sev3 Slow search")
    for text, needle in [("status INC-1", "Commander: slack:UOP"), ("list", "INC-1 [sev3] open"),
                         ("help", "Incident commands:")]:
        _, [answer] = await env.command(text)
        assert answer["response_type"] == "ephemeral" and needle in answer["text"]


async def test_commands_typed_in_the_incident_channel_answer_ephemerally(env: SlackEnv) -> None:
    _, [answer] = await env.command("declare sev4 Typo on status page", channel=INCIDENT_CHANNEL)
    assert answer["response_type"] == "ephemeral"  # the card carries the news there


async def test_viewer_is_refused_everywhere_and_nothing_changes(env: SlackEnv) -> None:
    await env.command("declare sev2 API errors")  # by UOP (operator)
    before = await env.audit_count()

    _, [answer] = await env.command("declare sev1 I am a viewer", user="UVIEW")
    assert answer["response_type"] == "ephemeral"
    assert "Not allowed: slack:UVIEW has role VIEWER" in answer["text"] and "Usage:" in answer["text"]

    _, [answer] = await env.command("", user="UVIEW")  # no form for someone who may not declare
    assert "Not allowed" in answer["text"] and env.api.calls("views.open") == []

    for verb in ("ack", "monitor", "resolve", "update"):
        assert await env.press(verb, 1, user="UVIEW") == 200
    ephemerals = env.api.calls("chat.postEphemeral")
    assert len(ephemerals) == 4
    for e in ephemerals:
        assert e["user"] == "UVIEW" and "Not allowed: slack:UVIEW has role VIEWER" in e["text"]
    assert env.api.calls("views.open") == []
    [inc] = await env.incidents()
    assert (inc.state, inc.acknowledged_at) == ("open", None)
    assert await env.audit_count() == before


async def test_unexpected_failure_is_logged_and_told_not_shown(env: SlackEnv, monkeypatch: Any,
                                                                caplog: Any) -> None:
    async def broken(**_kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(env.ctx.service, "declare", broken)
    _, [answer] = await env.command("declare sev1 boom")
    assert answer["response_type"] == "ephemeral"
    assert "Something went wrong on our side" in answer["text"] and "fire" not in answer["text"]
    assert any(r.message == "slack.work.failed" and r.exc_info for r in caplog.records)


# --- ack first, work after ----------------------------------------------------------------------------------


async def test_http_answer_returns_before_the_service_work(env: SlackEnv) -> None:
    """The 200 comes back while the command's work is still blocked; the work finishes afterwards."""
    gate = asyncio.Event()

    async def slow(_event: object) -> None:  # runs inside the service call, after the commit
        await gate.wait()

    env.ctx.service.events.subscribe(slow)
    body = slash_body("declare sev2 Slow path", trigger="trig-slow",
                      response_url=env.api.response_url("slow"))
    started = time.perf_counter()
    status, text = await env.post(body, drain=False)
    elapsed = time.perf_counter() - started
    assert (status, text) == (200, "") and elapsed < 1.0
    assert env.api.responses("slow") == []  # the command has not answered yet
    gate.set()
    await env.adapter.drain()
    assert env.api.responses("slow")[0]["text"].startswith("Declared INC-1")


# --- security ---------------------------------------------------------------------------------------------


async def test_forged_stale_and_unsigned_requests_get_401_and_change_nothing(env: SlackEnv) -> None:
    body = slash_body("declare sev1 forged", trigger="trig-x", response_url=env.api.response_url("x"))
    now = int(time.time())
    bad = [
        sign(body, secret="not-the-secret"),                                   # forged
        {"X-Slack-Request-Timestamp": str(now)},                               # no signature
        {},                                                                     # nothing
        sign(body, ts=now - 301),                                               # replayed: 5 min + 1 s old
        sign(body, ts=now + 400),                                               # from the future
        {**sign(body), "X-Slack-Signature": sign(body)["X-Slack-Signature"][:-2] + "00"},
        {"X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=00"},
        sign(body + "&text=tampered"),                                          # signed another body
    ]
    for headers in bad:
        status, _ = await env.post(body, headers=headers)
        assert status == 401, headers
    status, _ = await env.post("payload=%7Bnot-json", headers=sign("something else"))
    assert status == 401
    assert await env.incidents() == [] and await env.audit_count() == 0
    assert env.api.requests == []  # not even auth.test


async def test_retried_deliveries_run_once(env: SlackEnv) -> None:
    """X-Slack-Retry-Num retries (and a retry racing the original) are acked with 200 and do nothing."""
    body = slash_body("declare sev2 Retried", trigger="trig-r", response_url=env.api.response_url("r"))
    assert (await env.post(body))[0] == 200
    for n in (1, 2):
        assert (await env.post(body, retry=n))[0] == 200  # re-signed with a fresh timestamp, as Slack does
    body2 = slash_body("declare sev2 Raced", trigger="trig-race", response_url=env.api.response_url("race"))
    statuses = await asyncio.gather(env.post(body2, drain=False), env.post(body2, retry=1, drain=False))
    await env.adapter.drain()
    assert [s for s, _ in statuses] == [200, 200]
    assert [i.title for i in await env.incidents()] == ["Retried", "Raced"]
    assert len(await env.audit("incident.declare")) == 2
    assert len(env.api.responses("r")) == 1 and len(env.api.responses("race")) == 1

    # A button press retried: one ack, and no "already acknowledged" noise for the retry.
    press = action_body("incident.ack:1", action_ts="1700000200.000001",
                        response_url=env.api.response_url("b"))
    assert (await env.post(press))[0] == 200
    assert (await env.post(press, retry=1))[0] == 200
    assert len(await env.audit("incident.ack")) == 1 and env.api.calls("chat.postEphemeral") == []

    # A modal submission retried: one update.
    await env.press("update", 1)
    view = env.api.calls("views.open")[0]["view"]
    sub = view_body(view, {"text": text_value("Once only")}, view_id="VONCE")
    assert (await env.post(sub))[0] == 200
    assert (await env.post(sub, retry=1))[0] == 200
    assert len(await env.audit("incident.update")) == 1


async def test_dedup_keys_are_pruned_after_a_day(env: SlackEnv) -> None:
    await env.command("help", trigger="trig-old")
    assert await env.ctx.seen.result("slack:command:trig-old") is not None
    env.ctx.clock.advance(days=2)
    await env.command("help", trigger="trig-new")
    await env.ctx.seen.prune()  # what the hourly job of `tocsin run` does
    assert await env.ctx.seen.result("slack:command:trig-old") is None
    assert await env.ctx.seen.result("slack:command:trig-new") is not None


async def test_malformed_requests(env: SlackEnv) -> None:
    # A signed slash command without user_id / trigger_id: 400, nothing runs.
    status, text = await env.post("command=%2Fincident&text=declare+sev1+x&channel_id=C1")
    assert status == 400 and "slash command without user_id, trigger_id" in text
    # A signed body whose payload is not JSON, or JSON of the wrong shape: 400.
    for body in ("payload=%7Bnot-json", "payload=%5B1%2C2%5D",
                 urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "UOP"},
                                                   "actions": []})}),
                 urlencode({"payload": json.dumps({"type": "view_submission", "user": {"id": "UOP"}})})):
        status, _ = await env.post(body)
        assert status == 400, body
    # A signed form that is no Slack request at all: bolt does not handle it.
    status, _ = await env.post("foo=bar")
    assert status == 404
    # An unknown action id is acknowledged and explained to the presser; nothing changes.
    status, _ = await env.post(action_body("incident.explode:1", action_ts="1.1", response_url="http://x"))
    assert status == 200
    [eph] = env.api.calls("chat.postEphemeral")
    assert "not one Tocsin knows" in eph["text"]
    assert await env.incidents() == [] and await env.audit_count() == 0


# --- rate limits ------------------------------------------------------------------------------------------


async def test_interactive_answers_wait_out_429(env: SlackEnv) -> None:
    env.api.script("/response/*", retry_after(1))
    env.api.script("/api/chat.postEphemeral", retry_after(1))
    started = time.perf_counter()
    _, answers = await env.command("ack INC-7")
    assert len(answers) == 2  # the throttled post, then the same answer again after Retry-After
    assert answers[0] == answers[1] and "no incident INC-7" in answers[1]["text"]
    assert await env.press("explode", 1) == 200  # unknown action -> ephemeral, throttled once
    assert len(env.api.requests_to("/api/chat.postEphemeral")) == 2
    assert time.perf_counter() - started >= 2.0


async def test_failed_card_update_never_blocks_the_incident(env: SlackEnv) -> None:
    env.api.script("/api/chat.postMessage", (503, {"ok": False, "error": "service_unavailable"}))
    _, [answer] = await env.command("declare sev1 Slack is down too")
    assert answer["text"].startswith("Declared INC-1")
    [result] = await env.sync_cards()
    assert result.outcome == "retry"
    await env.command("ack INC-1")
    assert (await env.incidents())[0].acknowledged_by == "slack:UOP"
    # Next attempt: the card is posted (showing the current state), then the ack goes to its thread.
    results = await env.sync_cards()
    assert [r.outcome for r in results] == ["delivered", "delivered"]
    failed, card = env.api.posts(top=True)
    assert "incident.ack:1" in actions_of(failed["blocks"])
    assert "incident.ack:1" not in actions_of(card["blocks"])
