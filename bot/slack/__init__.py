"""Slack chat adapter: app.py (bolt AsyncApp, listeners, /slack/events, Socket Mode), forms.py
(modal submissions; Block Kit drawing is core/appearance/slack.py), surface.py (the incident card in the incident channel)."""
