"""Hot reload applies what it says it applies: senders read the live config at send time, and what is read
only at start is reported as `restart_needed` on every later reload until the process restarts. One test
per top-level config section (either applied live, or reported until restart)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.context import Context, open_context
from bot.delivery_mount import build_worker
from core.clock import SystemClock
from core.config import Config
from core.rbac import Actor, role_for
from core.reload import LIVE_SECTIONS, RESTART_SECTIONS, ConfigReloader
from tests.conftest import BASE_CONFIG, deep_merge
from tests.delivery.test_worker_kit import FAST, wait_until
from tests.stand_ins.http import HttpStandIn
from tests.test_reload import audit_rows, write

ADMIN = Actor("cli:admin", source="test")
KEY = "reload-live-key-0123456789"


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return deep_merge(BASE_CONFIG, {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"},
        "routing": {"default_targets": {"lists": ["oncall"]}, "rules": []},
        "channels": {"webhook": {"outbox": False, "retry": FAST}},
        "worker": {"poll_seconds": 0.2},
    })


Setup = tuple[Context, ConfigReloader, Path]


@pytest.fixture
async def setup(tmp_path: Path, base: dict[str, Any]) -> AsyncIterator[Setup]:
    path = tmp_path / "config.yaml"
    write(path, base)
    ctx = await open_context(path, clock=SystemClock())
    rel = ConfigReloader(holder=ctx.holder, path=path, db=ctx.db, audit=ctx.audit, clock=ctx.clock,
                         poll_seconds=3600, handle_sighup=False, settle_seconds=0)
    await rel.start()
    yield ctx, rel, path
    await rel.close()
    await ctx.close()


async def reload_with(setup: Setup, base: dict[str, Any], over: dict[str, Any]) -> Any:
    _ctx, rel, path = setup
    write(path, deep_merge(base, over))
    res = await rel.reload(trigger="manual")
    assert res.ok, res.problems
    return res


async def test_reload_adding_a_destination_and_a_rule_delivers_to_it(setup: Setup, base: dict[str, Any],
                                                                     peer: HttpStandIn) -> None:
    """The issue's case: the webhook sender used to keep the config it was built with, so every page to the
    new destination failed permanently with "unknown destination"."""
    ctx = setup[0]
    async with aiohttp.ClientSession() as http:
        comp = build_worker(ctx, http=http)
        await comp.start()
        try:
            res = await reload_with(setup, base, {
                "destinations": [{"name": "new-hook", "channel": "webhook", "url": f"{peer.url}/new"}],
                "routing": {"rules": [{"name": "to-new", "targets": {"destinations": ["new-hook"]}}]}})
            assert res.restart_needed == []
            await ctx.service.declare(actor=ADMIN, title="db down", severity="sev2")

            async def arrived() -> bool:
                return bool(peer.requests_to("/new"))

            await wait_until(arrived, what="the page to the destination added by the reload")
        finally:
            await comp.close()


async def test_channel_settings_apply_to_the_next_send(setup: Setup, base: dict[str, Any],
                                                       peer: HttpStandIn) -> None:
    """channels: outbox on/off and a changed destination url take effect without a rebuild."""
    ctx = setup[0]
    async with aiohttp.ClientSession() as http:
        comp = build_worker(ctx, http=http)
        await comp.start()
        try:
            dest = {"name": "hook", "channel": "webhook", "url": f"{peer.url}/first"}
            rule = {"rules": [{"name": "r", "targets": {"destinations": ["hook"]}}]}
            await reload_with(setup, base, {"destinations": [dest], "routing": rule,
                                            "channels": {"webhook": {"outbox": True}}})
            await ctx.service.declare(actor=ADMIN, title="one", severity="sev2")

            async def stored() -> bool:
                return (await _outbox_count(ctx)) >= 1

            await wait_until(stored, what="the outbox to store the page")
            assert peer.requests == []
            await reload_with(setup, base, {"destinations": [{**dest, "url": f"{peer.url}/second"}],
                                            "routing": rule})
            await ctx.service.declare(actor=ADMIN, title="two", severity="sev2")

            async def sent() -> bool:
                return bool(peer.requests_to("/second"))

            await wait_until(sent, what="the real send to the new url")
        finally:
            await comp.close()


async def _outbox_count(ctx: Context) -> int:
    from sqlalchemy import func, select

    from core.models import OutboxMessage

    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one())


# --- the rest of the live sections: the core reads them at the moment of use ---------------------------


async def test_access_and_default_role_apply_live(setup: Setup, base: dict[str, Any]) -> None:
    ctx = setup[0]
    someone = Actor("slack:UNEW", source="test")
    assert role_for(ctx.cfg, someone) == "viewer"
    await reload_with(setup, base, {"access": {"slack:UNEW": "manager"}})
    assert role_for(ctx.service.cfg, someone) == "manager"
    await reload_with(setup, base, {"default_role": "operator"})
    assert role_for(ctx.service.cfg, someone) == "operator"


async def test_contacts_lists_and_routing_apply_live(setup: Setup, base: dict[str, Any]) -> None:
    ctx = setup[0]
    await reload_with(setup, base, {
        "contacts": [*base["contacts"], {"name": "dave", "email": "dave@example.com"}],
        "contact_lists": [*base["contact_lists"], {"name": "dbas", "members": ["dave"]}],
        "routing": {"rules": [{"name": "db", "targets": {"lists": ["dbas"]}}]}})
    out = await ctx.service.declare(actor=ADMIN, title="db down", severity="sev3")
    assert out.plan is not None and "dave" in {d.recipient for d in out.plan.deliveries}


async def test_escalation_policies_apply_live(setup: Setup, base: dict[str, Any]) -> None:
    ctx = setup[0]
    await reload_with(setup, base, {
        "escalation_policies": [{"name": "fresh", "levels": [{"wait_minutes": 3, "targets": {"lists": ["leads"]}}]}],
        "routing": {"rules": [{"name": "esc", "targets": {"lists": ["oncall"]}, "escalation_policy": "fresh"}]}})
    out = await ctx.service.declare(actor=ADMIN, title="db down", severity="sev2")
    assert out.incident is not None and out.incident.escalation_policy == "fresh"
    assert out.incident.next_escalation_at is not None


async def test_api_alertmanager_and_worker_settings_apply_live(setup: Setup, base: dict[str, Any]) -> None:
    from bot.api.auth import match_api_key

    ctx = setup[0]
    await reload_with(setup, base, {"api": {"keys": [{"name": "ci", "key": KEY, "role": "operator"}]},
                                    "alertmanager": {"enabled": False}, "worker": {"batch_size": 7}})
    assert match_api_key(ctx.cfg, KEY) is not None
    assert ctx.cfg.alertmanager.enabled is False and ctx.cfg.worker.batch_size == 7


# --- read once at start: reported on every reload until a restart -------------------------------------

RESTART_CHANGES: dict[str, dict[str, Any]] = {
    "server": {"server": {"port": 9999}},
    "database": {"database": {"busy_timeout_ms": 1234}},
    "audit": {"audit": {"checkpoint_every": 11}},
    "logging": {"logging": {"level": "DEBUG"}},
    "slack": {"slack": {"incident_channel": "C0NEW"}},
    "teams": {"teams": {"incident_conversation": "19:new"}},
    "telegram": {"telegram": {"incident_chat_id": -100777}},
    "console": {"console": {"session_hours": 1}},
    "worker.enabled": {"worker": {"enabled": False}},
    "channels.voice.outbox": {"channels": {"voice": {"outbox": False}}},
    "channels.voice.auth_token": {"channels": {"voice": {"auth_token": "twilio-token"}}},
}


@pytest.mark.parametrize("section", RESTART_SECTIONS)
async def test_restart_sections_are_reported_until_restart(setup: Setup, base: dict[str, Any],
                                                           section: str) -> None:
    ctx = setup[0]
    changed = deep_merge(base, RESTART_CHANGES[section])
    res = await reload_with(setup, base, RESTART_CHANGES[section])
    assert res.restart_needed == [section]
    # a later reload that changes something else still says a restart is pending
    res2 = await reload_with(setup, changed, {"default_role": "operator"})
    assert res2.restart_needed == [section]
    details = [json.loads(e.details) for e in await audit_rows(ctx)]
    assert [d["restart_needed"] for d in details] == [[section], [section]]
    # undoing the change clears it: the process runs what the file says again
    res3 = await reload_with(setup, base, {"default_role": "operator"})
    assert res3.restart_needed == []


def test_every_top_level_section_is_classified() -> None:
    """A new section must be decided: applied by the reload, or listed as restart-needed."""
    restart_tops = {r.split(".")[0] for r in RESTART_SECTIONS}
    tops = set(Config.model_fields)
    assert tops == set(LIVE_SECTIONS) | (restart_tops - {"worker", "channels"})
    assert not (set(LIVE_SECTIONS) & (restart_tops - {"worker", "channels"}))
    assert set(RESTART_CHANGES) == set(RESTART_SECTIONS)


async def test_reload_waits_until_the_file_stops_changing(tmp_path: Path, base: dict[str, Any]) -> None:
    """An editor writing in place: the first bytes alone are a valid file that would wipe contacts."""
    import asyncio

    import yaml

    path = tmp_path / "config.yaml"
    write(path, base)
    ctx = await open_context(path, clock=SystemClock())
    rel = ConfigReloader(holder=ctx.holder, path=path, db=ctx.db, audit=ctx.audit, clock=ctx.clock,
                         poll_seconds=3600, handle_sighup=False, settle_seconds=0.3)
    try:
        path.write_text("default_role: manager\n")  # the save has only just begun
        task = asyncio.create_task(rel.reload(trigger="file-change"))
        await asyncio.sleep(0.1)
        path.write_text(yaml.safe_dump(deep_merge(base, {"default_role": "operator"}), sort_keys=False))
        res = await task
        assert res.ok and ctx.cfg.default_role == "operator"
        assert [c.name for c in ctx.cfg.contacts] == ["alice", "bob", "carol"]
        assert rel.refused == 0
    finally:
        await ctx.close()


async def test_truncated_save_is_refused_and_the_old_config_kept(setup: Setup) -> None:
    ctx, rel, path = setup
    path.write_text("# config being rewritten\n")
    res = await rel.reload(trigger="file-change")
    assert not res.ok and "config.yaml is empty" in res.problems[0]
    assert [c.name for c in ctx.cfg.contacts] == ["alice", "bob", "carol"]
