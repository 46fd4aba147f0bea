"""The IRC bridge: every XMPP user gets their own IRC connections; channels are MUC rooms.

Modules, from the outside in:

- `bridge`: `IrcBridge`, the plugin (registration form, addresses, ad-hoc commands).
- `options`: the operator's config section; `settings`: per-user, per-network settings.
- `address`: `#chan%server` / `nick%server` / `server` ⇄ `Address`.
- `session`: `IrcSession`, one `network.Network` per server the user talks to.
- `network`: connection life (lazy connect, reconnect + rejoin) and user actions;
  `incoming`: IRC lines → events; `channel`: channel state and server mode syntax.
- `connection`: socket, registration (WEBIRC, PASS, CAP, SASL), paced FIFO sending,
  PING; `caps`: which IRCv3 capabilities to ask for, STS values; `sasl`: EXTERNAL,
  SCRAM-SHA-256, PLAIN; `sts`: the STS policies remembered; `identd`: RFC 1413.
- `protocol` and `formatting`: wire syntax, decoding, colour codes, line splitting.
"""

from bridges.irc.bridge import IrcBridge

__all__ = ["IrcBridge"]
