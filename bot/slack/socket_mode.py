"""Socket Mode for installs without a public URL: one process holds the connection (mixed into SlackAdapter)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("tocsin.slack")


class SocketMode:
    """Needs `bolt`, `app_token`, `client`, `_socket` and `_connector`, set by SlackAdapter."""

    bolt: AsyncApp
    app_token: str
    client: AsyncWebClient
    _socket: Any
    _connector: asyncio.Task[None] | None

    async def start_socket_mode(self) -> None:
        """Leadership's on_elected: only one process holds the Socket Mode connection (returns at once)."""
        if self.app_token and self._connector is None:
            self._connector = asyncio.create_task(self._connect_socket_mode(), name="slack.socket_mode")

    async def stop_socket_mode(self) -> None:
        """Leadership's on_lost (and shutdown): drop the connection so two processes never both consume."""
        if self._connector is not None:
            connector, self._connector = self._connector, None
            connector.cancel()
            await asyncio.gather(connector, return_exceptions=True)
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close_async()

    async def _connect_socket_mode(self) -> None:
        """Socket Mode: connect, retrying with backoff while Slack is unreachable (the client reconnects
        by itself once connected)."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        self._socket = AsyncSocketModeHandler(self.bolt, self.app_token, web_client=self.client)
        delay = 1.0
        while True:
            try:
                await self._socket.connect_async()
                log.info("slack.socket_mode.connected")
                return
            except (TimeoutError, SlackApiError, aiohttp.ClientError, OSError) as exc:
                log.warning("slack.socket_mode.connect_failed",
                            extra={"error": f"{type(exc).__name__}: {exc}", "retry_in": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
