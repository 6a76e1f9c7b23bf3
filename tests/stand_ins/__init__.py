"""Loopback stand-ins that speak the real protocols: HTTP (Slack, Teams, Telegram, Twilio, webhooks),
SMTP (aiosmtpd) and AWS SNS (moto). No mocks of libraries; nothing leaves 127.0.0.1.

- tests.stand_ins.http: HttpStandIn, Reply, hang, retry_after, free_port
- tests.stand_ins.smtp: smtp_stand_in, SmtpStandIn, ReceivedMail
- tests.stand_ins.sns: moto_sns, MotoSns
"""
