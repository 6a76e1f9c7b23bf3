"""`/incident route` (explain_incident), `tocsin route explain` and `tocsin test-event`."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.cli import main
from core.errors import Forbidden
from core.models import AuditEntry, Delivery, IncidentMessage
from core.rbac import Actor
from core.explain import explain_incident
from tests.conftest import BASE_CONFIG, deep_merge

ADMIN = Actor("cli:admin", "cli")
MANAGER = Actor("cli:manager", "cli")
OP = Actor("cli:op", "cli")

ROUTING = {
    "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
        {"name": "sec", "event_types": ["alert"], "conditions": [
            {"field": "payload.verdict", "operator": "eq", "value": "malicious"}],
         "targets": {"lists": ["leads"]}},
        {"name": "major", "min_severity": "sev2", "targets": {"lists": ["oncall"]}, "escalation_policy": "p"},
    ]},
    "escalation_policies": [{"name": "p", "levels": [
        {"wait_minutes": 5, "targets": {"lists": ["leads"]}},
        {"wait_minutes": 10, "targets": {"contacts": ["bob"]}}], "repeat": 1}],
}


def explained_pairs(text: str) -> list[tuple[str, str]]:
    """(recipient, channel) rows under 'N deliveries would be queued'."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "deliveries would be queued" in ln) + 1
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("  "):
            break
        rows.append((ln.split()[0], ln.split()[1]))
    return rows


async def test_explain_incident_for_admins(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**ROUTING)
    out = await ctx.service.declare(actor=OP, title="db down", severity="sev1", contact_list="leads")
    text = await explain_incident(ctx.service, out.incident.ref, "update", actor=ADMIN)
    assert text.startswith("INC-1 [sev1] open: db down")
    assert "skip  sec: event type 'update' not in ['alert']" in text
    assert "MATCH major: all conditions hold" in text
    assert "Contact list leads was named at declare" in text
    # an update is news: alice's sev1 list is [sms, email], so it reaches her by email only
    assert "Message: NEWS" in text
    assert "alice                sms" not in text
    assert "alice                email          alice@example.com" in text
    assert ("carol                email          carol@example.com              (named on the command; news via "
            "preferences.default without voice/sms)") in text
    # the chat command layer goes through the service and gets the same text
    assert await ctx.service.explain_route("INC-1", actor=ADMIN, event_type="update") == text
    with pytest.raises(Forbidden):
        await explain_incident(ctx.service, "INC-1", "update", actor=MANAGER)


async def test_explain_escalate_shows_the_next_level_from_the_snapshot(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**ROUTING)
    await ctx.service.declare(actor=OP, title="db down", severity="sev2")
    text = await explain_incident(ctx.service, "INC-1", "escalation", actor=ADMIN)
    assert "next is level 1 of 2, round 1 of 2" in text
    assert "carol                email          carol@example.com              (escalation level 1; page via" in text
    await ctx.service.escalate("INC-1", actor=ADMIN)
    text2 = await explain_incident(ctx.service, "INC-1", "escalate", actor=ADMIN)
    assert "next is level 2 of 2" in text2 and "(escalation level 2; page via preferences.default)" in text2
    # what explain promised is what escalate queued
    out = await ctx.service.escalate("INC-1", actor=ADMIN)
    assert [(d.recipient, d.channel) for d in out.plan.deliveries] == explained_pairs(text2)
    assert out.queued == len(explained_pairs(text2)) == 2  # bob (level 2), alice (rule major); bob once
    await ctx.service.declare(actor=OP, title="minor", severity="sev4")
    assert "No escalation policy" in await explain_incident(ctx.service, "INC-2", "escalate", actor=ADMIN)


async def test_explain_names_only_the_policy_the_incident_has_and_refuses_resolved(
        make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**ROUTING)
    await ctx.service.declare(actor=OP, title="minor", severity="sev4")  # no rule with a policy matched
    assert (await ctx.service.get("INC-1")).escalation_policy is None
    sec, major = ctx.cfg.routing.rules
    today = ctx.cfg.routing.model_copy(update={"rules": [sec, major.model_copy(update={"min_severity": "sev4"})]})
    ctx.holder.replace(ctx.cfg.model_copy(update={"routing": today}))  # today `major` (policy p) matches sev4
    text = await explain_incident(ctx.service, "INC-1", "update", actor=ADMIN)
    assert "MATCH major" in text  # the rule that really routes its updates
    assert "Escalation: none (no policy was picked when this incident opened)" in text
    assert "Escalation policy: p" not in text  # a rule's policy applies only when an incident opens
    await ctx.service.declare(actor=OP, title="db down", severity="sev1")
    assert "Escalation policy: p, level 0 (picked when it opened)" in await explain_incident(
        ctx.service, "INC-2", "update", actor=ADMIN)
    await ctx.service.resolve("INC-1", actor=OP)
    text = await explain_incident(ctx.service, "INC-1", "update", actor=ADMIN)
    assert "INC-1 is resolved: /incident update would be refused and nothing would be queued" in text
    assert "deliveries would be queued" not in text


# --- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = deep_merge(BASE_CONFIG, ROUTING)
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["--config", str(path), "db", "upgrade"]) == 0  # other commands never create a database
    return path


