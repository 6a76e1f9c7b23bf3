"""python -m bot -> the tocsin CLI."""
from bot.cli import entry

raise SystemExit(entry())
