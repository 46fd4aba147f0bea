from slixmpp.exceptions import IqError


async def test_ping_reaches_the_component(gateway, client):
    await client.plugin["xep_0199"].ping("fake.localhost", timeout=5)


async def test_unknown_iq_gets_an_error(gateway, client):
    iq = client.make_iq_to("fake.localhost")
    iq.append(iq.xml.makeelement("{urn:example:nothing}query", {}))
    try:
        await iq.send(timeout=5)
    except IqError as exc:
        assert exc.iq["error"]["condition"] in ("service-unavailable", "feature-not-implemented")
    else:
        raise AssertionError("an unknown IQ was answered with a result")
