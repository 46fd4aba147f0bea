"""The XMPP side of the gateway: one XEP-0114 component per configured bridge."""
