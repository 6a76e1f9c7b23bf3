"""Durable fan-out: queue rows, a worker that claims them, and one sender module per channel."""
