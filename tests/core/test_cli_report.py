"""`tocsin report` as a user runs it: the real CLI in a subprocess, on a database where incidents were
declared, acknowledged and resolved at known times (a frozen clock set a few hours back)."""
from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bot.context import open_context
from core import config
from core.clock import FrozenClock
from core.rbac import Actor
from tests.core.test_cli import ROOT, tocsin

OP = Actor("cli:alice", "cli")


async def seed(tmp: Path) -> None:
    """INC-1 sev1 3h ago: ack +4m, resolve +30m. INC-2 sev2 2h ago: ack +10m, resolve +1h. INC-3 sev3 1h
    ago, open. MTTA 4m, 10m: median 7m, p90 10m; MTTR 30m, 1h: median 45m, p90 1h."""
    url = f"sqlite+aiosqlite:///{tmp / 'tocsin.db'}"
    cfg = config.load(ROOT / "config.yaml", env={**os.environ, "TOCSIN_DATABASE_URL": url})
    now = datetime.now(timezone.utc).replace(microsecond=0)
    clock = FrozenClock(now - timedelta(hours=3))
    ctx = await open_context(cfg=cfg, clock=clock)
    try:
        svc = ctx.service
        await svc.declare(actor=OP, title="checkout down", severity="sev1")
        clock.advance(minutes=4)
        await svc.acknowledge("INC-1", actor=OP)
        clock.advance(minutes=26)
        await svc.resolve("INC-1", actor=OP)
        clock.set(now - timedelta(hours=2))
        await svc.declare(actor=OP, title="search slow", severity="sev2")
        clock.advance(minutes=10)
        await svc.acknowledge("INC-2", actor=OP)
        clock.advance(minutes=50)
        await svc.resolve("INC-2", actor=OP)
        clock.set(now - timedelta(hours=1))
        await svc.declare(actor=OP, title="disk 80%", severity="sev3")
    finally:
        await ctx.close()


async def test_report_tables_csv_and_bad_input(tmp_path: Path) -> None:
    await seed(tmp_path)
    r = tocsin(tmp_path, "report", columns=100)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Report ") and lines[0].endswith(" UTC, incidents by severity")
    row = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.split()[:1] in (["sev1"], ["sev2"], ["sev3"],
                                                                                 ["all"])}
    assert row["sev1"] == ["1", "1", "1", "4m00s", "4m00s", "30m00s", "30m00s", "0"]
    assert row["sev3"] == ["1", "0", "0", "-", "-", "-", "-", "0"]
    assert row["all"] == ["3", "2", "2", "7m00s", "10m00s", "45m00s", "1h00m", "0"]
    assert "Pages per person (night: 22:00-07:00 UTC, or the contact's quiet hours)" in r.stdout
    # 80 columns when piped: the widest table still fits.
    r = tocsin(tmp_path, "report", "--by", "source")
    assert r.returncode == 0 and max(len(ln) for ln in r.stdout.splitlines()) <= 80
    assert any(ln.split()[:2] == ["cli", "3"] for ln in r.stdout.splitlines())

    r = tocsin(tmp_path, "report", "--since", "150m", "--csv")
    assert r.returncode == 0, r.stderr
    got = {(x["section"], x["group"], x["metric"]): x["value"] for x in csv.DictReader(io.StringIO(r.stdout))}
    # 150 minutes back: INC-1 (3h ago) is out, INC-2 and INC-3 are in.
    assert got[("incidents", "all", "incidents")] == "2"
    assert got[("incidents", "all", "mtta_median_seconds")] == "600"
    assert got[("incidents", "all", "mttr_p90_seconds")] == "3600"
    assert got[("period", "", "by")] == "severity"

    for args, message in ((("--since", "3x"), "since must be a duration with a unit, like 30d, 12h or 2w"),
                          (("--since", "0d"), "since must be longer than zero"),
                          (("--by", "colour"), "invalid choice: 'colour'")):
        r = tocsin(tmp_path, "report", *args)
        assert r.returncode == 2 and message in r.stderr and r.stdout == "", (args, r.stderr)
