"""`tocsin config check` (and hot reload, which uses the same loader) refuses every config that `run` or a
page would later choke on, each as one `file:line key.path: message` line and never a traceback."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main
from core.config import MAX_ALIAS_NODES, loads
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
KEY_A = "a" * 16 + "-first"
KEY_B = "b" * 16 + "-second"


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        loads(text, filename="config.yaml", env=env or {})
    return exc.value.problems


QUIET = "contacts:\n  - name: a\n    quiet_hours:\n      start: '22:00'\n      end: {end}\n"


@pytest.mark.parametrize("end", ["'24:00'", "'25:99'", "'7:60'", "'noon'"])
def test_times_outside_the_day_are_refused(end: str) -> None:
    (problem,) = errors_of(QUIET.format(end=end))
    assert problem.startswith("config.yaml:5 contacts[0].quiet_hours.end: must be a time from 00:00 to 23:59")


def test_times_unquoted_or_short_are_explained_or_normalized() -> None:
    (problem,) = errors_of(QUIET.format(end="22:30"))  # YAML 1.1 reads 22:30 as the number 1350
    assert problem == 'config.yaml:5 contacts[0].quiet_hours.end: must be a time in quotes, like "22:00"'
    cfg = loads(QUIET.format(end="'7:05'"), env={})
    assert cfg.contacts[0].quiet_hours is not None and cfg.contacts[0].quiet_hours.end == "07:05"


def test_duplicate_keys_at_any_depth_name_both_lines() -> None:
    text = "server:\n  port: 9000\ndatabase:\n  url: sqlite+aiosqlite:///x.db\nserver:\n  host: 0.0.0.0\n"
    assert errors_of(text) == ["config.yaml:5 server: duplicate key (first at line 1); the second would "
                               "silently replace the first"]
    nested = "contacts:\n  - name: a\n    email: a@example.com\n    name: b\n"
    assert errors_of(nested) == ["config.yaml:4 contacts[0].name: duplicate key (first at line 2); the second "
                                 "would silently replace the first"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "---\n...\n"])
def test_empty_or_comment_only_file_is_refused(text: str) -> None:
    assert errors_of(text) == ["config.yaml:1: config.yaml is empty (no settings, only comments or nothing); "
                               "refusing it rather than running on defaults"]


BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] +
                 [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)] +
                 ["server: *i", ""])


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.monotonic()
    (problem,) = errors_of(BOMB)
    assert time.monotonic() - started < 1.0
    assert f"YAML aliases expand to more than {MAX_ALIAS_NODES} repeated nodes" in problem
    assert problem.startswith("config.yaml:")
    # a few ordinary aliases are fine
    cfg = loads("contacts:\n  - name: a\n    preferences: &d {default: [email]}\n  - name: b\n"
                "    preferences: *d\n", env={})
    assert cfg.contacts[1].preferences.default == ["email"]


def test_alias_bomb_check_cli_is_bounded_in_time_and_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1024 * 1024 * 1024, 1024 * 1024 * 1024))

    out = subprocess.run([sys.executable, "-m", "bot", "config", "check", str(path)], capture_output=True,
                         text=True, timeout=60, preexec_fn=limit, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith(f"{path}:") and "alias bomb" in out.stderr


def test_recursive_alias_is_refused() -> None:
    (problem,) = errors_of("server: &s\n  nested: *s\n")
    assert "recursive document" in problem


SLACK_ON = "slack:\n  enabled: true\n  signing_secret: s3cret\n"


@pytest.mark.parametrize("text, expected", [
    (SLACK_ON, "config.yaml:2 slack.bot_token: required when slack.enabled is true"),
    ("slack:\n  enabled: true\n  bot_token: xoxb-1\n",
     "config.yaml:2 slack.signing_secret: required to receive Slack requests over HTTP"),
    ("teams:\n  enabled: true\n", "config.yaml:2 teams.app_id: empty, so requests to /api/messages could not"),
    ("teams:\n  enabled: true\n  app_id: abc\n", "config.yaml:3 teams.app_password: required when teams.app_id"),
    ("telegram:\n  enabled: true\n  mode: polling\n", "config.yaml:2 telegram.bot_token: required when"),
    ("telegram:\n  enabled: true\n  bot_token: '1:x'\n  webhook_secret: 'has spaces'\n",
     "config.yaml:4 telegram.webhook_secret: 1-256 characters"),
    ("server:\n  public_url: http://x\ntelegram:\n  enabled: true\n  bot_token: '1:x'\n  webhook_secret: ok\n",
     "config.yaml:2 server.public_url: Telegram only calls HTTPS webhooks"),
])
def test_platform_requirements_are_config_errors(text: str, expected: str) -> None:
    problems = errors_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_platform_requirement_check_and_run_say_the_same_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'x.db'}\n" + SLACK_ON)
    assert main(["config", "check", str(path)]) == 1
    check_err = capsys.readouterr().err
    assert check_err == f"{path}:4 slack.bot_token: required when slack.enabled is true\n"
    assert main(["--config", str(path), "run"]) == 1
    assert capsys.readouterr().err == check_err


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/tocsin", "sqlite:///tocsin.db",
                                 "postgresql://u@h/db", "not a url"])
def test_unsupported_database_urls_name_the_supported_ones(url: str) -> None:
    (problem,) = errors_of(f"database:\n  url: '{url}'\n")
    assert problem.startswith("config.yaml:2 database.url: ")
    assert "sqlite+aiosqlite:///" in problem and "postgresql+asyncpg://" in problem
    assert "hunter2" not in problem


def test_malformed_env_reference() -> None:
    assert errors_of("audit:\n  checkpoint_key: ${KEY\n") == [
        "config.yaml:2 audit.checkpoint_key: malformed ${...} reference; write ${NAME} or ${NAME:-default}"]
    assert errors_of("audit:\n  checkpoint_key: 'x-${1BAD}'\n")[0].startswith("config.yaml:2 audit.checkpoint_key")


def test_api_keys_short_or_shared_are_refused() -> None:
    text = (f"api:\n  keys:\n    - {{name: a, key: {KEY_A}}}\n    - {{name: b, key: short}}\n"
            f"    - {{name: c, key: {KEY_A}}}\n")
    problems = errors_of(text)
    assert problems == [
        "config.yaml:4 api.keys[1].key: key of 'b' is 5 characters; use at least 16 random ones "
        "(e.g. `openssl rand -hex 24`)",
        "config.yaml:5 api.keys[2].key: key of 'c' has the same value as the key of 'a' (api.keys[0]); "
        "give each caller its own"]
    assert KEY_A not in " ".join(problems)
    loads(f"api:\n  keys:\n    - {{name: a, key: {KEY_A}}}\n    - {{name: b, key: {KEY_B}}}\n", env={})


def test_cross_reference_errors_point_at_the_referring_item() -> None:
    base = ("contacts:\n  - name: a\n    email: a@example.com\n"       # 1-3
            "contact_lists:\n  - name: l\n    members: [a]\n"            # 4-6
            "routing:\n  rules:\n    - name: r1\n      targets: {lists: [l]}\n"  # 7-10
            "    - name: r2\n      targets:\n        lists: [l]\n"                   # 11-13
            "        destinations:\n          - nowhere\n"                            # 14-15
            "      escalation_policy: ghost\n")                                        # 16
    assert errors_of(base) == [
        "config.yaml:15 routing.rules[1].targets.destinations[0]: routing rule 'r2' names unknown "
        "destination 'nowhere'",
        "config.yaml:16 routing.rules[1].escalation_policy: routing rule 'r2' names unknown escalation "
        "policy 'ghost'"]
    dup = "contacts:\n  - name: a\n  - name: b\n  - name: a\n"
    assert errors_of(dup) == ["config.yaml:4 contacts[2].name: name 'a' is used twice (first at contacts[0])"]


def test_human_wording_for_common_mistakes() -> None:
    assert errors_of("contacts:\n  - name: a\n    phone: 555-0100\n") == [
        "config.yaml:3 contacts[0].phone: phone must be E.164, like +15550100001"]
    assert errors_of("contacts:\n  - name: a\n    phone: +15550100001\n") == [
        "config.yaml:3 contacts[0].phone: phone must be E.164, like +15550100001 (in quotes)"]
    assert errors_of("contacts:\n  - name: a\n    email: alice\n") == [
        "config.yaml:3 contacts[0].email: email must look like name@example.com"]
    assert errors_of("worker:\n  batch_size: 0\n") == ["config.yaml:2 worker.batch_size: must be at least 1"]
    assert errors_of("slack:\n  enabled: maybe\n") == ["config.yaml:2 slack.enabled: must be true or false"]
    assert errors_of("contacts:\n  - name: a\n    emial: a@example.com\n") == [
        "config.yaml:3 contacts[0].emial: unknown key (did you mean 'email'?)"]


def test_telegram_chat_ids_written_as_numbers_are_accepted() -> None:
    cfg = loads("telegram:\n  incident_chat_id: -1001234567890\ncontacts:\n  - name: a\n"
                "    chat: {telegram: 4242}\ndestinations:\n  - {name: t, channel: telegram, chat_id: -100200}\n",
                env={})
    assert cfg.telegram.incident_chat_id == "-1001234567890"
    assert cfg.contacts[0].chat.telegram == "4242"
    assert cfg.destinations[0].chat_id == "-100200"


def test_shipped_config_still_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(ROOT / "config.yaml")]) == 0
