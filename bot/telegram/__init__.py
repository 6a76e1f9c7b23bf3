"""Telegram chat adapter: bot.py (Application, handlers, webhook, polling), surface.py (drawing: core/appearance/telegram.py)."""
