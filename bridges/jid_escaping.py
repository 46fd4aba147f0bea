"""XEP-0106 JID escaping: the one place legacy identifiers become JID localparts.

Every bridge's address mapping goes through these two functions (the default one in
`Bridge.format_address`, and schemes of their own such as IRC's), so the same
hostile input (spaces, `@`, `/`, quotes, a literal `\\20`) maps the same way everywhere.
"""

from __future__ import annotations

# XEP-0106 §3.2: the characters a localpart may not hold, and their escapes.
_ESCAPES: dict[str, str] = {
    " ": "\\20",
    '"': "\\22",
    "&": "\\26",
    "'": "\\27",
    "/": "\\2f",
    ":": "\\3a",
    "<": "\\3c",
    ">": "\\3e",
    "@": "\\40",
    "\\": "\\5c",
}
_UNESCAPES: dict[str, str] = {code: char for char, code in _ESCAPES.items()}
_ESCAPE_HEX = frozenset(code[1:] for code in _UNESCAPES)


def escape_node(text: str) -> str:
    """Escape `text` for use as a JID localpart (XEP-0106 §4.2).

    A backslash is escaped only where it would otherwise read as an escape sequence.
    The XEP forbids a localpart that starts or ends with an escaped space, so such
    identifiers are refused rather than mapped to a JID no server would route.
    """
    if not text:
        raise ValueError("an empty identifier has no JID localpart")
    if text[0] == " " or text[-1] == " ":
        raise ValueError("an identifier that starts or ends with a space has no JID localpart")
    out: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\5c" if text[index + 1 : index + 3].lower() in _ESCAPE_HEX else "\\")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        else:
            out.append(char)
    return "".join(out)


def unescape_node(node: str) -> str:
    """Reverse `escape_node`; an escape that XEP-0106 does not define is left as is."""
    out: list[str] = []
    index = 0
    while index < len(node):
        code = node[index : index + 3].lower()
        if node[index] == "\\" and code in _UNESCAPES:
            out.append(_UNESCAPES[code])
            index += 3
        else:
            out.append(node[index])
            index += 1
    return "".join(out)
