"""Telegram adapter tests against the real python-telegram-bot and a loopback Bot API."""
