"""Structured logging: one line per event (event name + fields), JSON off a terminal, never a secret."""
from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

_STD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}
# Phone-shaped text: "+" and 7-15 digits with the usual separators, (555) 123-4567 style, or a bare run of
# 10-15 digits. The look-arounds keep IP addresses, dates, ports, hashes and ids out of it.
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[\s().-]{0,2}\d){6,14}(?!\w)"
    r"|(?<![\w.:/+-])\(?\d{3}\)?[\s.-]{1,2}\d{3}[\s.-]\d{4}(?![\w.:/-])"
    r"|(?<![\w.:/+-])\d{10,15}(?![\w.:/-])")
_PHONE_KEYS = ("phone", "msisdn", "from_number", "to_number")
_SECRET_KEYS = ("password", "passwd", "secret", "token", "authorization", "api_key", "key_value", "signature",
                "credential", "cookie", "private_key", "access_key", "checkpoint_key")
# Secrets with a recognisable shape, caught even when config does not know them (a pasted token).
_TOKENS = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bxapp-[A-Za-z0-9-]{10,}"
                     r"|(?<![\d:])\d{6,12}:[A-Za-z0-9_-]{30,}")
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_URL_CREDS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)


def mask_phone(value: str) -> str:
    """+15551234567 -> ********4567: enough to tell people apart, not enough to call them."""
    digits = re.sub(r"\D", "", value)
    return "*" * max(0, len(digits) - 4) + digits[-4:]


_SUSPECT = re.compile(r"[0-9]{3}|\+[0-9]|://|bearer|basic|xox|xapp", re.IGNORECASE)
"""What every shape below needs (three digits in a row or a "+" and a digit, a URL, an auth scheme, a Slack
token prefix): text without any of it skips them. One C-level scan instead of four: a fan-out logs thousands
of lines of mostly plain fields ("INC-12", "hook-7")."""


def scrub_text(text: str) -> str:
    """Free text (messages, exception text, field values): known secrets, token-shaped strings,
    passwords in URLs and phone numbers go; the rest stays readable."""
    text = _Secrets.redact(text)
    if _SUSPECT.search(text) is None:
        return text
    text = _TOKENS.sub("**********", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} **********", text)
    text = _URL_CREDS.sub(r"\1**********@", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


@functools.lru_cache(maxsize=1024)
def _key_kind(key: str) -> int:
    """0 plain, 1 secret, 2 phone: decided once per field name, not once per logged value."""
    k = key.lower()
    if any(m in k for m in _SECRET_KEYS):
        return 1
    return 2 if any(m in k for m in _PHONE_KEYS) else 0


def scrub(value: Any, key: str = "") -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return "**********" if _key_kind(key) == 1 else value
    kind = _key_kind(key)
    if kind == 1:
        return "**********"
    if isinstance(value, str):
        if kind == 2 and sum(c.isdigit() for c in value) >= 4:
            return mask_phone(value)
        return scrub_text(value)
    if isinstance(value, dict):
        return {kk: scrub(v, str(kk)) for kk, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(v, key) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return scrub_text(str(value))  # any other object logs as its str(), which may carry anything


class _Secrets:
    """Known secret values (from config) that must never reach a log line."""

    values: list[str] = []
    pattern: re.Pattern[str] | None = None
    """One alternation of every value, longest first: a single scan per string however many secrets
    there are (thousands of webhook URLs made a loop over them the cost of every log line)."""

    @classmethod
    def set(cls, values: list[str]) -> None:
        cls.values = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
        cls.pattern = re.compile("|".join(map(re.escape, cls.values))) if cls.values else None

    @classmethod
    def redact(cls, text: str) -> str:
        return cls.pattern.sub("**********", text) if cls.pattern is not None else text


set_secret_values = _Secrets.set
redact_secrets = _Secrets.redact
"""Every configured secret value in `text` replaced (for answers shown to people, e.g. a channel test)."""


RESERVED = ("ts", "level", "event", "logger", "exc")
"""Keys every line has; an event field of the same name (escalation.fired's `level`) is renamed with
FIELD_PREFIX, so it can never overwrite them."""
FIELD_PREFIX = "field_"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {(FIELD_PREFIX + k if k in RESERVED else k): scrub(v, k) for k, v in vars(record).items()
            if k not in _STD and not k.startswith("_")}


_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)
"""For what orjson refuses (an integer beyond 64 bits): json.dumps with these options would build an
encoder per call."""


def _encode(out: dict[str, Any]) -> str:
    """One JSON line: orjson (a fan-out writes a line per page; the standard library took a fifth of the
    cost of each), the standard library for what orjson cannot write."""
    try:
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _ENCODER.encode(out)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(), "event": scrub_text(record.getMessage()), "logger": record.name}
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = scrub_text(self.formatException(record.exc_info))
        return _Secrets.redact(_encode(out))


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {scrub_text(record.getMessage())} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + scrub_text(self.formatException(record.exc_info))
        return _Secrets.redact(line)


def setup(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    # Our lines carry neither the caller's file and line nor thread and process ids: the logging HOWTO's
    # "Optimization" switches, so a record does not walk the stack or ask for them (a fan-out logs a line
    # per page).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    use_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiosqlite", "sqlalchemy.engine", "apscheduler", "httpx", "botocore", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
