"""`tocsin backup` and `tocsin restore`: operations subcommands (admin only), with progress on a terminal."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.context import open_database
from core import backup as backup_mod
from core import config as config_mod
from core.rbac import Permission, require


class StageProgress:
    """Adapts core.backup's progress(stage, done, total) to one bot.cli.Progress line per stage."""

    LABELS = {"snapshot": "copying database", "export": "exporting rows", "import": "importing rows",
              "verify": "verifying audit chain"}

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from bot.cli import Progress

        if stage != self.stage:
            self.finish()
            self.stage = stage
            self.bar = Progress(self.LABELS.get(stage, stage), self.stream)
        self.bar(done, total)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()
            self.bar = None


async def cmd_backup(args: argparse.Namespace) -> int:
    from bot.cli import actor_of

    path = config_mod.resolve_path(args.config)
    cfg = config_mod.load(path)
    require(cfg, actor_of(args), Permission.MANAGE_SETTINGS)
    db = open_database(cfg, path, create=False)
    prog = StageProgress()
    try:
        res = await backup_mod.backup(db, out_dir=args.out, config_path=path, fmt=args.format, progress=prog)
    finally:
        prog.finish()
        await db.close()
    print(res.describe())
    return 0


async def cmd_restore(args: argparse.Namespace) -> int:
    from bot.cli import actor_of

    path = config_mod.resolve_path(args.config)
    cfg = config_mod.load(path)
    require(cfg, actor_of(args), Permission.MANAGE_SETTINGS)
    db = open_database(cfg, path, create=True)  # no migration first: restore brings its own schema
    prog = StageProgress()
    try:
        res = await backup_mod.restore(args.file, db=db, force=args.force, progress=prog,
                                       checkpoint_key=cfg.audit.checkpoint_key.get_secret_value().encode())
    finally:
        prog.finish()
        await db.close()
    print(res.describe(), file=sys.stdout if res.ok else sys.stderr)
    return 0 if res.ok else 1


def register(sub: Any) -> None:
    b = sub.add_parser("backup", help="write a consistent backup archive: database, config, manifest")
    b.add_argument("--out", default=".", metavar="DIR", help="directory for the archive (default: .)")
    b.add_argument("--format", choices=["auto", "native", "logical"], default="auto",
                   help="auto: SQLite snapshot, or pg_dump with a logical fallback; native: no fallback; "
                        "logical: JSON lines, restorable into SQLite or PostgreSQL")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore a backup archive into the configured database, then verify")
    r.add_argument("file", help="tocsin-backup-*.tar.gz")
    r.add_argument("--force", action="store_true",
                   help="replace a database that already holds data (stop every `tocsin run` first)")
    r.set_defaults(func=cmd_restore)
