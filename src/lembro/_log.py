"""lembro's logger (``"lembro"``), with the logging module imported at its first use:
importing logging registers an exit hook, and importing lembro must register none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["log"]


class _OnFirstUse:
    """Stands for ``logging.getLogger("lembro")``, importing logging when first asked."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("lembro"), name)


if TYPE_CHECKING:
    from logging import Logger

    log: Logger
else:
    log = _OnFirstUse()
