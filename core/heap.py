"""The garbage collector's settings for a long-running `tocsin run` process, applied once everything is
loaded (bot.server.build_app; the benchmarks call the same function so they measure what runs)."""
from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 10_000
"""Allocations between two young-generation collections (Python's default is 700). A fan-out keeps
thousands of objects alive for a moment (claimed rows, envelopes, outcomes); at 700 the collector walked
them again and again and took about 5% of the worker's CPU (9.5 -> 4 us per delivery in gc.callbacks). Our
objects are freed by reference counting; the collector is only for cycles, which this still finds."""


def settle() -> None:
    """Keep what is loaded now (config, modules, routes: it lives as long as the process) out of the
    collector, and collect the young generation less often. Without the freeze, a request that allocates
    many objects (a 100,000-item payload) triggered a full collection that walked the whole heap, holding
    the event loop for 200-350 ms."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)
