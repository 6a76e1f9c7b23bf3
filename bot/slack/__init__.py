"""Slack chat adapter: app.py (bolt AsyncApp, listeners, /slack/events, Socket Mode), blocks.py
(Block Kit rendering), surface.py (the incident card in the incident channel)."""
