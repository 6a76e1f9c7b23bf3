"""Rendering one Notification for every channel: content, escaping, and channel limits."""
from __future__ import annotations

import json
import re

import pytest

from core.appearance.common import json_bytes
from core.appearance.email import SUBJECT_MAX, render_email
from core.appearance.slack import render_slack
from core.appearance.sms import SmsInfo, render_sms, sms_info, split_sms
from core.appearance.teams import MAX_BYTES as TEAMS_MAX_BYTES
from core.appearance.teams import render_teams
from core.appearance.telegram import render_telegram
from core.appearance.terminal import render_text
from core.appearance.voice import render_voice, speakable
from core.appearance.webhook import render_webhook
from core.delivery.message import Notification
from tests.delivery.helpers import notification

# --- email -----------------------------------------------------------------------------------------------


def test_email_subject_text_and_html_carry_the_page() -> None:
    e = render_email(notification())
    assert e.subject == "[SEV1] INC-12 Declared: Database <primary> down & out"
    # plain text is not HTML-escaped
    assert "Database <primary> down & out" in e.text
    for part in ("Writes fail since 10:02.", "State:    Investigating", "service:  db", "region:   eu-west-1",
                 "runbook: https://runbooks.example/db", "Acknowledge: https://tocsin.example/ack/tok123",
                 "SEV1 (critical)", "Declared"):
        assert part in e.text
    # HTML autoescapes everything that came from outside
    assert "Database &lt;primary&gt; down &amp; out" in e.html
    assert "<primary>" not in e.html
    assert 'href="https://tocsin.example/ack/tok123"' in e.html
    assert 'href="https://runbooks.example/db"' in e.html
    assert "javascript:" not in e.html and "javascript:" not in e.text


def test_email_html_escapes_script_in_body_and_fields() -> None:
    e = render_email(notification(body="<script>alert(1)</script>", fields={"<b>k</b>": "\"v\" & 'w'"}))
    assert "<script>" not in e.html and "&lt;script&gt;" in e.html
    assert "<b>k</b>" not in e.html
    assert "<script>alert(1)</script>" in e.text


def test_email_subject_is_one_line_and_bounded() -> None:
    e = render_email(notification(title="line one\r\nBcc: victim@example.com " + "x" * 500))
    assert "\n" not in e.subject and "\r" not in e.subject
    assert len(e.subject) <= SUBJECT_MAX


def test_resolved_has_no_ack_link_and_one_time_has_no_incident() -> None:
    e = render_email(notification(kind="RESOLVED", state="resolved"))
    assert "Acknowledge" not in e.text and "Resolved" in e.subject
    notice = render_email(notification(kind="ONE_TIME", incident=None, severity=None, state=None,
                                       ack_url=None))
    assert notice.subject == "Notice: Database <primary> down & out"
    assert "Incident:" not in notice.text


# --- SMS segment math --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),          # 2 x 153
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),           # extension table: two septets each
    ("€" * 81, "GSM-7", 162, 2),
    ("a" * 152 + "€", "GSM-7", 154, 1),
    ("Ж" * 70, "UCS-2", 70, 1),
    ("Ж" * 71, "UCS-2", 71, 2),            # 2 x 67
    ("Ж" * 134, "UCS-2", 134, 2),
    ("Ж" * 135, "UCS-2", 135, 3),
    ("a" * 69 + "😀", "UCS-2", 71, 2),     # one emoji is a surrogate pair and forces UCS-2
    ("", "GSM-7", 0, 0),
])
def test_sms_info(text: str, encoding: str, units: int, segments: int) -> None:
    assert sms_info(text) == SmsInfo(encoding, units, segments)  # type: ignore[arg-type]


