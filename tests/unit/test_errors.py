"""Every condition the gateway answers with reaches the wire as that condition."""

import pytest
from slixmpp import Message
from slixmpp.xmlstream import tostring

from bridges.base import BridgeError
from component.errors import _ERROR_TYPES, from_exception

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.mark.parametrize("condition", sorted(_ERROR_TYPES))
def test_each_condition_is_written_into_the_error_reply(condition):
    request = Message(sto="irc.localhost", sfrom="user@localhost/pc", stype="chat")
    request["id"] = "m1"
    error = from_exception(BridgeError("refused", condition))
    reply = request.reply(clear=error.clear)
    reply["error"]["condition"] = error.condition
    reply["error"]["type"] = error.etype
    reply["error"]["text"] = error.text
    written = tostring(reply.xml)
    assert f'<{condition} xmlns="{STANZAS_NS}"' in written
    assert reply["error"]["condition"] == condition
