"""Resident memory the gateway process does not need to hold (issue #14: idle RSS).

Imported by `component.cli` before anything else of the gateway, since slixmpp decides
at its own import what it loads:

* pygments, when installed (test tools and many desktop systems pull it in), only to
  colour slixmpp's DEBUG stanza logs in a terminal: 2.6 MiB;
* aiodns, with pycares and idna, to resolve the server's name through c-ares. A
  component connects to the one host of its configuration, for which the system's
  resolver (`getaddrinfo`, which also reads /etc/hosts) is what slixmpp and aiohttp use
  without it: 1.4 MiB.

Both are then unimportable in this process, as if not installed; `setdefault` leaves
one alone that something imported earlier (a test process) and so still uses.
"""

from __future__ import annotations

import gc
import sys

KEPT_OUT = ("pygments", "aiodns")

for _name in KEPT_OUT:
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]  # None: ImportError


def release_startup_garbage() -> None:
    """Give the memory start-up used and freed (config parsing, schema checks, module
    compilation, the first connections) back to the system.

    Python's allocator returns its freed arenas to malloc, but glibc's malloc keeps
    freed pages inside its heap until something calls `malloc_trim`; measured once both
    components are up (bench/idle_memory.py), that returns about 1 MiB. Elsewhere than
    glibc there is no such call, and nothing to do.
    """
    import ctypes  # 0.3 MiB itself: only here

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
