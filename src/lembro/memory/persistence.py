"""SnapshotFile: when a MemoryStore's snapshot file is read and written, and by which
process after a fork.

Only a process that changed the sessions since it loaded them writes the file. A process
that forked and changed nothing since leaves it to a child that replaced it, so a
``--preload`` master or an idle pool worker never overwrites a worker's sessions with its
stale copy, while a process that forks a helper still writes its own. A child forked
from a process that changed nothing since it loaded the file (a ``--preload`` master
starting a new worker after one was recycled) reloads the file when another process
has replaced it since: it starts from the sessions as they are now, not as they were when
the master started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..snapshot import (
    FileIdentity,
    SnapshotRecord,
    file_identity,
    load_snapshot,
    remove_leftovers,
    write_snapshot,
)

__all__ = ["SnapshotFile"]


class SnapshotFile:
    """The snapshot file at ``path``, written with the serializer named ``serializer``."""

    __slots__ = ("_at_fork", "_known", "_unsaved_at_fork", "path", "serializer")

    def __init__(self, path: str, serializer: str) -> None:
        self.path = path
        self.serializer = serializer
        # The file as this process last loaded or wrote it: another identity means that
        # another process replaced it since.
        self._known: FileIdentity | None = None
        # Whether changes made before this process's last fork are not saved yet: they
        # are still its to write, unless a child carried them on and replaced the file,
        # which the file at the fork tells.
        self._unsaved_at_fork = False
        self._at_fork: FileIdentity | None = None

    def load(
        self, take: Callable[[SnapshotRecord], None], max_bytes: int, max_lifetime: float
    ) -> bool:
        """Give ``take`` each session in the file, as it is read;
        return whether the whole file was good (see ``lembro.snapshot.load_snapshot``)."""
        remove_leftovers(self.path)
        self._known = file_identity(self.path)
        return load_snapshot(
            self.path, self.serializer, take, max_bytes=max_bytes, max_lifetime=max_lifetime
        )

    def write(self, records: Iterable[SnapshotRecord]) -> None:
        """Write ``records`` to the file now, whoever wrote it last."""
        write_snapshot(self.path, self.serializer, records)
        self._saved()

    def write_if_current(
        self, changed: bool, records: Callable[[], Iterable[SnapshotRecord]]
    ) -> bool:
        """Write the records ``records()`` gives when this process's copy is the current
        one: it ``changed`` the sessions since it loaded them, or changed them before a
        fork and no child replaced the file since. Return whether it wrote."""
        if changed:
            self.write(records())
            return True
        if not self._unsaved_at_fork:
            return False
        at_fork = self._at_fork
        path = self.path
        if not write_snapshot(
            path, self.serializer, records(), lambda: file_identity(path) == at_fork
        ):
            return False
        self._saved()
        return True

    def _saved(self) -> None:
        self._unsaved_at_fork = False  # the changes from before a fork are in the file now
        self._known = file_identity(self.path)

    def before_fork(self, changed: bool) -> None:
        """Just before a fork, note the file as it is: a child that replaces it, however
        soon after the fork, is then seen as having replaced it."""
        if changed:
            self._at_fork = file_identity(self.path)

    def forked_in_parent(self, changed: bool) -> None:
        """This process forked: a child may carry its sessions on and write them."""
        if changed:
            self._unsaved_at_fork = True

    def stale_in_child(self, changed: bool) -> bool:
        """In a forked child: whether its copy of the sessions is older than the file (its
        parent had not ``changed`` them since it loaded the file, and another process has
        replaced the file since)."""
        self._unsaved_at_fork = False
        return not changed and file_identity(self.path) != self._known
