"""SMTP submission (RFC 6409) as the user, with failures sorted into permanent and
temporary ones, because the two need opposite handling: report at once, or queue and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPStatus

from bridges.address import AddressError
from bridges.mail import addresses
from bridges.mail.config import MailAccount, MailOptions, Security

DATA_BLOCK = 256 * 1024
"""Bytes of a mail file read and written at a time."""


class SmtpFailure(Exception):
    """A submission that did not go through; `text` carries the server's own reply.

    `permanent` failures (5xx, refused credentials) are reported to the user at once;
    the others (4xx, network trouble) are worth retrying. `condition` is the RFC 6120
    stanza error the user sees.
    """

    def __init__(self, text: str, *, code: int | None, permanent: bool, condition: str) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.permanent = permanent
        self.condition = condition


def _failure(exc: Exception) -> SmtpFailure:
    """Classify an aiosmtplib (or network) exception."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}".strip()
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return SmtpFailure(text, code=exc.code, permanent=True, condition="not-authorized")
        permanent = 500 <= exc.code < 600
        condition = "undefined-condition"
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and permanent:
            condition = "item-not-found"
        elif permanent:
            condition = "not-acceptable"
        elif 400 <= exc.code < 500:
            condition = "resource-constraint"
        return SmtpFailure(text, code=exc.code, permanent=permanent, condition=condition)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return SmtpFailure(str(exc), code=None, permanent=True, condition="not-acceptable")
    if isinstance(exc, ssl.SSLError):
        return SmtpFailure(
            f"TLS failure: {exc}", code=None, permanent=False, condition="remote-server-timeout"
        )
    return SmtpFailure(
        str(exc) or type(exc).__name__,
        code=None,
        permanent=False,
        condition="remote-server-timeout",
    )


async def _connected(
    account: MailAccount, options: MailOptions, tls: ssl.SSLContext
) -> aiosmtplib.SMTP:
    """An authenticated client; PLAIN only, because Dovecot delays a second AUTH by 5 s."""
    server = account.smtp
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        use_tls=server.security is Security.TLS,
        start_tls=server.security is Security.STARTTLS,
        tls_context=tls if server.security is not Security.PLAIN else None,
        timeout=options.timeout,
    )
    await client.connect()
    try:
        await client.auth_plain(account.username, account.password)
    except BaseException:
        client.close()
        raise
    return client


async def check_login(account: MailAccount, options: MailOptions, tls: ssl.SSLContext) -> None:
    """Prove at registration that the server takes these credentials; raise SmtpFailure."""
    try:
        client = await _connected(account, options, tls)
        try:
            await client.quit()
        finally:
            client.close()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _failure(exc) from exc


async def submit(
    account: MailAccount,
    options: MailOptions,
    tls: ssl.SSLContext,
    recipients: Sequence[str],
    message: bytes | Path,
) -> str:
    """Hand `message` (or the mail in that file) to the submission server; return its
    reply, raise SmtpFailure.

    The envelope holds the addresses' SMTP forms (quoted local parts, IDNA domains).
    """
    try:
        sender = addresses.for_smtp(account.email)
        envelope = [addresses.for_smtp(rcpt) for rcpt in recipients]
    except AddressError as exc:
        raise SmtpFailure(exc.text, code=None, permanent=True, condition=exc.condition) from exc
    try:
        client = await _connected(account, options, tls)
        try:
            if isinstance(message, Path):
                reply = await _send_file(client, sender, envelope, message)
            else:
                refused, reply = await client.sendmail(sender, envelope, message)
                if refused:  # some (not all) recipients refused: report the first
                    code, text = next(iter(refused.values()))
                    raise aiosmtplib.SMTPResponseException(code, text)
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()  # accepted is accepted; a rude QUIT changes nothing
            return reply
        finally:
            client.close()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _failure(exc) from exc


async def _send_file(
    client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str], path: Path
) -> str:
    """MAIL, RCPT and DATA with the mail read from `path` as it is sent: aiosmtplib's
    own DATA takes the whole mail as one bytes object (and copies it twice).

    The file holds CRLF lines (as `mime` writes them); lines starting with a dot are
    doubled (RFC 5321 §4.5.2), and each block waits until the connection took it.
    """
    # RFC 1870: a server that takes no mail this large says so before the data
    size = path.stat().st_size
    await client.mail(
        sender, options=[f"SIZE={size}"] if client.supports_extension("size") else None
    )
    for recipient in recipients:
        await client.rcpt(recipient)  # a refusal raises SMTPRecipientRefused
    start = await client.execute_command(b"DATA")
    if start.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    last = b"\r\n"
    with path.open("rb") as source:
        while lines := await asyncio.to_thread(source.readlines, DATA_BLOCK):
            protocol.write(b"".join(b"." + line if line[:1] == b"." else line for line in lines))
            await protocol._drain_helper()  # flow control: no more than a block in memory
            last = lines[-1]
    if not last.endswith(b"\r\n"):
        protocol.write(b"\r\n")
    end = await client.execute_command(b".")  # the end of data, and the server's answer
    if end.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(end.code, end.message)
    return end.message
