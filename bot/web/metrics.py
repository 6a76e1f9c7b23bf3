"""The console's metrics page (`/stats`) and its CSV download (`/stats.csv`): the figures of `tocsin report`
(core/reports.py) for a period and a grouping the page's form picks, plus the incidents-per-day chart."""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from bot.web.charts import hbars, stacked_bars
from core.appearance.vocabulary import fmt_duration
from core.errors import InvalidInput
from core.reports import GROUPINGS, Report, check_by, parse_since, to_csv
from core.stats import StatsReads

if TYPE_CHECKING:
    from bot.web.app import Console, Handler

CHART_DAYS = 90
"""The per-day chart draws at most this many days (the tables cover the whole period)."""


def _query(request: web.Request) -> tuple[str, timedelta, str]:
    """`?since=30d&by=severity` (both optional); bad values raise InvalidInput naming the problem."""
    since = request.query.get("since", "").strip() or "30d"
    by = request.query.get("by", "").strip() or "severity"
    return since, parse_since(since), check_by(by)


def mount_metrics(console: Console, router: web.UrlDispatcher, auth: Callable[[Handler], Handler]) -> None:
    reads = StatsReads(console.ctx.db, console.ctx.holder)

    async def report(request: web.Request) -> tuple[str, Report]:
        since_text, since, by = _query(request)
        r = await reads.report(actor=console.actor(request), now=console.svc.clock.now(), since=since, by=by)
        return since_text, r

    async def page(request: web.Request) -> web.Response:
        try:
            since_text, r = await report(request)
        except InvalidInput as exc:
            return console.render("error.html", request, status=400, message=str(exc))
        days = max(1, min(CHART_DAYS, math.ceil((r.end - r.start) / timedelta(days=1))))
        st = await reads.collect(actor=console.actor(request), now=r.end, days=days)

        def dur(v: float | None) -> str:
            return fmt_duration(v) if v is not None else "no data"

        t = r.total
        times = hbars([("ack median", t.tta.median, dur(t.tta.median)), ("ack p90", t.tta.p90, dur(t.tta.p90)),
                       ("resolve median", t.ttr.median, dur(t.ttr.median)),
                       ("resolve p90", t.ttr.p90, dur(t.ttr.p90))])
        rates = hbars([(c.channel, 100 * c.success if c.success is not None else None,
                        f"{100 * (c.success or 0):.1f}% of {c.finished}") for c in r.channels], maximum=100.0)
        return console.render("stats.html", request, per_day=stacked_bars(st.days, st.per_day), times=times,
                              rates=rates, days=days, report=r, since=since_text, groupings=GROUPINGS)

    async def download(request: web.Request) -> web.Response:
        try:
            since_text, r = await report(request)
        except InvalidInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        span = "".join(since_text.split())  # `30 d` is accepted; a file name gets no spaces or line breaks
        name = f"tocsin-report-{r.end:%Y%m%d}-{span}-by-{r.by}.csv"
        return web.Response(text=to_csv(r), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"',
                                     "X-Content-Type-Options": "nosniff"})

    router.add_get("/stats", auth(page))
    router.add_get("/stats.csv", auth(download))