def test_split_never_cuts_an_escape_or_surrogate_pair() -> None:
    parts = split_sms("a" * 152 + "€" + "b" * 10)   # 152 + 2 septets would overflow 153
    assert [sms_info(p).units for p in parts] == [152, 12]
    parts = split_sms("a" * 66 + "😀" + "b" * 10)
    assert parts[0] == "a" * 66 and parts[1].startswith("😀")
    assert "".join(parts) == "a" * 66 + "😀" + "b" * 10


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_sms_fits_segments_and_keeps_the_ack_link(max_segments: int) -> None:
    text = render_sms(notification(body="x" * 2000), max_segments=max_segments)
    info = sms_info(text)
    assert info.encoding == "GSM-7" and info.segments <= max_segments
    # What matters leads: severity, id, kind, title, then how to ack; the body is what gets cut; the page
    # ends with the reply code.
    assert text.startswith("SEV1 INC-12 Declared: Database <primary> down & out\n"
                           "Ack: https://tocsin.example/ack/tok123\n")
    assert text.endswith("...\nReply 4 to ack INC-12")


def test_sms_ucs2_when_the_body_needs_it() -> None:
    text = render_sms(notification(body="База данных недоступна. " * 30), max_segments=3)
    info = sms_info(text)
    assert info.encoding == "UCS-2" and info.segments == 3 and "База" in text
    assert text.endswith("...\nReply 4 to ack INC-12")
    assert text.startswith("SEV1 INC-12 Declared: Database <primary> down & out\n"
                           "Ack: https://tocsin.example/ack/tok123\n")


def test_sms_keeps_gsm7_despite_typography_and_emoji() -> None:
    text = render_sms(notification(body="It’s “down” – again… 🔥", fields={}), max_segments=3)
    assert sms_info(text).encoding == "GSM-7"
    assert "It's \"down\" - again..." in text


def test_sms_short_page_is_untouched() -> None:
    text = render_sms(notification(body="", fields={}, ack_url=None, title="DB down"), max_segments=1)
    # no ack_url: the core's sign that nothing is left to acknowledge, so no reply code either
    assert text == "SEV1 INC-12 Declared: DB down\nState: Investigating"


