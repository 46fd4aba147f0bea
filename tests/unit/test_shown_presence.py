"""Which of a user's resources decides the presence the legacy side sees."""

from component.sessions import ResourcePresence, shown_presence


def test_highest_priority_wins_even_when_away():
    resources = {
        "phone": ResourcePresence(0, "", ""),
        "laptop": ResourcePresence(5, "away", "at lunch"),
    }
    assert shown_presence(resources) == ("away", "at lunch")


def test_equal_priority_goes_to_the_most_available():
    resources = {
        "phone": ResourcePresence(1, "xa", "asleep"),
        "desk": ResourcePresence(1, "dnd", "meeting"),
        "laptop": ResourcePresence(1, "chat", ""),
    }
    assert shown_presence(resources) == ("chat", "")
    del resources["laptop"]
    assert shown_presence(resources) == ("dnd", "meeting")
