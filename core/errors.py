"""One exception family for the whole core, so adapters map a single vocabulary to their platform."""
from __future__ import annotations


class TocsinError(Exception):
    """Base of every error the core raises on purpose; the message is safe to show to the user."""

    code = "error"


class NotFound(TocsinError):
    code = "not_found"


class InvalidTransition(TocsinError):
    code = "invalid_transition"


class Forbidden(TocsinError):
    code = "forbidden"


class InvalidInput(TocsinError):
    code = "invalid_input"


class ConfigError(TocsinError):
    """A config file failed to load; `problems` holds one `file:line path: message` string each."""

    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StorageUnavailable(TocsinError):
    """The database cannot store a change now (unreachable, deleted, replaced, unwritable, missing).
    Nothing of the change was stored; the message names the database and what is wrong."""

    code = "database_unavailable"
