"""One validation for every entry point (core/validation.py): the service, chat, the CLI (and the API in
tests/api/test_events.py) give the same answer for titles, texts, severities and ids; control characters,
escape sequences and bidi overrides are stripped before anything is stored."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.context import Context
from bot.dispatch import run_text
from core.errors import InvalidInput
from core.rbac import Actor
from core.validation import TITLE_MAX, check_text, check_title, clean_text, clean_title, parse_ref
from tests.core.test_cli import tocsin

OP = Actor("slack:UOP", "slack")
NASTY = "\x1b[2J\x1b[31mDB\x1b[0m \u202eown\u202c\x00\x07 \x9b1mfire\x1b]0;pwned\x07!"


@pytest.mark.parametrize(("raw", "title", "text"), [
    ("plain", "plain", "plain"),
    ("tab\there", "tab here", "tab\there"),
    ("two\r\nlines\n", "two  lines", "two\nlines"),
    (NASTY, "DB own fire!", "DB own fire!"),
    ("\x1b[1;31mred\x1b[m bold\x1bc", "red bold", "red bold"),
    ("abc\u2066def\u2069\u202d", "abcdef", "abcdef"),
    ("del\x7fete \x85next", "delete next", "delete next"),
    ("café ⚠ 事故", "café ⚠ 事故", "café ⚠ 事故"),  # printable Unicode is untouched
])
def test_cleaning_table(raw: str, title: str, text: str) -> None:
    assert clean_title(raw) == title
    assert clean_text(raw) == text


def test_limits_and_wording() -> None:
    assert check_title("x" * TITLE_MAX) == "x" * TITLE_MAX
    with pytest.raises(InvalidInput, match="^the title is longer than 500 characters$"):
        check_title("x" * (TITLE_MAX + 1))
    with pytest.raises(InvalidInput, match="an incident needs a title"):
        check_title("\x1b[2J\x00 \u202e")  # nothing left after cleaning
    with pytest.raises(InvalidInput, match="an update needs text"):
        check_text("\x07", what="an update")
    assert parse_ref("inc-7") == parse_ref(" INC7 ") == parse_ref(7) == 7
    with pytest.raises(InvalidInput) as exc:
        parse_ref("INC-\x1b[2J" + "9" * 60)
    assert "\x1b" not in str(exc.value) and len(str(exc.value)) < 120  # the error cannot carry escapes


async def test_service_stores_clean_titles_and_texts(ctx: Context) -> None:
    svc = ctx.service
    out = await svc.declare(actor=OP, title=NASTY, severity="sev2", description="line 1\n\tline 2\x1b[K")
    assert out.incident.title == "DB own fire!" and out.incident.description == "line 1\n\tline 2"
    await svc.update(out.incident.id, actor=OP, text="rolled \u202eback\x1b[0m\nok")
    await svc.resolve(out.incident.id, actor=OP, text="\x1b[31m\x1b[0m")  # only escapes: the default text
    thread = (await svc.detail(out.incident.id)).thread
    assert [m.body for m in thread] == ["line 1\n\tline 2", "rolled back\nok", "Resolved."]
    with pytest.raises(InvalidInput, match="the title is longer than 500 characters"):
        await svc.declare(actor=OP, title="t" * 10_000, severity="sev2")
    with pytest.raises(InvalidInput, match="an update needs text"):
        await svc.update(out.incident.id, actor=OP, text="\x00\x1b[2J")


async def test_chat_gives_the_service_answer(ctx: Context) -> None:
    _, reply = await run_text(ctx.service, OP, "declare sev2 " + "t" * 600)
    assert not reply.ok and "the title is longer than 500 characters" in reply.text
    _, reply = await run_text(ctx.service, OP, "declare sev2 Disk \x1b[31mfull\x1b[0m")
    assert reply.ok and "Disk full" in reply.text and "\x1b" not in reply.text
    assert (await ctx.service.get(1)).title == "Disk full"


def test_cli_gives_the_service_answer_and_stores_clean_titles(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    r = tocsin(tmp_path, "incident", "declare", "sev2", "t" * 10_000)
    assert r.returncode != 0 and "the title is longer than 500 characters" in r.stderr + r.stdout
    r = tocsin(tmp_path, "incident", "declare", "sev2", "\x1b[2J\x1b[HScreen \u202ecleared")
    assert r.returncode == 0, r.stderr
    r = tocsin(tmp_path, "incident", "list")
    assert "Screen cleared" in r.stdout and "\x1b" not in r.stdout and "\u202e" not in r.stdout
