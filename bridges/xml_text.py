"""Text that XML 1.0 can carry: every other character becomes U+FFFD.

IRC lines and mail may hold BEL, ESC, NUL and other C0 controls (or, after a lenient
decode, lone surrogates). XML 1.0 forbids them even escaped, and an XMPP server answers
one with `not-well-formed` and closes the whole component stream, cutting every user
off. The gateway cleans each stanza as it leaves (component.gateway); bridges clean
their decoded text too, so what they store and compare is what users will see.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` with each character XML 1.0 forbids replaced by U+FFFD."""
    return _NOT_XML.sub(REPLACEMENT, text) if _NOT_XML.search(text) else text
