"""Hot reload of config.yaml on SIGHUP and on file change: a valid file replaces the live config (with an
audit entry of what changed, secrets redacted); an invalid one is refused, logged, and the old config kept.

Incidents already open keep following the escalation policy snapshot taken when they opened, so a reload
mid-incident neither skips nor repeats a level. What is read only at start (RESTART_SECTIONS) is swapped too
but takes effect on restart; every reload until then reports it as `restart_needed` (audit entry and log).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from core import config as config_mod
from core.audit.chain import REDACTED, canonical_json, redact
from core.config import Config, ConfigHolder, dump_redacted
from core.errors import ConfigError
from core.rbac import Actor

if TYPE_CHECKING:
    from core.audit.log import AuditLog
    from core.clock import Clock
    from core.db import Database

log = logging.getLogger("tocsin.config")

RELOADER = Actor("system:config-reload", source="reload")
RESTART_SECTIONS = ("server", "database", "audit", "logging", "slack", "teams", "telegram", "console",
                    "worker.enabled", "channels.voice.outbox", "channels.voice.auth_token")
"""What is read once at start (bind address, database, audit key, log setup, chat adapters, the console's
session key, whether the worker and the Twilio callback are mounted): a change is recorded and reported as
`restart_needed` on this and every later reload until the process restarts (or the change is undone).
Everything else is read at the moment of use, senders included, so it applies on reload."""
LIVE_SECTIONS = ("access", "default_role", "contacts", "contact_lists", "destinations", "routing",
                 "escalation_policies", "channels", "worker", "api", "alertmanager", "retention", "heartbeats",
                 "maintenance", "schedules", "digests", "reminders", "flapping", "reports", "roles")
"""Top-level sections applied by the reload itself (the parts of `channels` and `worker` not listed above)."""
MAX_CHANGES = 200
"""Audit entries list at most this many changed paths (and say how many more there were)."""
_ABSENT = object()


# --- the diff -----------------------------------------------------------------------------------------


def config_diff(before: Config, after: Config) -> list[dict[str, Any]]:
    """Changed paths with before/after values, secrets redacted: `routing.rules[pages].min_severity`.

    Lists of named things (contacts, rules, policies...) are compared by name, so inserting one rule shows
    as one added rule (plus an `(order)` entry), not every later rule changed. A changed secret shows as
    changed with both values redacted."""
    out: list[dict[str, Any]] = []
    _diff(before.model_dump(mode="python", by_alias=True), after.model_dump(mode="python", by_alias=True),
          "", out)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _named(items: list[Any]) -> bool:
    names = [x.get("name") if isinstance(x, dict) else None for x in items]
    return all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _show(value: Any, path: str) -> Any:
    """JSON-able and secret-free: SecretStr values and values under secret-looking keys are redacted."""
    if value is _ABSENT:
        return None
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, dict):
        plain = {k: _show(v, _join(path, str(k))) for k, v in value.items()}
        return redact(plain)
    if isinstance(value, list):
        return [_show(v, path) for v in value]
    leaf = path.rsplit(".", 1)[-1]
    return redact({leaf: value})[leaf] if isinstance(value, str) else value


def _change(path: str, a: Any, b: Any) -> dict[str, Any]:
    return {"path": path, "before": _show(a, path), "after": _show(b, path)}


def _diff(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if a is _ABSENT or b is _ABSENT:
        out.append(_change(path, a, b))
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), _join(path, str(k)), out)
    elif isinstance(a, list) and isinstance(b, list) and a and b and _named(a) and _named(b):
        an, bn = [x["name"] for x in a], [x["name"] for x in b]
        common_a, common_b = [n for n in an if n in bn], [n for n in bn if n in an]
        # Order matters (the first matching rule wins): report it unless items were only appended/removed.
        if common_a != common_b or bn[:len(common_b)] != common_b:
            out.append({"path": f"{path} (order)", "before": an, "after": bn})
        amap, bmap = {x["name"]: x for x in a}, {x["name"]: x for x in b}
        for n in an + [n for n in bn if n not in amap]:
            _diff(amap.get(n, _ABSENT), bmap.get(n, _ABSENT), f"{path}[{n}]", out)
    elif (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
          and all(isinstance(x, (dict, list)) for x in a + b)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out)
    elif isinstance(a, SecretStr) or isinstance(b, SecretStr):
        av = a.get_secret_value() if isinstance(a, SecretStr) else a
        bv = b.get_secret_value() if isinstance(b, SecretStr) else b
        if av != bv:
            out.append({"path": path, "before": REDACTED if av else av, "after": REDACTED if bv else bv,
                        "secret": True})
    elif _plain(a) != _plain(b):
        out.append(_change(path, a, b))


def _plain(value: Any) -> Any:
    """Comparable form (secrets by value)."""
    if isinstance(value, SecretStr):
        return ("secret", value.get_secret_value())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def fingerprint(cfg: Config) -> str:
    """SHA-256 of the redacted config: names a version in audit entries without storing it whole."""
    return hashlib.sha256(canonical_json(dump_redacted(cfg)).encode()).hexdigest()


# --- the component -----------------------------------------------------------------------------------


@dataclass
class ReloadResult:
    ok: bool
    trigger: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    skipped: bool = False
    """True when a file change left the content as it was (nothing to do)."""


ReloadHook = Callable[[Config, Config], None]


class ConfigReloader:
    """Component: watches the config file (mtime poll, no extra dependency) and SIGHUP."""

    name = "config-reload"

    def __init__(self, *, holder: ConfigHolder, path: str | os.PathLike[str], db: Database, audit: AuditLog,
                 clock: Clock, poll_seconds: float = 2.0, hooks: list[ReloadHook] | None = None,
                 handle_sighup: bool = True, actor: Actor = RELOADER, settle_seconds: float = 0.5,
                 max_settle_seconds: float = 10.0) -> None:
        self.holder = holder
        self.path = Path(path)
        self.db = db
        self.audit = audit
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.started_with = holder.cfg
        """The config this process started with: what RESTART_SECTIONS are still running on."""
        self.hooks = list(hooks or [])
        """Called as hook(old, new) after a successful swap (e.g. teach the log formatter new secrets)."""
        self.settle_seconds = settle_seconds
        """The file must keep its size and mtime this long before it is read: an editor or `cp` that is
        still writing would otherwise hand us half a file (an empty one wipes contacts, routing, keys)."""
        self.max_settle_seconds = max_settle_seconds
        self.handle_sighup = handle_sighup
        self.actor = actor
        self.reloads = 0
        self.refused = 0
        self._lock = asyncio.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._content_sha: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[ReloadResult]] = set()
        self._sighup = False
        self._missing_logged = False

    async def start(self) -> None:
        try:
            st, text = await asyncio.to_thread(self._read)
            self._signature = _sig(st)
            self._content_sha = _sha(text)
        except OSError as exc:
            # Started from an in-memory config (tests) or the file went away: keep polling for it.
            log.warning("config.reload.no_file", extra={"file": str(self.path), "why": str(exc)})
        if self.handle_sighup:
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup = True
            except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread / Windows
                log.warning("config.reload.no_sighup", extra={"why": str(exc)})
        self._task = asyncio.create_task(self._poll(), name="config-reload-poll")

    async def close(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        tasks = [t for t in [self._task, *self._pending] if t is not None]
        for t in tasks:
            t.cancel()
        for res in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                log.error("config.reload.task.failed", exc_info=res)
        self._task = None
        self._pending.clear()

    def _on_sighup(self) -> None:
        log.info("config.reload.signal", extra={"signal": "SIGHUP", "file": str(self.path)})
        task = asyncio.create_task(self.reload(trigger="sighup"))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _read(self) -> tuple[os.stat_result, str]:
        st = os.stat(self.path)
        return st, self.path.read_text(encoding="utf-8")

    async def _read_settled(self) -> tuple[os.stat_result, str]:
        """Read once size and mtime held still for settle_seconds, and did not move during the read.
        Raises TimeoutError if the file keeps changing for max_settle_seconds (the next change retries)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_settle_seconds
        before = _sig(await asyncio.to_thread(os.stat, self.path))
        while True:
            if self.settle_seconds > 0:
                await asyncio.sleep(self.settle_seconds)
            st, text = await asyncio.to_thread(self._read)
            after = _sig(await asyncio.to_thread(os.stat, self.path))
            if _sig(st) == before == after:
                return st, text
            if loop.time() > deadline:
                raise TimeoutError(f"still changing after {self.max_settle_seconds:g}s")
            log.info("config.reload.settling", extra={"file": str(self.path)})
            before = after

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                st = await asyncio.to_thread(os.stat, self.path)
            except OSError as exc:
                if not self._missing_logged:
                    log.warning("config.reload.unreadable", extra={"file": str(self.path), "why": str(exc)})
                    self._missing_logged = True
                continue
            self._missing_logged = False
            if _sig(st) != self._signature:
                self._signature = _sig(st)
                await self.reload(trigger="file-change", only_if_changed=True)

    async def reload(self, *, trigger: str = "manual", only_if_changed: bool = False) -> ReloadResult:
        """Load, validate, audit, swap. Never raises for a bad file: the result says what was refused."""
        async with self._lock:
            try:
                st, text = await self._read_settled()
            except OSError as exc:
                return self._refuse(trigger, [f"{self.path}: cannot read: {exc.strerror or exc}"])
            except TimeoutError as exc:
                return self._refuse(trigger, [f"{self.path}: not reloaded, the file is {exc}"])
            self._signature = _sig(st)
            sha = _sha(text)
            if only_if_changed and sha == self._content_sha:
                log.debug("config.reload.unchanged", extra={"file": str(self.path), "trigger": trigger})
                return ReloadResult(True, trigger, skipped=True)
            try:
                new = await asyncio.to_thread(config_mod.loads, text, filename=str(self.path))
            except ConfigError as exc:
                self._content_sha = sha  # do not retry the same broken text every poll
                return self._refuse(trigger, exc.problems)
            old = self.holder.cfg
            changes = config_diff(old, new)
            restart = restart_needed(self.started_with, new)
            details = {"file": str(self.path), "trigger": trigger, "changed": changes[:MAX_CHANGES],
                       "count": len(changes), "not_listed": max(0, len(changes) - MAX_CHANGES),
                       "restart_needed": restart, "before_sha256": fingerprint(old),
                       "after_sha256": fingerprint(new)}
            try:
                async with self.db.transaction() as s:
                    await self.audit.append(s, actor=self.actor.identity, source=trigger,
                                            action="config.reload", resource=f"config:{self.path.name}",
                                            now=self.clock.now(), details=details)
            except Exception as exc:
                # No audit entry, no change: the old config stays live and we say why.
                log.exception("config.reload.failed", extra={"file": str(self.path), "trigger": trigger})
                why = f"could not write the audit entry: {type(exc).__name__}: {exc}"
                return self._refuse(trigger, [why], logged=True)
            self._content_sha = sha
            self.holder.replace(new)
            self.reloads += 1
            for hook in self.hooks:
                try:
                    hook(old, new)
                except Exception:  # the new config is live and audited; a hook failing must not hide that
                    log.exception("config.reload.hook.failed", extra={"hook": getattr(hook, "__name__", "?")})
            log.info("config.reloaded", extra={
                "file": str(self.path), "trigger": trigger, "changed": len(changes),
                "paths": [c["path"] for c in changes[:20]], "restart_needed": restart})
            if restart:
                log.warning("config.reload.restart_needed", extra={"sections": restart})
            return ReloadResult(True, trigger, changes, restart_needed=restart)

    def _refuse(self, trigger: str, problems: list[str], *, logged: bool = False) -> ReloadResult:
        self.refused += 1
        if not logged:
            log.error("config.reload.refused", extra={"file": str(self.path), "trigger": trigger,
                                                      "problems": problems, "kept": "previous config"})
        return ReloadResult(False, trigger, problems=problems)


def _sig(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def restart_needed(running: Config, new: Config) -> list[str]:
    """The RESTART_SECTIONS entries in which `new` differs from the config the process started with."""
    paths = [c["path"] for c in config_diff(running, new)]
    return [r for r in RESTART_SECTIONS if any(_under(p, r) for p in paths)]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}[", f"{prefix} "))
