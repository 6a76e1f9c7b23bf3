"""POST /twilio/voice: the keypress callback of voice pages ("press 1 to acknowledge")."""
from __future__ import annotations

import logging
from typing import Any

from core.delivery.voice_twilio import twilio_voice_handler

log = logging.getLogger("tocsin.twilio")


def mount_twilio(rt: Any) -> None:
    """Mounted when voice is configured for real (an auth token to check Twilio's signature with)."""
    voice = rt.cfg.channels.voice
    if voice.outbox or voice.auth_token is None:
        return
    service = rt.ctx.service

    async def acknowledge(delivery_id: int) -> str:
        return await service.acknowledge_by_delivery(delivery_id, source="twilio voice")

    rt.app.router.add_post("/twilio/voice", twilio_voice_handler(
        auth_token=voice.auth_token.get_secret_value(), public_url=rt.cfg.server.public_url,
        acknowledge=acknowledge))
