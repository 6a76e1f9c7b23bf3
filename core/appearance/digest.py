"""Scheduled digests: the compact text every chat channel shows and the HTML tables email shows.

The digest's figures travel in the notification's `event.payload.digest` (plain JSON), so each channel
renders them itself and a webhook receiver gets the numbers, not prose."""
from __future__ import annotations

from typing import Any

from core.appearance.vocabulary import escape_html, fmt_duration, one_line, severity_label, truncate

MAX_ROWS = 20
"""Rows per table; the rest is counted ("... and 12 more"), so a bad week does not make a huge page."""


def digest_data(event: dict[str, Any]) -> dict[str, Any] | None:
    payload = event.get("payload") if isinstance(event, dict) else None
    data = payload.get("digest") if isinstance(payload, dict) else None
    return data if isinstance(data, dict) else None


def digest_title(d: dict[str, Any]) -> str:
    late = " (late)" if d.get("late") else ""
    return f"Tocsin {d['name']} digest{late}: {len(d['open'])} open, {len(d['period'])} in the period"


def _inc_line(i: dict[str, Any]) -> str:
    return f"{i['ref']} [{severity_label(i['severity'])}] {one_line(i['title'], 80)} ({i['state']})"


def digest_text(d: dict[str, Any]) -> str:
    """The compact card: a few lines per section, within what chat and SMS-like channels show well."""
    lines = [f"Period: {d['since']} - {d['until']} ({d['timezone']})"]
    if d.get("late"):
        lines.append(f"Sent late: due {d['due']}, Tocsin was not running then.")
    lines.append(f"Open incidents: {len(d['open'])}")
    lines += [f"  {_inc_line(i)}" for i in d["open"][:5]]
    if len(d["open"]) > 5:
        lines.append(f"  ... and {len(d['open']) - 5} more")
    lines.append(f"In the period: {len(d['period'])} incidents, MTTA {fmt_duration(d['mtta'])}, "
                 f"MTTR {fmt_duration(d['mttr'])}")
    failed = d["deliveries"]
    lines.append(f"Failed deliveries: {failed['failed']} failed, {failed['dead']} dead")
    for oc in d.get("on_call", []):
        nxt = f"; next {oc['next']} from {oc['next_at']}" if oc.get("next") else ""
        lines.append(f"On call ({oc['schedule']}): {oc['now'] or 'nobody'}{nxt}")
    return truncate("\n".join(lines), 3000)


def _table(headers: list[str], rows: list[list[str]], more: int) -> str:
    th = "".join(f'<th style="text-align:left;padding:4px 8px;border-bottom:1px solid #d0d7de;">'
                 f"{escape_html(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="padding:4px 8px;border-bottom:1px solid #eaeef2;">'
                                    f"{escape_html(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" style="padding:4px 8px;color:#656d76;">none</td></tr>'
    tail = f'<p style="color:#656d76;font-size:13px;">... and {more} more</p>' if more > 0 else ""
    return (f'<table cellpadding="0" cellspacing="0" style="border-collapse:collapse;font-size:14px;width:100%;">'
            f"<tr>{th}</tr>{body}</table>{tail}")


def digest_html(d: dict[str, Any]) -> str:
    """A complete HTML email: one table per section, every value escaped."""
    def inc_rows(items: list[dict[str, Any]], timing: bool) -> list[list[str]]:
        out = []
        for i in items[:MAX_ROWS]:
            row = [i["ref"], severity_label(i["severity"]), one_line(i["title"], 120), i["state"], i["opened"]]
            if timing:
                row += [fmt_duration(i.get("tta")), fmt_duration(i.get("ttr"))]
            out.append(row)
        return out

    parts = [f'<h1 style="font-size:20px;">{escape_html(digest_title(d))}</h1>',
             f"<p>Period: {escape_html(d['since'])} - {escape_html(d['until'])} ({escape_html(d['timezone'])})</p>"]
    if d.get("late"):
        parts.append(f"<p><strong>Sent late</strong>: due {escape_html(d['due'])}, Tocsin was not running then.</p>")
    parts.append(f"<h2 style=\"font-size:16px;\">Open incidents ({len(d['open'])})</h2>")
    parts.append(_table(["Incident", "Severity", "Title", "State", "Opened"], inc_rows(d["open"], False),
                        len(d["open"]) - MAX_ROWS))
    parts.append(f"<h2 style=\"font-size:16px;\">Incidents of the period ({len(d['period'])}): MTTA "
                 f"{fmt_duration(d['mtta'])}, MTTR {fmt_duration(d['mttr'])}</h2>")
    parts.append(_table(["Incident", "Severity", "Title", "State", "Opened", "To ack", "To resolve"],
                        inc_rows(d["period"], True), len(d["period"]) - MAX_ROWS))
    dl = d["deliveries"]
    parts.append(f"<h2 style=\"font-size:16px;\">Failed deliveries ({dl['failed']} failed, {dl['dead']} dead)</h2>")
    parts.append(_table(["Status", "Channel", "Recipient", "Incident", "Error"],
                        [[r["status"], r["channel"], r["recipient"], r.get("incident") or "-",
                          one_line(r.get("error") or "", 120)] for r in dl["items"][:MAX_ROWS]],
                        len(dl["items"]) - MAX_ROWS))
    if d.get("on_call"):
        parts.append('<h2 style="font-size:16px;">On call</h2>')
        parts.append(_table(["Schedule", "Now", "Next", "From"],
                            [[o["schedule"], o["now"] or "nobody", o.get("next") or "-", o.get("next_at") or "-"]
                             for o in d["on_call"]], 0))
    body = "".join(parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape_html(digest_title(d))}'
            f'</title></head><body style="font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;'
            f'color:#1f2328;max-width:760px;margin:16px auto;padding:0 16px;">{body}</body></html>')
