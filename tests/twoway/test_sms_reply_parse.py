"""The SMS reply grammar, as a table."""
from __future__ import annotations

import pytest

from core.sms_replies import SmsReply, parse_reply


@pytest.mark.parametrize(("text", "expected"), [
    ("4", SmsReply("ack")),
    (" ack ", SmsReply("ack")),
    ("Ack.", SmsReply("ack")),
    ("4 12", SmsReply("ack", 12)),
    ("ACK 12", SmsReply("ack", 12)),
    ("ack inc-12", SmsReply("ack", 12)),
    ("ACK INC- 12", SmsReply("ack", 12)),
    ("ACK #12", SmsReply("ack", 12)),
    ("ACK ALL", SmsReply("ack_all")),
    ("4 all", SmsReply("ack_all")),
    ("6 12", SmsReply("resolve", 12)),
    ("RESOLVE INC-12", SmsReply("resolve", 12)),
    ("6", SmsReply("unknown")),          # resolving needs an explicit incident
    ("RESOLVE", SmsReply("unknown")),
    ("44", SmsReply("unknown")),
    ("ACK 12 13", SmsReply("unknown")),
    ("ok thanks", SmsReply("unknown")),
    ("", SmsReply("unknown")),
    ("STOP", SmsReply("keyword")),
    ("help", SmsReply("keyword")),
    ("Unsubscribe", SmsReply("keyword")),
    ("START", SmsReply("keyword")),
])
def test_grammar(text: str, expected: SmsReply) -> None:
    assert parse_reply(text) == expected
