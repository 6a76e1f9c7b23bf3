"""How an incident reads, on every channel: one vocabulary and one renderer module per platform.

`vocabulary` holds the words (kinds, states, severities, buttons), the one truncate, one escape per markup
language and `fmt_duration`. Each other module renders both the page and the card of one channel, as plain
strings and JSON-ready dicts (no chat SDK), so `core.delivery` senders and `bot` adapters draw from one place.
"""