# --- voice --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "spoken"), [
    ("INC-12 is sev1", "incident 12 is severity 1"),
    ("🔥 *bold* _it_ `code` # head", "bold it code head"),
    ("see [the runbook](https://x.example/rb) now", "see the runbook now"),
    ("dashboard at https://grafana.example/d/1?x=1 broken", "dashboard at broken"),
    (":rotating_light: SEV 2 & rising", "severity 2 and rising"),
    ("a\u200d\ufe0fb", "a b"),
])
def test_speakable(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken


def test_voice_script_speaks_incident_and_severity() -> None:
    text = render_voice(notification())
    assert text.startswith("This is Tocsin. Declared for incident 12, severity 1, critical.")
    assert "INC-12" not in text and "*" not in text and "http" not in text
    assert text.endswith("State: Investigating.")
    assert len(render_voice(notification(body="word " * 1000, title="t" * 1000))) < 1100


# --- Slack --------------------------------------------------------------------------------------------------


def test_slack_blocks() -> None:
    msg = render_slack(notification())
    assert msg["text"] == "[SEV1] INC-12 Declared: Database &lt;primary&gt; down &amp; out"
    types = [b["type"] for b in msg["blocks"]]
    assert types == ["header", "context", "section", "section", "actions"]
    header = msg["blocks"][0]["text"]
    assert header["type"] == "plain_text" and header["text"] == "INC-12 · Database <primary> down & out"
    assert "SEV1" in msg["blocks"][1]["elements"][0]["text"]
    assert msg["blocks"][1]["elements"][0]["text"] == "*Declared* · \U0001F534 SEV1 · state: *Investigating*"
    fields = msg["blocks"][3]["fields"]
    assert fields[0]["text"] == "*service*\ndb"
    buttons = msg["blocks"][4]["elements"]
    assert buttons[0]["url"] == "https://tocsin.example/ack/tok123"
    assert buttons[0]["text"]["text"] == "Acknowledge"
    assert [b["url"] for b in buttons[1:]] == ["https://runbooks.example/db"]


def test_slack_limits() -> None:
    msg = render_slack(notification(title="t" * 500, body="<b>" * 5000,
                                    fields={f"k{i}": "v" for i in range(25)}))
    assert len(msg["blocks"][0]["text"]["text"]) <= 150
    assert len(msg["blocks"][2]["text"]["text"]) <= 3000
    assert "<b>" not in msg["blocks"][2]["text"]["text"]
    sections = [b for b in msg["blocks"] if b["type"] == "section" and "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 10, 5]


# --- Teams --------------------------------------------------------------------------------------------------


def test_teams_adaptive_card_envelope() -> None:
    msg = render_teams(notification())
    assert msg["type"] == "message"
    att = msg["attachments"][0]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = [b.get("text", "") for b in card["body"]]
    assert texts[0] == "INC-12 · Declared · SEV1 (critical) · state: Investigating"
    assert card["body"][0]["color"] == "Attention"
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert {"title": "service", "value": "db"} in facts
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Acknowledge",
                                  "url": "https://tocsin.example/ack/tok123", "style": "destructive"}


@pytest.mark.parametrize("body", ["x" * 200_000, "ü€😀" * 40_000])
def test_teams_stays_under_28kb_with_a_huge_body(body: str) -> None:
    msg = render_teams(notification(body=body))
    size = len(json_bytes(msg))
    assert size <= TEAMS_MAX_BYTES
    assert size > TEAMS_MAX_BYTES - 200    # cut, not dropped
    text = next(b["text"] for b in msg["attachments"][0]["content"]["body"][2:] if b["type"] == "TextBlock")
    assert text.endswith("…")
    # What goes on the wire (ensure_ascii JSON would be bigger: the sender uses json_bytes)
    assert json.loads(json_bytes(msg)) == msg


def test_teams_huge_fields_still_fit() -> None:
    msg = render_teams(notification(fields={f"k{i}": "v" * 1000 for i in range(100)}))
    assert len(json_bytes(msg)) <= TEAMS_MAX_BYTES


# --- Telegram -----------------------------------------------------------------------------------------------


def test_telegram_html_is_escaped() -> None:
    text = render_telegram(notification(body="a <b>fake</b> & <script>"))
    assert "<b>Database &lt;primary&gt; down &amp; out</b>" in text
    assert "a &lt;b&gt;fake&lt;/b&gt; &amp; &lt;script&gt;" in text
    assert '<a href="https://tocsin.example/ack/tok123">Acknowledge</a>' in text
    assert '<a href="https://runbooks.example/db">runbook</a>' in text
    assert "javascript" not in text
    assert "State: <i>Investigating</i>" in text


def test_telegram_link_with_quotes_is_attribute_escaped() -> None:
    text = render_telegram(notification(links={"x": 'https://e.example/?q="a"&b=<c>'}))
    assert 'href="https://e.example/?q=&quot;a&quot;&amp;b=&lt;c&gt;"' in text


def test_telegram_length_limit() -> None:
    text = render_telegram(notification(body="<&>" * 5000))
    assert len(text.encode("utf-16-le")) // 2 <= 4096
    assert text.rstrip().endswith("</a>")  # links survive the cut


# --- webhook and plain text ---------------------------------------------------------------------------------


def test_webhook_body() -> None:
    n = notification()
    body = render_webhook(n, idempotency_key="k-1", delivery_id=7, attempt=2)
    assert body["idempotency_key"] == "k-1" and body["delivery_id"] == 7 and body["attempt"] == 2
    assert body["event"] == {"source": "alertmanager", "labels": {"alertname": "DBDown"}}
    assert body["notification"] == n.to_json()
    assert body["type"] == "tocsin.initial" and body["incident"] == "INC-12"


@pytest.mark.parametrize("channel", ["email", "sms", "voice", "slack_webhook", "teams_webhook", "telegram",
                                     "webhook", "outbox"])
def test_render_text_for_every_channel(channel: str) -> None:
    subject, body = render_text(channel, notification())
    assert subject == "[SEV1] INC-12 Declared: Database <primary> down & out"
    assert body.strip()
    assert "&lt;" not in body and "<b>" not in body
    if channel == "sms":
        assert sms_info(body).segments <= 3
    elif channel == "voice":
        assert body.startswith("This is Tocsin.")
    else:
        assert "Acknowledge: https://tocsin.example/ack/tok123" in body


def test_non_string_field_values_from_json_render_everywhere() -> None:
    n = notification(fields={"count": 3, "ratio": 0.5, "none": None})  # type: ignore[dict-item]
    assert "count: 3" in render_sms(n) and "count: 3" in " ".join(render_email(n).text.split())
    assert "<b>count:</b> 3" in render_telegram(n)
    facts = next(b for b in render_teams(n)["attachments"][0]["content"]["body"] if b["type"] == "FactSet")
    assert {"title": "count", "value": "3"} in facts["facts"]
    assert any("*count*\n3" == f["text"] for b in render_slack(n)["blocks"] for f in b.get("fields", []))


# --- each thing once (issue 17) -------------------------------------------------------------------------------


def _checkout(**over: object) -> Notification:
    data: dict[str, object] = dict(
        kind="INITIAL", title="Checkout is failing", body="Payments time out.", severity="sev2", state="open",
        incident="INC-1", fields={"Commander": "cli:alice"}, links={"Incident": "https://t.example/incidents/1"},
        ack_url="https://t.example/ack/tok")
    data.update(over)
    return Notification(**data)  # type: ignore[arg-type]


def test_email_says_each_thing_once() -> None:
    e = render_email(_checkout())
    assert e.subject == "[SEV2] INC-1 Declared: Checkout is failing"
    assert e.text == (
        "[SEV2] INC-1 Declared: Checkout is failing\n\n"
        "Payments time out.\n\n"
        "Severity:  SEV2 (high)\n"
        "State:     Open\n"
        "Commander: cli:alice\n\n"
        "Links:\n- Incident: https://t.example/incidents/1\n\n"
        "Acknowledge: https://t.example/ack/tok\n\n"
        "-- \nSent by Tocsin. Reply in your incident channel, not to this email.\n")
    body = e.html.split("<body", 1)[1]
    assert body.count("SEV2") == 1 and body.count("INC-1") == 1 and body.count("Checkout is failing") == 1


def test_sms_and_voice_say_each_thing_once() -> None:
    assert render_sms(_checkout()) == ("SEV2 INC-1 Declared: Checkout is failing\nAck: https://t.example/ack/tok\n"
                                       "Payments time out.\nCommander: cli:alice\nReply 4 to ack INC-1")
    # A declare without a description does not repeat the title as its body.
    assert "failing\nChecks" not in render_sms(_checkout(body="Checkout is failing"))
    assert render_sms(_checkout(body="Checkout is failing")).count("Checkout is failing") == 1
    assert render_voice(_checkout()) == ("This is Tocsin. Declared for incident 1, severity 2, high. "
                                         "Checkout is failing. Payments time out.")
    resolved = _checkout(kind="RESOLVED", state="resolved", body="")
    assert render_sms(resolved) == "SEV2 INC-1 Resolved: Checkout is failing\nCommander: cli:alice"


@pytest.mark.parametrize("channel", ["email", "sms", "slack", "teams", "telegram", "voice"])
def test_no_acknowledge_once_acknowledged(channel: str) -> None:
    """The core leaves ack_url out once someone acknowledged; no channel invents an Acknowledge then."""
    from core.delivery.voice_twilio import build_twiml
    after = _checkout(kind="UPDATE", ack_url=None, fields={"Commander": "cli:alice", "Acknowledged by": "cli:bob"})
    rendered = {"email": lambda n: render_email(n).text + render_email(n).html, "sms": render_sms,
                "slack": lambda n: json.dumps(render_slack(n)), "teams": lambda n: json.dumps(render_teams(n)),
                "telegram": render_telegram, "voice": lambda n: build_twiml(n, action_url="https://t.example/v")}
    text = rendered[channel](after)
    offer = re.compile(r"Acknowledge(?!d)|Press 1|/ack/")
    assert not offer.search(text)
    assert offer.search(rendered[channel](_checkout()))
