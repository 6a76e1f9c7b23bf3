"""ntfy and PagerDuty senders against loopback stand-ins that speak each protocol (tests/stand_ins/)."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from core.config import ConfigHolder
from core.delivery.ntfy import NtfySender
from core.delivery.pagerduty import PagerDutySender
from core.errors import ConfigError
from core.config import loads
from tests.delivery.helpers import NORMAL_TIMEOUT, config, envelope, notification, retry
from tests.stand_ins.http import HttpStandIn, retry_after
from tests.stand_ins.ntfy import NtfyStandIn
from tests.stand_ins.pagerduty import PagerDutyStandIn

KEY = "R0UTINGKEY0000000000000000000001"


def ntfy_config(base: str, **extra: Any) -> Any:
    return config(
        contacts=[{"name": "alice", "ntfy_topic": "alice-pages", "preferences": {"default": ["ntfy"]}},
                  {"name": "bob", "ntfy_topic": f"{base}/bob-pages"}],
        destinations=[{"name": "ops-ntfy", "channel": "ntfy", "url": f"{base}/ops", "token": "tk_opsSECRET"}],
        channels={"ntfy": {"server": base, "token": "tk_aliceSECRET", **retry(NORMAL_TIMEOUT)}}, **extra)


async def test_ntfy_contact_topic_json_publish(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ntfy = NtfyStandIn(peer, tokens={"alice-pages": "tk_aliceSECRET"})
    sender = NtfySender(ConfigHolder(ntfy_config(ntfy.url)), http=http)
    n = notification(links={"Incident": "https://tocsin.example/incidents/12"},
                     ack_url="https://tocsin.example/ack/tok123")
    result = await sender.send(envelope("ntfy", "alice-pages", n))
    assert result.outcome == "delivered" and "accepted, id msg" in result.summary, result
    [msg] = ntfy.messages
    assert msg["topic"] == "alice-pages"
    assert msg["title"] == "[SEV1] INC-12 Declared: Database <primary> down & out"
    assert msg["priority"] == 5 and msg["tags"] == ["rotating_light", "INC-12"]
    assert "Writes fail since 10:02." in msg["message"] and "service: db" in msg["message"]
    assert msg["click"] == "https://tocsin.example/incidents/12"
    assert msg["actions"] == [
        {"action": "view", "label": "Open incident", "url": "https://tocsin.example/incidents/12", "clear": False},
        {"action": "view", "label": "Acknowledge", "url": "https://tocsin.example/ack/tok123", "clear": True}]
    assert peer.requests[0].path == "/" and peer.requests[0].headers["Authorization"] == "Bearer tk_aliceSECRET"


@pytest.mark.parametrize(("severity", "priority"), [("sev1", 5), ("sev2", 4), ("sev3", 3), ("sev4", 2)])
async def test_ntfy_priority_follows_severity(peer: HttpStandIn, http: aiohttp.ClientSession, severity: str,
                                              priority: int) -> None:
    ntfy = NtfyStandIn(peer)
    sender = NtfySender(ConfigHolder(ntfy_config(ntfy.url)), http=http)
    assert (await sender.send(envelope("ntfy", "alice-pages", notification(severity=severity)))).outcome == \
        "delivered"
    assert ntfy.messages[0]["priority"] == priority


async def test_ntfy_destination_and_topic_url(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ntfy = NtfyStandIn(peer, tokens={"ops": "tk_opsSECRET"})
    sender = NtfySender(ConfigHolder(ntfy_config(ntfy.url)), http=http)
    # an incident-link ack (no signed /ack/ link) opens the incident instead of POSTing to it
    n = notification(kind="RESOLVED", severity="sev2", links={"Incident": "https://t.example/incidents/1"},
                     ack_url="https://t.example/incidents/1")
    assert (await sender.send(envelope("ntfy", "ops-ntfy", n, recipient="ops-ntfy"))).outcome == "delivered"
    assert (await sender.send(envelope("ntfy", f"{ntfy.url}/bob-pages", recipient="bob"))).outcome == "delivered"
    ops, bob = ntfy.messages
    assert ops["topic"] == "ops" and "white_check_mark" in ops["tags"]
    assert [a["action"] for a in ops["actions"]] == ["view"]  # resolved: nothing left to acknowledge
    assert peer.requests[0].headers["Authorization"] == "Bearer tk_opsSECRET"
    assert bob["topic"] == "bob-pages"


async def test_ntfy_wrong_token_is_permanent_without_the_token(peer: HttpStandIn,
                                                               http: aiohttp.ClientSession) -> None:
    ntfy = NtfyStandIn(peer, tokens={"alice-pages": "another"})
    sender = NtfySender(ConfigHolder(ntfy_config(ntfy.url)), http=http)
    result = await sender.send(envelope("ntfy", "alice-pages"))
    assert result.outcome == "permanent" and result.status_code == 401 and "unauthorized" in result.summary
    assert "SECRET" not in result.summary


async def test_ntfy_429_retries_after(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ntfy = NtfyStandIn(peer)
    peer.script("/", retry_after(7, body={"code": 42901, "http": 429, "error": "limit reached: too many requests"}))
    sender = NtfySender(ConfigHolder(ntfy_config(ntfy.url)), http=http)
    result = await sender.send(envelope("ntfy", "alice-pages"))
    assert (result.outcome, result.retry_after) == ("retry", 7.0) and "too many requests" in result.summary
    assert (await sender.send(envelope("ntfy", "alice-pages"))).outcome == "delivered"


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "x", "channel": "ntfy"}, "needs url"),
    ({"name": "x", "channel": "ntfy", "url": "https://ntfy.sh/"}, "needs url"),
    ({"name": "x", "channel": "pagerduty"}, "needs routing_key"),
    ({"name": "x", "channel": "pagerduty", "routing_key": "k", "url": "ftp://pd"}, "Events API v2 URL"),
])
def test_bad_destinations_fail_at_load_with_a_line(entry: dict[str, Any], message: str) -> None:
    import yaml

    text = yaml.safe_dump({"destinations": [entry]})
    with pytest.raises(ConfigError) as err:
        loads(text, filename="c.yaml")
    assert any(line.startswith("c.yaml:2 destinations[0]") and message in line for line in err.value.problems)


def test_bad_contact_topic_fails_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        loads("contacts:\n  - name: a\n    ntfy_topic: 'has space'\n", filename="c.yaml")
    assert "c.yaml:3 contacts[0].ntfy_topic" in str(err.value)


# --- PagerDuty --------------------------------------------------------------------------------------------


def pd_config(url: str) -> Any:
    return config(destinations=[{"name": "pd", "channel": "pagerduty", "url": url, "routing_key": KEY}],
                  channels={"pagerduty": retry(NORMAL_TIMEOUT)})


async def test_pagerduty_trigger_ack_resolve_share_one_dedup_key(peer: HttpStandIn,
                                                                 http: aiohttp.ClientSession) -> None:
    pd = PagerDutyStandIn(peer, routing_keys=(KEY,))
    sender = PagerDutySender(ConfigHolder(pd_config(pd.url)), http=http)
    links = {"Incident": "https://tocsin.example/incidents/12"}
    for kind, state in (("INITIAL", "triggered"), ("ACK", "acknowledged"), ("RESOLVED", "resolved")):
        result = await sender.send(envelope("pagerduty", "pd", notification(kind=kind, links=links)))
        assert result.outcome == "delivered" and result.status_code == 202, result
        assert "dedup_key INC-12" in result.summary
        assert pd.alerts == {"INC-12": state}
    trigger, ack, resolve = pd.events
    assert [e["event_action"] for e in pd.events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in pd.events} == {"INC-12"}
    p = trigger["payload"]
    assert p["severity"] == "critical" and p["source"] == "alertmanager"
    assert p["summary"] == "[SEV1] INC-12 Declared: Database <primary> down & out"
    assert p["custom_details"]["thread"] == "https://tocsin.example/incidents/12"
    assert "payload" not in ack and "payload" not in resolve


@pytest.mark.parametrize(("severity", "pd_severity"), [("sev1", "critical"), ("sev2", "error"),
                                                      ("sev3", "warning"), ("sev4", "info")])
async def test_pagerduty_severity_map(peer: HttpStandIn, http: aiohttp.ClientSession, severity: str,
                                      pd_severity: str) -> None:
    pd = PagerDutyStandIn(peer, routing_keys=(KEY,))
    sender = PagerDutySender(ConfigHolder(pd_config(pd.url)), http=http)
    assert (await sender.send(envelope("pagerduty", "pd", notification(severity=severity)))).outcome == "delivered"
    assert pd.events[0]["payload"]["severity"] == pd_severity


async def test_pagerduty_400_is_permanent_with_its_errors_and_no_key(peer: HttpStandIn,
                                                                     http: aiohttp.ClientSession) -> None:
    pd = PagerDutyStandIn(peer, routing_keys=("another-key",))
    sender = PagerDutySender(ConfigHolder(pd_config(pd.url)), http=http)
    result = await sender.send(envelope("pagerduty", "pd"))
    assert result.outcome == "permanent" and result.status_code == 400
    assert result.summary == "HTTP 400: Event object is invalid: 'routing_key' is invalid"
    assert KEY not in result.summary


@pytest.mark.parametrize("reply", [retry_after(3), retry_after(2, status=503), (500, "oops")])
async def test_pagerduty_429_and_5xx_retry(peer: HttpStandIn, http: aiohttp.ClientSession, reply: Any) -> None:
    pd = PagerDutyStandIn(peer, routing_keys=(KEY,))
    peer.script("/v2/enqueue", reply)
    sender = PagerDutySender(ConfigHolder(pd_config(pd.url)), http=http)
    first = await sender.send(envelope("pagerduty", "pd"))
    assert first.outcome == "retry"
    assert (await sender.send(envelope("pagerduty", "pd"))).outcome == "delivered"
    assert pd.alerts == {"INC-12": "triggered"}


def test_pagerduty_default_events_url() -> None:
    cfg = config(destinations=[{"name": "pd", "channel": "pagerduty", "routing_key": KEY}])
    dest = cfg.destination("pd")
    assert dest is not None and dest.url is not None
    assert dest.url.get_secret_value() == "https://events.pagerduty.com/v2/enqueue"


def test_a_contact_preferring_ntfy_is_routed_to_its_topic() -> None:
    from datetime import UTC, datetime

    from core.config import Targets
    from core.routing import resolve_targets

    cfg = ntfy_config("https://ntfy.example")
    planned, skipped = resolve_targets(cfg, Targets(contacts=["alice"], destinations=["ops-ntfy"]),
                                       severity="sev1", now=datetime.now(UTC), reason="test")
    assert [(d.recipient, d.channel, d.address) for d in planned] == [
        ("alice", "ntfy", "alice-pages"), ("ops-ntfy", "ntfy", "ops-ntfy")]
    assert skipped == []


async def test_ntfy_and_webpush_pages_carry_the_contacts_signed_ack_link(make_ctx: Any) -> None:
    from sqlalchemy import select

    from core.delivery.message import Notification
    from core.models import Delivery
    from core.rbac import Actor

    ctx = await make_ctx(server={"public_url": "https://tocsin.example", "ack_link_secret": "s" * 40},
                         contacts=[{"name": "alice", "ntfy_topic": "alice-pages", "console_user": "alice",
                                    "preferences": {"default": ["ntfy", "webpush"]}},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com"}])
    await ctx.service.declare(actor=Actor("cli:op"), title="Disk full", severity="sev2")
    async with ctx.db.transaction() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.recipient == "alice"))).scalars().all()
    assert sorted(r.channel for r in rows) == ["ntfy", "webpush"]
    for r in rows:
        n = Notification.from_json(r.notification_json)
        assert n.ack_url and n.ack_url.startswith("https://tocsin.example/ack/"), (r.channel, n.ack_url)
