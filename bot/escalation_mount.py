"""Wires the escalation timer, the heartbeat and handoff timers and config hot reload into `tocsin run`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from core.config import Config
from core.escalation import Escalator
from core.reload import ConfigReloader

if TYPE_CHECKING:
    from bot.server import Runtime


def mount_escalator(rt: Runtime) -> None:
    """Every process runs one: the row lock + compare-and-set in escalate() lets exactly one of them page,
    and any survivor fires what a dead process left due."""
    esc = Escalator(rt.ctx.service)
    rt.components.append(esc)
    rt.health["scheduler"] = esc.health


def mount_heartbeats(rt: Runtime) -> None:
    """Every process checks heartbeats (core/heartbeats.py): the row lock lets one of them open each miss.
    Mounted always, so heartbeats added by a config reload are checked without a restart."""
    from core.heartbeats import Heartbeats, HeartbeatTimer

    rt.components.append(HeartbeatTimer(Heartbeats(rt.ctx.service)))


def mount_handoffs(rt: Runtime) -> None:
    """Every process ticks the handoff timer (core/schedules/handoffs.py): the unique (schedule, time) row
    lets one of them announce each handoff. Mounted always, so schedules added by a reload are followed."""
    from core.schedules.handoffs import HandoffTimer

    rt.components.append(HandoffTimer(rt.ctx.service))


def mount_reloader(rt: Runtime) -> None:
    """Reload config.yaml on SIGHUP and on file change; teach the log formatter the new secrets."""
    from bot.context import secret_values
    from core.logs import set_secret_values

    def refresh_secrets(_old: Config, new: Config) -> None:
        set_secret_values(secret_values(new))

    ctx = rt.ctx
    rt.components.append(ConfigReloader(holder=ctx.holder, path=ctx.config_path, db=ctx.db, audit=ctx.audit,
                                        clock=ctx.clock, hooks=[refresh_secrets]))