def run_cli(config_file: Path, *args: str, identity: str = "cli:admin") -> int:
    return main(["--config", str(config_file), "--as", identity, *args])


def test_route_explain_event_file(config_file: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"type": "alert", "severity": "sev3", "source": "api",
                              "payload": {"verdict": "malicious"}}))
    assert run_cli(config_file, "route", "explain", "--event", str(ev)) == 0
    out = capsys.readouterr().out
    assert "MATCH sec: all conditions hold (payload.verdict='malicious' eq 'malicious')" in out
    assert "-     major: not evaluated" in out
    assert "1 deliveries would be queued" in out and "carol" in out
    # --type overrides the file's type: now `sec` does not match and major's threshold fails
    assert run_cli(config_file, "route", "explain", "--event", str(ev), "--type", "update") == 0
    out = capsys.readouterr().out
    assert "skip  sec: event type 'update' not in ['alert']" in out
    assert "routed to routing.default_targets" in out


def test_route_explain_errors(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "alert",\n "severity": }')
    assert run_cli(config_file, "route", "explain", "--event", str(bad)) == 1
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    good = tmp_path / "ev.json"
    good.write_text('{"type": "alert"}')
    assert run_cli(config_file, "route", "explain", "--event", str(good), identity="cli:manager") == 1
    assert "may not manage settings" in capsys.readouterr().err


def test_route_explain_incident(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(config_file, "incident", "declare", "sev1", "db", "down") == 0
    capsys.readouterr()
    assert run_cli(config_file, "route", "explain", "--incident", "INC-1", "--type", "ack") == 0
    out = capsys.readouterr().out
    assert out.startswith("INC-1 [sev1] open: db down") and "Event: ack, severity sev1" in out


def test_test_event_queues_for_real_and_audits(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(config_file, "test-event", "--type", "alert", "--severity", "sev3",
                   "--payload", '{"verdict": "malicious"}') == 0
    out = capsys.readouterr().out
    assert "test event alert (sev3) queued as one-time message 1: 1 deliveries" in out
    assert "1 deliveries were queued" in out and "would be queued" not in out  # it happened; no "would"
    assert "MATCH sec" in out and "carol" in out

    async def check() -> None:
        from bot.context import open_context

        ctx = await open_context(config_file)
        try:
            async with ctx.db.sessions() as s:
                dels = (await s.execute(select(Delivery))).scalars().all()
                msg = (await s.execute(select(IncidentMessage))).scalars().one()
                audit = (await s.execute(select(AuditEntry))).scalars().all()
        finally:
            await ctx.close()
        assert [(d.recipient, d.channel, d.status, d.incident_id) for d in dels] == [
            ("carol", "email", "queued", None)]
        assert msg.kind == "ONE_TIME" and dels[0].notification_json["kind"] == "ONE_TIME"
        assert dels[0].notification_json["event"] == {}  # only a generic webhook page carries the routed event
        assert [a.action for a in audit] == ["notify.one_time"]

    import asyncio

    asyncio.run(check())
    assert run_cli(config_file, "test-event", "--type", "x", "--severity", "sev3", "--payload", "[1]") == 1
    assert "--payload must be a JSON object" in capsys.readouterr().err
    assert run_cli(config_file, "test-event", "--type", "x", "--severity", "sev3", identity="cli:viewer") == 1
    assert "may not send incidents" in capsys.readouterr().err


def test_route_explain_event_applies_the_overrides_in_the_database(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--event opens the configured database for reading and resolves schedules with the overrides in force
    (saying so); an unreachable database still explains, saying overrides were not applied."""
    from tests.schedules.conftest import SCHEDULES

    data = deep_merge(BASE_CONFIG, {k: v for k, v in SCHEDULES.items() if k != "access"})
    data["access"] = {**BASE_CONFIG["access"], **SCHEDULES["access"]}
    data["schedules"] = [{**SCHEDULES["schedules"][0], "layers": [{
        "name": "daily", "members": ["alice"], "rotation": "daily", "handoff": "09:00", "start": "2026-01-05"}]}]
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file), "db", "upgrade"]) == 0
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"type": "alert", "severity": "sev2", "source": "api"}))

    assert run_cli(config_file, "route", "explain", "--event", str(ev)) == 0
    out = capsys.readouterr().out
    assert f"On-call overrides: applied, 0 in force now (read from database {tmp_path / 'cli.db'}, read-only)" in out
    assert [r for r, _ in explained_pairs(out)] == ["alice"]

    assert run_cli(config_file, "oncall", "override", "primary", "dave", "--for", "2h") == 0
    capsys.readouterr()
    assert run_cli(config_file, "route", "explain", "--event", str(ev)) == 0
    out = capsys.readouterr().out
    assert "On-call overrides: applied, 1 in force now" in out
    assert [r for r, _ in explained_pairs(out)] == ["dave"]  # what a page queued now would reach

    # the database is gone: the explanation still comes, from config alone, and says what it could not do
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'missing.db'}"}
    config_file.write_text(yaml.safe_dump(data))
    assert run_cli(config_file, "route", "explain", "--event", str(ev)) == 0
    out = capsys.readouterr().out
    assert "On-call overrides: NOT applied (database unavailable:" in out
    assert [r for r, _ in explained_pairs(out)] == ["alice"]
    assert not (tmp_path / "nowhere").exists()  # nothing created: read-only use
