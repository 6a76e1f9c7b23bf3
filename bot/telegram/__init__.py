"""Telegram chat adapter: bot.py (Application, handlers, webhook, polling), render.py, surface.py."""
