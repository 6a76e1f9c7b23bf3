"""Structured logging: one line per event (event name + fields), JSON off a terminal, never a secret."""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

_STD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key", "key_value", "signature")


def mask_phone(value: str) -> str:
    """+15551234567 -> ********4567: enough to tell people apart, not enough to call them."""
    digits = re.sub(r"\D", "", value)
    return "*" * max(0, len(digits) - 4) + digits[-4:]


def scrub(value: Any, key: str = "") -> Any:
    if any(m in key.lower() for m in _SECRET_KEYS):
        return "**********"
    if isinstance(value, str):
        return _PHONE.sub(lambda m: mask_phone(m.group(0)), value)
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


class _Secrets:
    """Known secret values (from config) that must never reach a log line."""

    values: list[str] = []

    @classmethod
    def set(cls, values: list[str]) -> None:
        cls.values = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    @classmethod
    def redact(cls, text: str) -> str:
        for v in cls.values:
            if v in text:
                text = text.replace(v, "**********")
        return text


set_secret_values = _Secrets.set


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: scrub(v, k) for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(), "event": record.getMessage(), "logger": record.name}
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _Secrets.redact(json.dumps(out, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _Secrets.redact(line)


def setup(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiosqlite", "sqlalchemy.engine", "apscheduler", "httpx", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
