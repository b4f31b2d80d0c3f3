"""lembro._changes: what a request changed in its session, per top-level key."""

from __future__ import annotations

from typing import Any

from lembro._changes import changed_inside, changes_of, fingerprint_key


def loaded_session() -> tuple[dict[str, Any], dict[str, Any]]:
    """What the store gave, and the session built on it (the same value objects)."""
    loaded: dict[str, Any] = {"theme": "light", "cart": [1], "prefs": {"lang": "pt"}, "n": 1}
    return loaded, dict(loaded)


def test_a_session_only_read_changed_nothing() -> None:
    loaded, session = loaded_session()
    before = {"cart": fingerprint_key("cart", session["cart"])}
    assert not changed_inside(session, before)
    assert changes_of(session, loaded, before) == ({}, [])


def test_keys_assigned_added_and_deleted_are_found() -> None:
    loaded, session = loaded_session()
    session["theme"] = "dark"
    session["new"] = [2]
    del session["n"]
    assert changes_of(session, loaded, None) == ({"theme": "dark", "new": [2]}, ["n"])


def test_a_container_handed_out_and_changed_in_place_is_found() -> None:
    loaded, session = loaded_session()
    before = {"prefs": fingerprint_key("prefs", session["prefs"])}
    session["prefs"]["lang"] = "en"
    assert changed_inside(session, before)
    assert changes_of(session, loaded, before) == ({"prefs": {"lang": "en"}}, [])


def test_a_value_assigned_the_same_object_back_is_not_a_change() -> None:
    loaded, session = loaded_session()
    session["cart"] = session["cart"]
    assert changes_of(session, loaded, None) == ({}, [])
