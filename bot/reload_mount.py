"""Wires config hot reload into `tocsin run`: SIGHUP and file changes reload config.yaml."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bot.context import secret_values
from bot.server import Provided
from core.config import Config
from core.logs import set_secret_values
from core.reload import ConfigReloader

if TYPE_CHECKING:
    from bot.server import Runtime


def mount_reloader(rt: Runtime) -> Provided:
    """Reload config.yaml on SIGHUP and on file change; teach the log formatter the new secrets."""
    def refresh_secrets(_old: Config, new: Config) -> None:
        set_secret_values(secret_values(new))

    ctx = rt.ctx
    return Provided(components=[ConfigReloader(holder=ctx.holder, path=ctx.config_path, db=ctx.db,
                                               audit=ctx.audit, clock=ctx.clock, hooks=[refresh_secrets])])
