"""A webhook receiver that echoes the request back in its error page (Express answers
`Cannot POST /services/T0/B0/<token>`; debugging proxies echo headers) must not put the secret part of the
destination URL, its headers or its HMAC key into the attempt summary, which is logged, audited and shown
by the API and the console."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from core.config import ConfigHolder
from core.delivery.slack_webhook import SlackWebhookSender
from core.delivery.teams_webhook import TeamsWebhookSender
from core.delivery.webhook import WebhookSender
from tests.delivery.helpers import config, envelope
from tests.stand_ins.http import HttpStandIn, Recorded

PATH_TOKEN = "T0ECHO/B0ECHO/s3cretPathToken42"
QUERY_TOKEN = "sig=s3cretQueryToken42"
HEADER_SECRET = "s3cretHeaderValue42"
HMAC_SECRET = "s3cretHmacKey42"


def echo(req: Recorded) -> tuple[int, str]:
    """Everything the request carried, back in a 4xx/5xx page."""
    headers = "; ".join(f"{k}: {v}" for k, v in req.headers.items())
    query = "&".join(f"{k}={v}" for k, v in req.query.items())
    return 404, f"Cannot POST {req.path}?{query} ({headers})"


@pytest.fixture
async def peer() -> AsyncIterator[HttpStandIn]:
    async with HttpStandIn() as p:
        p.on("/*", echo)
        yield p


@pytest.mark.parametrize("sender_cls,channel", [(WebhookSender, "webhook"),
                                                (SlackWebhookSender, "slack_webhook"),
                                                (TeamsWebhookSender, "teams_webhook")])
async def test_echoed_url_path_headers_and_key_stay_out_of_the_summary(peer: HttpStandIn, sender_cls: Any,
                                                                       channel: str) -> None:
    cfg = config(destinations=[{
        "name": "echoer", "channel": channel, "url": f"{peer.url}/services/{PATH_TOKEN}?{QUERY_TOKEN}",
        "headers": {"X-Api-Key": HEADER_SECRET}, "hmac_secret": HMAC_SECRET}],
        channels={channel: {"retry": {"timeout_seconds": 5}}})
    async with aiohttp.ClientSession() as http:
        result = await sender_cls(ConfigHolder(cfg), http=http).send(envelope(channel, "echoer"))
    [req] = peer.requests
    assert PATH_TOKEN in req.path and req.headers["X-Api-Key"] == HEADER_SECRET  # it really was sent...
    assert result.outcome == "permanent" and "HTTP 404" in result.summary
    for secret in (PATH_TOKEN, "s3cretPathToken42", QUERY_TOKEN, HEADER_SECRET, HMAC_SECRET, peer.url):
        assert secret not in result.summary, (secret, result.summary)  # ...and is not said back
