"""Every test in tests/e2e starts real processes or servers: each is marked ``e2e``, so
``pytest -m "not e2e"`` (``make test-fast``) leaves the whole folder out."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
