"""python -m bot -> the tocsin CLI."""
from bot.cli import main

raise SystemExit(main())
