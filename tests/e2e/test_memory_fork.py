"""MemoryStore across real forks: a child never inherits a change half done."""

from __future__ import annotations

import os
import threading

import pytest

from lembro import MemoryStore

pytestmark = pytest.mark.e2e

IDS = [f"s{i:042d}" for i in range(400)]
# Each fork lands somewhere in a write, a touch, a destroy or a purge of the thread.
FORKS = 150


def child_is_whole(store: MemoryStore) -> bool:
    """In the child: the store checks out, empties to size 0, and fills past its cap."""
    store.check()
    for sid in IDS:
        store.destroy(sid)
    store.prune()
    if store.size != 0:
        return False
    store.check()
    for i in range(3 * len(IDS)):
        store.set(f"c{i:042d}", {"pad": "p" * 200})
    store.check()
    return store.size <= store.max_size


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads
def test_forks_taken_while_a_thread_writes_give_whole_stores() -> None:
    store = MemoryStore("64K", None)
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            sid = IDS[i % len(IDS)]
            store.set(sid, {"i": i, "pad": "p" * (i % 300)}, ttl=1000.0 if i % 3 else 0.01)
            store.touch(IDS[(i * 7) % len(IDS)], ttl=5.0 if i % 2 else 500.0)
            store.get(IDS[(i * 13) % len(IDS)])
            if i % 5 == 0:
                store.destroy(IDS[(i * 3) % len(IDS)])
            if i % 97 == 0:
                store.purge()
            i += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    failed = 0
    try:
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: answer with the exit code, skip pytest's teardown
                code = 1
                try:
                    code = 0 if child_is_whole(store) else 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            failed += os.waitstatus_to_exitcode(status) != 0
    finally:
        stop.set()
        thread.join()
    assert failed == 0, f"{failed} of {FORKS} children had a torn store"
    store.check()
    store.close()
