"""`tocsin incident subscribe|unsubscribe|subscriptions`: the real CLI in a subprocess with the shipped config
(cli:alice is contact alice, mapped to tenant acme), the chat grammar and answers, errors on stderr."""
from __future__ import annotations

from pathlib import Path

from tests.core.test_cli import tocsin


def test_subscriptions_from_the_cli(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert tocsin(tmp_path, "incident", "declare", "sev2", "Disk", "full").returncode == 0
    r = tocsin(tmp_path, "incident", "subscribe", "INC-1")
    assert r.returncode == 0 and r.stdout.startswith("alice now follows INC-1"), r.stderr
    r = tocsin(tmp_path, "incident", "subscribe", "sev1", "tenant:acme")
    assert r.returncode == 0 and r.stdout.startswith("alice now follows sev1 tenant:acme")
    r = tocsin(tmp_path, "incident", "subscribe", "tenant:globex")
    assert r.returncode == 1 and "may not follow tenant 'globex': contacts[alice].tenants does not list it" in r.stderr
    r = tocsin(tmp_path, "incident", "subscribe", "sevX")
    assert r.returncode == 2 and "error: 'sevX' is not something to follow" in r.stderr
    r = tocsin(tmp_path, "incident", "subscribe", "INC-5")
    assert r.returncode == 1 and r.stderr.strip() == "error: no incident INC-5"
    r = tocsin(tmp_path, "incident", "subscribe", "INC-1", user="nobody")
    assert r.returncode == 1 and "cli:nobody is not linked to a contact" in r.stderr
    r = tocsin(tmp_path, "incident", "subscriptions")
    assert r.returncode == 0 and "alice follows (2)" in r.stdout and "sev1 tenant:acme" in r.stdout
    r = tocsin(tmp_path, "incident", "unsubscribe", "INC-1")
    assert r.returncode == 0 and r.stdout.strip() == "alice no longer follows INC-1."
    r = tocsin(tmp_path, "incident", "unsubscribe", "INC-1")
    assert r.returncode == 1 and "alice does not follow INC-1" in r.stderr
