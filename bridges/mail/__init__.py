"""The email bridge: IMAP IDLE in, SMTP submission out (see `bridge` for addressing)."""

from bridges.mail.bridge import MailBridge

__all__ = ["MailBridge"]
