"""config.yaml loading: interpolation, validation, and errors that name file, line and key path."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from core.config import load, loads
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        loads(text, filename="config.yaml", env=env or {})
    return exc.value.problems


def test_shipped_config_is_valid() -> None:
    cfg = load(ROOT / "config.yaml", env={})
    assert cfg.database.url.startswith("sqlite+aiosqlite:///")
    assert cfg.contact_lists and cfg.routing.rules and cfg.escalation_policies
    assert all(getattr(cfg.channels, ch).outbox for ch in ("email", "sms", "voice", "webhook"))


def test_env_interpolation_with_default_and_required() -> None:
    text = "audit:\n  checkpoint_key: ${KEY}\ndatabase:\n  url: ${DB:-sqlite+aiosqlite:///x.db}\n"
    cfg = loads(text, env={"KEY": "s3cret"})
    assert cfg.audit.checkpoint_key.get_secret_value() == "s3cret"
    assert cfg.database.url == "sqlite+aiosqlite:///x.db"
    assert "s3cret" not in repr(cfg)  # SecretStr never prints
    problems = errors_of(text)
    assert problems == ["config.yaml:2 audit.checkpoint_key: environment variable KEY is not set "
                        "(use ${KEY:-default} for a default)"]


@pytest.mark.parametrize("text, expected", [
    ("routing:\n  rules:\n    - name: a\n      min_severity: sev9\n",
     "config.yaml:4 routing.rules[0].min_severity: must be one of sev1..sev4"),
    ("server:\n  port: eighty\n", "config.yaml:2 server.port: must be a whole number"),
    ("server:\n  prot: 80\n", "config.yaml:2 server.prot: unknown key (did you mean 'port'?)"),
    ("contacts:\n  - email: x@y.z\n", "config.yaml:2 contacts[0].name: required key is missing"),
    ("contacts:\n  - name: a\n    phone: '555'\n", "config.yaml:3 contacts[0].phone: phone must be E.164, like +15550100001"),
    ("access:\n  bob: admin\n", "config.yaml:2 access.bob: identity 'bob' must look like platform:user_id"),
    ("access:\n  'slack:U1': wizard\n", "config.yaml:2 access.slack:U1: must be one of admin, manager"),
    ("routing:\n  rules:\n    - name: r\n      conditions:\n        - field: a\n          operator: regex\n"
     "          value: '(['\n", "config.yaml:5 routing.rules[0].conditions[0]: bad regex '(['"),
    ("routing:\n  rules:\n    - name: r\n      conditions:\n        - field: a\n          operator: like\n",
     "config.yaml:6 routing.rules[0].conditions[0].operator: must be 'eq', 'ne'"),
    ("contact_lists:\n  - name: a\n    lists: [b]\n  - name: b\n    lists: [a]\n",
     "config.yaml:5 contact_lists[1].lists[0]: contact lists form a cycle: a -> b -> a"),
    ("contact_lists:\n  - name: a\n    members: [ghost]\n",
     "config.yaml:3 contact_lists[0].members[0]: contact list 'a' names unknown contact 'ghost'"),
    ("contacts:\n  - name: a\n    quiet_hours: {start: '22:00', end: '07:00', timezone: Mars/Base}\n",
     "config.yaml:3 contacts[0].quiet_hours.timezone: unknown timezone 'Mars/Base'"),
])
def test_bad_values_name_line_and_path(text: str, expected: str) -> None:
    problems = errors_of(text)
    assert any(expected in p for p in problems), problems


def test_malformed_yaml_names_the_line() -> None:
    problems = errors_of("server:\n  port: 80\n  host: [unclosed\nother: 1\n")
    assert len(problems) == 1 and problems[0].startswith("config.yaml:")
    assert "invalid YAML" in problems[0]
    assert errors_of("- just\n- a list\n") == ["config.yaml:1: the top level must be a mapping of sections"]


def test_severity_aliases_accepted() -> None:
    cfg = loads("routing:\n  rules:\n    - name: a\n      min_severity: HIGH\n", env={})
    assert cfg.routing.rules[0].min_severity == "sev2"


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("server:\n  port: 9000\n")
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: 9000\n  colour: blue\n")
    assert main(["config", "check", str(bad)]) == 1
    assert f"{bad}:3 server.colour: unknown key" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import resolve_path

    monkeypatch.setenv("TOCSIN_CONFIG", str(tmp_path / "env.yaml"))
    assert resolve_path("cli.yaml") == Path("cli.yaml")
    assert resolve_path(None) == tmp_path / "env.yaml"
    monkeypatch.delenv("TOCSIN_CONFIG")
    assert resolve_path(None) == Path("config.yaml")


def test_ack_link_secret_must_be_long() -> None:
    problems = errors_of("server:\n  public_url: https://t.example\n  ack_link_secret: short\n")
    assert problems == ["config.yaml:3 server.ack_link_secret: must be at least 32 characters "
                        "(e.g. `openssl rand -hex 32`)"], problems
    cfg = loads("server:\n  ack_link_secret: " + "k" * 32 + "\n", filename="config.yaml", env={})
    assert cfg.server.ack_link_secret is not None and "k" * 32 not in repr(cfg.server)


@pytest.mark.parametrize("text, expected", [
    ("roles:\n  captain:\n    description: Steer.\n", "config.yaml:2 roles.captain: unknown key"),
    ("roles:\n  comms:\n    description: '   '\n",
     "config.yaml:3 roles.comms.description: must not be blank: the new holder is told this"),
    ("roles:\n  scribe: {}\n", "config.yaml:2 roles.scribe.description: required key is missing"),
    ("contacts:\n  - name: a\n    chat: {telegram_username: '@a b'}\n",
     "config.yaml:3 contacts[0].chat.telegram_username: Telegram username '@a b' must be 3-32 letters"),
])
def test_roles_and_telegram_usernames_are_checked_at_load(text: str, expected: str) -> None:
    problems = errors_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_role_descriptions_default_per_role_and_can_be_set() -> None:
    from core.config import DEFAULT_ROLE_DESCRIPTIONS

    cfg = loads("roles:\n  comms:\n    description: Update every 20 minutes.\n", env={})
    assert cfg.roles.description("comms") == "Update every 20 minutes."
    assert cfg.roles.description("scribe") == DEFAULT_ROLE_DESCRIPTIONS["scribe"]
    assert loads("contacts:\n  - name: a\n    chat: {telegram_username: '@al_ops'}\n",
                 env={}).contacts[0].chat.telegram_username == "al_ops"
