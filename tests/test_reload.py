"""Hot reload: a good file swaps the live config and audits a redacted diff; a bad file is refused with
file:line, logged, and the old config kept; file changes (mtime poll) and SIGHUP both trigger it; the
server mounts it next to the escalation timer."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.context import Context, open_context
from core.audit.log import verify
from core.clock import FrozenClock
from core.models import AuditEntry
from core.reload import ConfigReloader, config_diff
from tests.conftest import BASE_CONFIG, deep_merge, make_config

SECRET_OLD = "xoxb-old-secret-token"
SECRET_NEW = "xoxb-new-secret-token"


def write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)  # atomic, like an editor's save


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    data = deep_merge(BASE_CONFIG, {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'reload.db'}"},
        "slack": {"bot_token": SECRET_OLD},
        "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
            {"name": "major", "min_severity": "sev2", "targets": {"lists": ["oncall"]}}]},
    })
    return data


@pytest.fixture
async def setup(tmp_path: Path, base: dict[str, Any]) -> AsyncIterator[tuple[Context, ConfigReloader, Path]]:
    path = tmp_path / "config.yaml"
    write(path, base)
    ctx = await open_context(path, clock=FrozenClock())
    rel = ConfigReloader(holder=ctx.holder, path=path, db=ctx.db, audit=ctx.audit, clock=ctx.clock,
                         poll_seconds=0.05, settle_seconds=0.05)
    await rel.start()
    yield ctx, rel, path
    await rel.close()
    await ctx.close()


async def audit_rows(ctx: Context) -> list[AuditEntry]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == "config.reload")
                                     .order_by(AuditEntry.seq))).scalars().all())


async def test_good_reload_swaps_config_and_audits_a_redacted_diff(
        setup: tuple[Context, ConfigReloader, Path], base: dict[str, Any]) -> None:
    ctx, rel, path = setup
    old_cfg = ctx.cfg
    new = deep_merge(base, {"slack": {"bot_token": SECRET_NEW}})
    new["routing"]["rules"] = [{"name": "security", "targets": {"lists": ["leads"]}},
                               {"name": "major", "min_severity": "sev1", "targets": {"lists": ["oncall"]}}]
    write(path, new)
    res = await rel.reload(trigger="manual")
    assert res.ok and ctx.cfg is not old_cfg
    assert ctx.cfg.routing.rules[1].min_severity == "sev1"
    assert ctx.service.cfg is ctx.cfg  # everyone reads the holder
    (entry,) = await audit_rows(ctx)
    assert entry.actor == "system:config-reload" and entry.source == "manual"
    details = json.loads(entry.details)
    changed = {c["path"]: c for c in details["changed"]}
    assert changed["routing.rules (order)"] == {"path": "routing.rules (order)", "before": ["major"],
                                                 "after": ["security", "major"]}
    assert changed["routing.rules[major].min_severity"]["before"] == "sev2"
    assert changed["routing.rules[major].min_severity"]["after"] == "sev1"
    assert changed["routing.rules[security]"]["before"] is None
    assert changed["routing.rules[security]"]["after"]["targets"]["lists"] == ["leads"]
    assert changed["slack.bot_token"] == {"path": "slack.bot_token", "before": "**********",
                                          "after": "**********", "secret": True}
    assert details["count"] == 4 and details["restart_needed"] == ["slack"]
    assert details["before_sha256"] != details["after_sha256"]
    async with ctx.db.sessions() as s:
        everything = " ".join((await s.execute(select(AuditEntry.details))).scalars().all())
    assert SECRET_OLD not in everything and SECRET_NEW not in everything
    assert (await verify(ctx.db.engine)).ok


async def test_bad_file_is_refused_logged_and_old_config_kept(
        setup: tuple[Context, ConfigReloader, Path], base: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    ctx, rel, path = setup
    rel.poll_seconds = 3600  # only the manual reloads below may count as refused
    await asyncio.sleep(0.1)
    old_cfg = ctx.cfg
    bad = deep_merge(base, {})
    bad["routing"]["rules"][0]["conditions"] = [{"field": "payload.x", "operator": "regex", "value": "(oops"}]
    write(path, bad)
    with caplog.at_level(logging.ERROR, logger="tocsin.config"):
        res = await rel.reload(trigger="sighup")
    assert not res.ok and ctx.cfg is old_cfg
    (problem,) = res.problems
    assert problem.startswith(f"{path}:") and "routing.rules[0].conditions[0]" in problem
    assert "bad regex" in problem
    rec = next(r for r in caplog.records if r.getMessage() == "config.reload.refused")
    assert rec.problems == res.problems and rec.kept == "previous config"  # type: ignore[attr-defined]
    path.write_text("routing: [unclosed\n")
    res2 = await rel.reload()
    assert not res2.ok and "invalid YAML" in res2.problems[0] and ctx.cfg is old_cfg
    assert await audit_rows(ctx) == [] and rel.refused == 2


async def test_file_change_is_picked_up_by_the_poll(
        setup: tuple[Context, ConfigReloader, Path], base: dict[str, Any]) -> None:
    ctx, rel, path = setup
    write(path, deep_merge(base, {"default_role": "operator"}))
    await wait_for(lambda: ctx.cfg.default_role == "operator")
    assert [json.loads(e.details)["trigger"] for e in await audit_rows(ctx)] == ["file-change"]
    # a touch without a content change does nothing
    os.utime(path, None)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    await asyncio.sleep(0.3)
    assert len(await audit_rows(ctx)) == 1
    # a broken save is refused once (not every poll), then the fixed save goes through
    path.write_text("contacts: [\n")
    await wait_for(lambda: rel.refused == 1)
    await asyncio.sleep(0.3)
    assert rel.refused == 1 and ctx.cfg.default_role == "operator"
    write(path, deep_merge(base, {"default_role": "manager"}))
    await wait_for(lambda: ctx.cfg.default_role == "manager")


async def test_sighup_reloads(setup: tuple[Context, ConfigReloader, Path], base: dict[str, Any]) -> None:
    ctx, rel, path = setup
    assert rel._sighup, "the handler must be installed, or SIGHUP would kill the test run"
    rel.poll_seconds = 3600  # only the signal can do it now
    write(path, deep_merge(base, {"default_role": "manager"}))
    rel._signature = None  # make sure the poll is not what reloads it
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for(lambda: ctx.cfg.default_role == "manager")
    assert [json.loads(e.details)["trigger"] for e in await audit_rows(ctx)] == ["sighup"]


def test_config_diff_compact() -> None:
    a = make_config()
    b = make_config(contacts=[*BASE_CONFIG["contacts"][:2],
                              {**BASE_CONFIG["contacts"][2], "email": "carol@new.example"}],
                    audit={"checkpoint_key": "another-key"})
    diff = config_diff(a, b)
    assert {"path": "contacts[carol].email", "before": "carol@example.com",
            "after": "carol@new.example"} in diff
    assert {"path": "audit.checkpoint_key", "before": "**********", "after": "**********",
            "secret": True} in diff
    assert len(diff) == 2
    assert config_diff(a, make_config()) == []


async def test_server_mounts_escalator_and_reloader(tmp_path: Path, base: dict[str, Any]) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.server import build_app
    from core.escalation import Escalator

    path = tmp_path / "config.yaml"
    write(path, base)
    ctx = await open_context(path)
    app, rt = await build_app(ctx)
    kinds = {type(c) for c in rt.components}
    assert Escalator in kinds and ConfigReloader in kinds
    assert "scheduler" in rt.health
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 200 and "scheduler" in body["checks"], body
        esc = next(c for c in rt.components if isinstance(c, Escalator))
        assert await esc.health() is None
    assert await esc.health() == "escalation timer is not running"
    await ctx.close()


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
