"""Wires the escalation timer, the heartbeat, handoff and reminder timers into `tocsin run` (config reload:
bot/reload_mount.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bot.server import Provided
from core.escalation import Escalator

if TYPE_CHECKING:
    from bot.server import Runtime


def mount_escalator(rt: Runtime) -> Provided:
    """Every process runs one: the row lock + compare-and-set in escalate() lets exactly one of them page,
    and any survivor fires what a dead process left due."""
    esc = Escalator(rt.ctx.service)
    return Provided(components=[esc], health={"scheduler": esc.health})


def mount_heartbeats(rt: Runtime) -> Provided:
    """Every process checks heartbeats (core/heartbeats.py): the row lock lets one of them open each miss.
    Mounted always, so heartbeats added by a config reload are checked without a restart."""
    from core.heartbeats import Heartbeats, HeartbeatTimer

    return Provided(components=[HeartbeatTimer(Heartbeats(rt.ctx.service))])


def mount_maintenance(rt: Runtime) -> Provided:
    """Every process starts scheduled windows and ends expired ones; compare-and-set lets one do each."""
    from core.maintenance import Maintenance, MaintenanceTimer

    return Provided(components=[MaintenanceTimer(Maintenance(rt.ctx.service))])


def mount_handoffs(rt: Runtime) -> Provided:
    """Every process ticks the handoff timer (core/schedules/handoffs.py): the unique (schedule, time) row
    lets one of them announce each handoff. Mounted always, so schedules added by a reload are followed."""
    from core.schedules.handoffs import HandoffTimer

    return Provided(components=[HandoffTimer(rt.ctx.service)])


def mount_flapping(rt: Runtime) -> Provided:
    """Every process ticks the flapping timer (core/flapping.py): claim_run gives each period to one, and
    the row lock lets one settle each stable incident. Mounted always: marks outlive config reloads."""
    from core.flapping import FlappingTimer

    return Provided(components=[FlappingTimer(rt.ctx.service.flaps, db=rt.ctx.db, clock=rt.ctx.clock)])


def mount_reminders(rt: Runtime) -> Provided:
    """Every process ticks the reminder timer (core/reminders.py): the incident row lock and the unique
    (incident, kind, due time) row let one of them send each reminder. Mounted always, so reminders
    configured by a reload start without a restart."""
    from core.reminders import ReminderTimer

    return Provided(components=[ReminderTimer(rt.ctx.service)])
