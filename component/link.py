"""Keeping a component connected to the XMPP server through restarts and outages.

slixmpp retries a failed connect on its own schedule (no jitter, up to 5 minutes) and
does not reconnect after a dropped stream. This supervisor owns that instead: capped,
jittered exponential backoff from tenacity (Apache-2.0, the usual choice for retry
policies in Python), one log line per attempt, and a slow fixed delay when the server
rejects the component secret, so a typo does not become a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from bridges.timeouts import within
from component.config import ReconnectSettings
from component.gateway import Gateway

log = logging.getLogger(__name__)


class LinkDown(Exception):
    """The stream could not be opened or was lost."""


class SecretRejected(LinkDown):
    """The server refused the handshake: wrong secret or unknown component name."""


REFUSAL_HINTS = {
    "not-authorized": "check {option}.secret: it must equal the server's component secret",
    "host-unknown": "check {option}.jid: the server must declare it as a component",
}
"""What the operator should look at, by the server's stream error condition."""

TRANSIENT_REFUSALS = {
    "conflict": "another process is still connected as this component",
}
"""Refusals that pass by themselves (a stopping instance's stream, a hot standby taking
over as the old one goes), retried with the usual backoff, not the slow auth delay."""


CLOSED_IN_HANDSHAKE = (
    "the server closed the stream during the handshake without an error; on ejabberd "
    "23.01 that is what a domain_balancing type without component_number does (its log "
    "says {badkey,component_number}): add component_number (equal to cluster.slots)"
)
"""The hint for a stream closed after the handshake was sent but before it was accepted."""


class Link:
    def __init__(
        self,
        gateway: Gateway,
        host: str,
        port: int,
        policy: ReconnectSettings,
        *,
        option: str,
    ) -> None:
        """`option` is the config path of this component's section, named in refusals."""
        self.gateway = gateway
        self.option = option
        self.host, self.port = host, port
        self.policy = policy
        self._stopping = asyncio.Event()
        self._outcome: asyncio.Future[None] | None = None
        self._backoff = wait_random_exponential(
            multiplier=policy.initial_delay, max=policy.max_delay
        )
        self._handshaking = False
        """True from the TCP connection until the server accepted the handshake."""
        gateway.add_event_handler("connected", self._on_connected)
        gateway.add_event_handler("session_start", self._on_up)
        gateway.add_event_handler("connection_failed", self._on_failed)
        gateway.add_event_handler("stream_error", self._on_stream_error)
        gateway.add_event_handler("disconnected", self._on_down)

    @property
    def name(self) -> str:
        return self.gateway.boundjid.bare

    def _new_outcome(self) -> asyncio.Future[None]:
        """A future for the next state change; its error counts as seen even if unawaited."""
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._outcome = outcome
        return outcome

    def _settle(self, error: LinkDown | None) -> None:
        if self._outcome is not None and not self._outcome.done():
            if error is None:
                self._outcome.set_result(None)
            else:
                self._outcome.set_exception(error)

    def _on_connected(self, _event: Any) -> None:
        self._handshaking = True

    def _on_up(self, _event: Any) -> None:
        self._handshaking = False
        self._settle(None)

    def _on_failed(self, error: Any) -> None:
        # Stop slixmpp's own retry schedule; ours decides when to try again.
        self.gateway.cancel_connection_attempt()
        self._settle(LinkDown(f"cannot connect to {self.host}:{self.port}: {error}"))

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"]
        text = error["text"] or condition
        hint = REFUSAL_HINTS.get(condition)
        if hint is not None:
            self._settle(
                SecretRejected(
                    f"server refused component {self.name} ({condition}: {text}); "
                    + hint.format(option=self.option)
                )
            )
        elif condition in TRANSIENT_REFUSALS:
            self._settle(LinkDown(f"{condition}: {text}; {TRANSIENT_REFUSALS[condition]}"))
        else:
            self._settle(LinkDown(f"stream error {condition}: {text}"))

    def _on_down(self, reason: Any) -> None:
        text = f"connection closed ({reason or 'by the server'})"
        if self._handshaking and reason in (None, "", "End of stream"):  # closed, no error
            text = f"{text}: {CLOSED_IN_HANDSHAKE}"
        self._handshaking = False
        self._settle(LinkDown(text))

    def _wait(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and isinstance(outcome.exception(), SecretRejected):
            return self.policy.auth_failure_delay
        return float(self._backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        log.warning(
            "%s: %s; attempt %d, retrying in %.1f s",
            self.name,
            state.outcome.exception(),
            state.attempt_number,
            state.next_action.sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when asked to stop."""
        try:
            await within(self._stopping.wait(), seconds)
        except TimeoutError:
            return

    async def _connect_once(self) -> None:
        if self._stopping.is_set():
            return
        outcome = self._new_outcome()
        self.gateway.connect(self.host, self.port)
        try:
            await outcome
        except LinkDown:
            self.gateway.cancel_connection_attempt()
            if self.gateway.transport is not None:
                self.gateway.abort()
            if self._stopping.is_set():
                return
            raise

    async def run(self) -> None:
        """Stay connected until `stop()`; each established stream resets the backoff."""
        while not self._stopping.is_set():
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(LinkDown),
                wait=self._wait,
                sleep=self._sleep,
                before_sleep=self._log_retry,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._connect_once()
                if self._stopping.is_set():
                    return
            if self._stopping.is_set():
                return
            try:
                await self._new_outcome()  # settled when the stream is lost or on stop()
            except LinkDown as lost:
                if not self._stopping.is_set():
                    log.warning("%s: %s; reconnecting", self.name, lost)

    async def stop(self) -> None:
        """Close the stream (after the gateway's own shutdown) and end `run()`."""
        self._stopping.set()
        self.gateway.cancel_connection_attempt()
        # slixmpp drops a cancelled attempt without an event: settle it ourselves, or
        # run() would wait on it forever.
        self._settle(LinkDown("gateway stopping"))
        if self.gateway.transport is not None:
            await self.gateway.disconnect(wait=2.0, reason="gateway stopping")
