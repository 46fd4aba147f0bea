"""The IMAP reconnect schedule: quick while a restart is likely, patient after."""

import itertools

from bridges.mail.watcher import QUICK_RETRIES, reconnect_delays


def test_a_brief_outage_is_retried_at_the_shortest_delay_then_backoff_doubles():
    delays = list(itertools.islice(reconnect_delays(1.0, 20.0), QUICK_RETRIES + 6))
    assert delays[:QUICK_RETRIES] == [1.0] * QUICK_RETRIES  # a 5 s restart costs ~1 s
    assert delays[QUICK_RETRIES:] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
