"""The store protocols and the owner methods: every lembro store and async face has
``sessions_of`` and ``destroy_sessions_of``; a store written before them still passes
``isinstance`` and serves sessions, and only those two calls refuse it, clearly."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from lembro import (
    AsyncRedisStore,
    AsyncSessionStore,
    InvalidOption,
    MemoryStore,
    RedisStore,
    SessionStore,
    Stats,
    as_async,
)
from lembro._cookies import aregenerate, regenerate
from lembro.protocol import _InlineAsync, _ThreadAsync

OWNER_METHODS = ("sessions_of", "destroy_sessions_of")


@pytest.mark.parametrize("store", [MemoryStore, RedisStore])
def test_every_sync_store_has_the_owner_methods(store: type) -> None:
    for name in OWNER_METHODS:
        assert callable(getattr(store, name))
        assert not inspect.iscoroutinefunction(getattr(store, name))


@pytest.mark.parametrize("face", [AsyncRedisStore, _InlineAsync, _ThreadAsync])
def test_every_async_store_and_face_has_them_as_coroutines(face: type) -> None:
    for name in OWNER_METHODS:
        assert inspect.iscoroutinefunction(getattr(face, name))


class OlderStore:
    """A store written against the protocol before the owner methods: a dict."""

    ttl = 60.0
    blocking = True

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, sid: str) -> dict[str, Any] | None:
        return self.data.get(sid)

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.data[sid] = data

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        if sid not in self.data:
            return False
        self.data[sid] = data
        return True

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        return sid in self.data

    def destroy(self, sid: str) -> bool:
        return self.data.pop(sid, None) is not None

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.data)

    def clear(self) -> None:
        self.data.clear()

    def purge(self) -> int:
        return 0

    def stats(self) -> Stats:
        return Stats(len(self.data), 0, None, 0, 0, 0, 0, 0)

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, sid: object) -> bool:
        return sid in self.data


def test_a_store_written_before_the_owner_methods_still_serves() -> None:
    older = OlderStore()
    assert isinstance(older, SessionStore)
    face = as_async(older)  # type: ignore[arg-type]  # type checkers ask for the two

    async def main() -> None:
        await face.set("sid", {"user": "ana"})
        assert await face.get("sid") == {"user": "ana"}
        for call in (face.sessions_of("ana"), face.destroy_sessions_of("ana")):
            with pytest.raises(InvalidOption, match="owner_key"):
                await call
        assert await face.get("sid") == {"user": "ana"}

    asyncio.run(main())
    assert isinstance(face, AsyncSessionStore)


@pytest.mark.parametrize("face", [AsyncRedisStore, _InlineAsync, _ThreadAsync])
def test_every_async_store_and_face_has_rename_as_a_coroutine(face: type) -> None:
    assert inspect.iscoroutinefunction(face.rename)


@pytest.mark.parametrize("wrap", [as_async, _ThreadAsync])
def test_an_async_face_of_a_memory_store_renames_in_one_step(wrap: Any) -> None:
    with MemoryStore("1M", None, owner_key="user") as store:
        store.set("old", {"user": "ana"})
        face = wrap(store)

        async def main() -> None:
            assert await face.rename("old", "new", {"user": "ana", "in": True}) is True
            assert await face.rename("old", "newer", {"user": "ana"}) is False

        asyncio.run(main())
        assert store.all() == {"new": {"user": "ana", "in": True}}
        assert store.sessions_of("ana") == ["new"]


def test_a_store_without_rename_still_regenerates_by_destroy_then_set() -> None:
    older = OlderStore()
    older.set("old", {"cart": [1]})
    new = regenerate(older, "old", {"cart": [1], "user": "ana"})  # type: ignore[arg-type]
    assert new is not None
    assert older.data == {new: {"cart": [1], "user": "ana"}}
    assert regenerate(older, "old", {"user": "ana"}) is None  # type: ignore[arg-type]
    face = as_async(older)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="rename"):
        asyncio.run(face.rename(new, "x", {}))  # type: ignore[attr-defined]
    newer = asyncio.run(aregenerate(face, new, {"user": "ana"}))
    assert newer is not None
    assert older.data == {newer: {"user": "ana"}}


@pytest.mark.parametrize("face", [AsyncRedisStore, _InlineAsync, _ThreadAsync])
def test_every_async_store_and_face_has_update_as_a_coroutine(face: type) -> None:
    assert inspect.iscoroutinefunction(face.update)


@pytest.mark.parametrize("wrap", [as_async, _ThreadAsync])
def test_an_async_face_of_a_memory_store_updates_the_session_as_it_is_now(wrap: Any) -> None:
    with MemoryStore("1M", None) as store:
        store.set("s", {"theme": "light", "flash": "hi"})
        face = wrap(store)

        async def main() -> None:
            assert await face.update("s", {"cart": [1]}) is True
            assert await face.update("s", {"theme": "dark"}, ["flash"]) is True
            assert await face.update("gone", {"cart": [2]}) is False

        asyncio.run(main())
        assert store.all() == {"s": {"theme": "dark", "cart": [1]}}


def test_a_store_without_update_says_so_through_its_async_face() -> None:
    face = as_async(OlderStore())  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="update"):
        asyncio.run(face.update("s", {"a": 1}))  # type: ignore[attr-defined]
