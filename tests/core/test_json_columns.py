"""JSON columns are written by orjson (core.db.to_json_text), with the standard library for what orjson
cannot write: nothing a payload may hold is lost or changed on the way to the database and back."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db import to_json_text
from core.models import Incident
from core.rbac import Actor

ODD: dict[str, Any] = {
    "big": 10**30, "negative_big": -(2**70), "max64": 2**63 - 1, "float": 0.1, "exp": 1e300,
    "text": "héllo \u2028 \"quoted\" \\ / 🚨", "nested": {"list": [1, "two", None, True, {"k": []}]}, "empty": {}}


def test_the_serializer_falls_back_for_integers_beyond_64_bits() -> None:
    import json

    assert json.loads(to_json_text(ODD)) == ODD
    assert json.loads(to_json_text({"small": 1, "s": "x"})) == {"small": 1, "s": "x"}


async def test_a_payload_comes_back_exactly_as_sent(ctx: Any) -> None:
    out = await ctx.service.declare(actor=Actor("cli:admin"), title="odd payload", severity="sev2", payload=ODD)
    assert out.incident is not None
    async with ctx.db.sessions() as s:
        stored = (await s.execute(select(Incident.payload).where(Incident.id == out.incident.id))).scalar_one()
    assert stored == ODD
    assert isinstance(stored["big"], int) and isinstance(stored["float"], float)
