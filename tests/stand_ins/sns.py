"""AWS SNS on loopback: moto's server in a thread, with the published SMS read back from its state.

    with moto_sns() as sns:                 # a free port; blocking start, so use a module/session fixture
        cfg.channels.sms.endpoint_url = sns.url
        ...
        assert sns.published_sms()[-1]["phone_number"] == "+15551234567"
        sns.reset()
"""
from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moto.server import ThreadedMotoServer

from tests.stand_ins.http import free_port

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass
class MotoSns:
    """A running moto server; `url` is the endpoint_url for boto3 (any region, key and secret work)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def state(self) -> dict[str, Any]:
        """moto's whole state (GET /moto-api/data.json). Blocking: use asyncio.to_thread in async tests."""
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=5) as resp:
            return json.load(resp)

    def published_sms(self) -> list[dict[str, Any]]:
        """Every SMS published so far: dicts with message, message_id, phone_number."""
        return list(self.state().get("sns", {}).get("SMS", []))

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5):
            pass


@contextmanager
def moto_sns(host: str = "127.0.0.1") -> Iterator[MotoSns]:
    """Start moto on a free port for the block (about a second); stop it afterwards."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        yield MotoSns(host, port)
    finally:
        server.stop()
