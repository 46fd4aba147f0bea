"""Files between bridges and the user's XMPP server: XEP-0363 uploads, guarded downloads.

A bridge hands over a file on disk and gets back a URL that the user's client shows
inline (attachments of a mail); or it asks for a URL the user sent and gets a file on
disk (a file to attach to a mail). This is the `bridges.base.FileTransfer` the sinks
offer; nothing here knows which bridge asks.

The upload service is the one the operator names (`files.upload_service`), else the
first item of the server's domain that announces `urn:xmpp:http:upload:0` in disco. The
component asks it for slots from its own JID. Prosody's mod_http_file_share gives slots
to any JID of a host it serves when `http_file_share_access` is empty, components
included; when that option is set it must list the component's domain. All users'
uploads then count against the component's one daily quota
(`http_file_share_daily_quota`, by default ten times the file size limit).

Both directions stream: the PUT body is read from the file as it is sent, a download
is written to disk as it arrives, so a 20 MB attachment never sits in memory.

aiohttp (~15 MiB resident) and the TLS context (the system's CA store) are loaded on
the first transfer: a gateway whose users never exchange files does not pay for them.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

from bridges.base import DownloadedFile, FileError
from component.config import FileSettings

if TYPE_CHECKING:
    import aiohttp
    from slixmpp.componentxmpp import ComponentXMPP

log = logging.getLogger(__name__)

UPLOAD_NS = "urn:xmpp:http:upload:0"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DATA_NS = "jabber:x:data"
SLOT_HEADERS = {"authorization", "cookie", "expires"}
"""The only PUT headers XEP-0363 §5 lets a service set."""
CHUNK = 256 * 1024


class HttpFiles:
    """XEP-0363 uploads through the server's service, and downloads from allowed hosts."""

    def __init__(self, xmpp: ComponentXMPP, settings: FileSettings) -> None:
        self.xmpp = xmpp
        self.settings = settings
        self.service: str | None = settings.upload_service
        self.max_size: int | None = None
        self._found = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._tls_context: ssl.SSLContext | None = None
        if settings.ca_file:  # a bad CA file stops the start, as any bad option does
            _ = self._tls

    @property
    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
            if self.settings.ca_file:
                self._tls_context.load_verify_locations(cafile=self.settings.ca_file)
        return self._tls_context

    @property
    def available(self) -> bool:
        """Whether there is a service to upload to (named, or found by `discover`)."""
        return self.settings.enabled and self.service is not None

    async def discover(self) -> None:
        """Find the upload service and its size limit; call once the link is up.

        Never raises: without a service, bridges show files as text, as before.
        """
        if not self.settings.enabled:
            return
        own = self.xmpp.boundjid.bare
        domain = self.settings.discover_on or own.partition(".")[2] or own
        try:
            # not our own JID: answering ourselves through the server would be a user
            # stanza on a lane of the gateway's own making
            found = [self.service] if self.service else await self._items(domain)
            candidates = [jid for jid in found if jid != own]
            for jid in candidates:
                features, limit = await self._info(jid)
                if UPLOAD_NS in features:
                    self.service, self.max_size = jid, limit
                    log.info("%s: uploading files to %s (limit %s bytes)", own, jid, limit)
                    return
        except (IqError, IqTimeout) as exc:
            log.warning("%s: could not discover an upload service: %s", own, _iq_reason(exc))
            return
        log.info("%s: no XEP-0363 upload service on %s: files are shown as text", own, domain)

    async def _items(self, domain: str) -> list[str]:
        iq = self.xmpp.make_iq_get(queryxmlns=DISCO_ITEMS, ito=domain, ifrom=self.xmpp.boundjid)
        result = await iq.send(timeout=self.settings.timeout)
        query = result.xml.find(f"{{{DISCO_ITEMS}}}query")
        found = [] if query is None else query.findall(f"{{{DISCO_ITEMS}}}item")
        return [str(item.get("jid")) for item in found if item.get("jid")]

    async def _info(self, jid: str) -> tuple[set[str], int | None]:
        iq = self.xmpp.make_iq_get(queryxmlns=DISCO_INFO, ito=jid, ifrom=self.xmpp.boundjid)
        result = await iq.send(timeout=self.settings.timeout)
        query = result.xml.find(f"{{{DISCO_INFO}}}query")
        if query is None:
            return set(), None
        features = {str(f.get("var")) for f in query.findall(f"{{{DISCO_INFO}}}feature")}
        limit: int | None = None
        for form in query.findall(f"{{{DATA_NS}}}x"):
            fields = {f.get("var"): f for f in form.findall(f"{{{DATA_NS}}}field")}
            form_type = fields.get("FORM_TYPE")
            size = fields.get("max-file-size")
            if form_type is None or size is None:
                continue
            if form_type.findtext(f"{{{DATA_NS}}}value") == UPLOAD_NS:
                text = size.findtext(f"{{{DATA_NS}}}value") or ""
                limit = int(text) if text.strip().isdigit() else None
        return features, limit

    # -- FileTransfer --------------------------------------------------------------------

    async def upload_limit(self) -> int | None:
        return self.max_size

    async def upload(self, path: Path, name: str, content_type: str) -> str:
        if self.service is None:
            raise FileError("there is no upload service", temporary=True)
        size = path.stat().st_size
        if self.max_size is not None and size > self.max_size:
            raise FileError(
                "larger than the upload service takes", too_large=True, limit=self.max_size
            )
        get_url, put_url, headers = await self._slot(name, size, content_type)
        import aiohttp

        headers["Content-Type"] = content_type
        headers["Content-Length"] = str(size)
        try:
            http = self._session()
            with path.open("rb") as body:
                async with http.put(
                    put_url, data=_chunks(body), headers=headers, ssl=self._tls
                ) as response:
                    if response.status not in (200, 201):
                        raise FileError(
                            f"the upload service answered HTTP {response.status}",
                            temporary=response.status >= 500,
                        )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FileError(f"the upload failed: {_http_reason(exc)}", temporary=True) from exc
        return get_url

    async def _slot(
        self, name: str, size: int, content_type: str
    ) -> tuple[str, str, dict[str, str]]:
        assert self.service is not None
        iq = self.xmpp.make_iq_get(ito=self.service, ifrom=self.xmpp.boundjid)
        ET.SubElement(
            iq.xml,
            f"{{{UPLOAD_NS}}}request",
            {"filename": name, "size": str(size), "content-type": content_type},
        )
        try:
            result = await iq.send(timeout=self.settings.timeout)
        except IqTimeout as exc:
            raise FileError("the upload service did not answer", temporary=True) from exc
        except IqError as exc:
            error = exc.iq["error"]
            condition = error["condition"]
            too_large = exc.iq.xml.find(f".//{{{UPLOAD_NS}}}file-too-large")
            if too_large is not None:
                limit = too_large.findtext(f"{{{UPLOAD_NS}}}max-file-size") or ""
                raise FileError(
                    "larger than the upload service takes",
                    too_large=True,
                    limit=int(limit) if limit.isdigit() else None,
                ) from exc
            text = error["text"] or condition
            raise FileError(
                f"the upload service refused it ({text})",
                temporary=error["type"] == "wait" or condition == "service-unavailable",
            ) from exc
        slot = result.xml.find(f"{{{UPLOAD_NS}}}slot")
        put = slot.find(f"{{{UPLOAD_NS}}}put") if slot is not None else None
        get = slot.find(f"{{{UPLOAD_NS}}}get") if slot is not None else None
        if put is None or get is None or not put.get("url") or not get.get("url"):
            raise FileError("the upload service sent no usable slot")
        headers = {
            str(header.get("name")): " ".join((header.text or "").split())
            for header in put.findall(f"{{{UPLOAD_NS}}}header")
            if str(header.get("name", "")).lower() in SLOT_HEADERS
        }
        return str(get.get("url")), str(put.get("url")), headers

    async def download(self, url: str, directory: Path, max_bytes: int) -> DownloadedFile:
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").lower()
        allowed = self.allowed_hosts()
        if parsed.scheme not in ("http", "https") or host not in allowed:
            hosts = ", ".join(sorted(allowed)) or "no host"
            raise FileError(f"files are only fetched from {hosts}")
        max_bytes = min(max_bytes, self.settings.max_download_bytes)
        import aiohttp

        name = _name_from(parsed.path)
        handle, raw_path = tempfile.mkstemp(dir=directory, prefix="download-")
        path = Path(raw_path)
        try:
            with os.fdopen(handle, "wb") as out:
                timeout = aiohttp.ClientTimeout(total=self.settings.download_timeout)
                async with self._session().get(
                    url, ssl=self._tls, timeout=timeout, allow_redirects=False
                ) as response:
                    if response.status != 200:
                        raise FileError(f"fetching the file answered HTTP {response.status}")
                    declared = response.content_length
                    if declared is not None and declared > max_bytes:
                        raise FileError(
                            "the file is too large to attach", too_large=True, limit=max_bytes
                        )
                    size = 0
                    async for chunk in response.content.iter_chunked(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise FileError(
                                "the file is too large to attach", too_large=True, limit=max_bytes
                            )
                        out.write(chunk)
                    content_type = response.content_type or ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            path.unlink(missing_ok=True)
            raise FileError(
                f"the file could not be fetched: {_http_reason(exc)}", temporary=True
            ) from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return DownloadedFile(path=path, name=name, content_type=content_type, size=size)

    def allowed_hosts(self) -> set[str]:
        """The hosts the operator lists (`files.download_hosts`): usually the upload
        service's, where the user's clients put what they send."""
        return {host.lower() for host in self.settings.download_hosts}

    def _session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.timeout,
                                              sock_read=self.settings.timeout),
            )  # fmt: skip
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


async def _chunks(body: BinaryIO) -> AsyncIterator[bytes]:
    """The file in pieces, read as aiohttp sends them: the whole file is never in memory."""
    while chunk := await asyncio.to_thread(body.read, CHUNK):
        yield chunk


def _name_from(path: str) -> str:
    """The file name a URL ends in (Prosody keeps the uploader's name there)."""
    name = urllib.parse.unquote(path.rstrip("/").rpartition("/")[2])
    return name or "file"


def _iq_reason(exc: IqError | IqTimeout) -> str:
    if isinstance(exc, IqTimeout):
        return "no answer"
    return str(exc.iq["error"]["condition"])


def _http_reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
