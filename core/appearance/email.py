"""Email: subject, plain text and HTML (multipart/alternative) from the Jinja2 templates in templates/."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from core.appearance.digest import digest_data, digest_html
from core.appearance.common import headline, offers_ack, page_facts, page_fields, page_links
from core.appearance.vocabulary import SEVERITY_WORDS, kind_label, one_line, severity_label
from core.delivery.message import Notification

SEVERITY_HTML_COLOR: dict[str, str] = {
    "sev1": "#b3261e", "sev2": "#d9730d", "sev3": "#b58900", "sev4": "#2f6fb3",
}
RESOLVED_COLOR = "#2e7d32"
SUBJECT_MAX = 200


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


@cache
def jinja() -> Environment:
    # HTML templates autoescape; the plain-text template must not turn "&" into "&amp;".
    return Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(enabled_extensions=("html",), disabled_extensions=("txt",),
                                     default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_context(n: Notification) -> dict[str, Any]:
    if n.kind.upper() == "RESOLVED":
        color = RESOLVED_COLOR
    else:
        color = SEVERITY_HTML_COLOR.get(n.severity or "", "#555555")
    return {
        "n": n,
        "headline": headline(n),
        "title": one_line(n.title),
        "kind": kind_label(n.kind),
        "severity": severity_label(n.severity),
        "severity_word": SEVERITY_WORDS.get(n.severity or "", ""),
        "color": color,
        "fields": page_fields(n),
        "facts": (facts := page_facts(n)),
        "width": max((len(k) + 1 for k, _ in facts), default=0),
        "links": page_links(n),
        "ack_url": offers_ack(n),
    }


def email_subject(n: Notification) -> str:
    return one_line(headline(n), SUBJECT_MAX)


def render_text_part(n: Notification) -> str:
    """The plain-text part alone (also what the outbox shows for channels without their own text)."""
    return jinja().get_template("email.txt").render(**template_context(n))


def render_email(n: Notification) -> EmailContent:
    """Subject, plain text and HTML (a digest's HTML is its tables, core/appearance/digest.py)."""
    data = digest_data(n.event) if n.kind.upper() == "DIGEST" else None
    if data is not None:
        return EmailContent(subject=email_subject(n), text=render_text_part(n), html=digest_html(data))
    ctx = template_context(n)
    env = jinja()
    return EmailContent(
        subject=email_subject(n),
        text=env.get_template("email.txt").render(**ctx),
        html=env.get_template("email.html").render(**ctx),
    )
