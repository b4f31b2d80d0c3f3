"""The frameworks' snapshot settings: pickle with a snapshot only with the opt-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from flask import Flask

from lembro import InvalidOption, MemoryStore
from lembro.django import build_store
from lembro.flask import Lembro


def flask_app(path: Path, **config: object) -> Flask:
    app = Flask(__name__)
    app.secret_key = "a test key"
    app.config.update({"LEMBRO_SERIALIZER": "pickle", "LEMBRO_SNAPSHOT": str(path), **config})
    return app


def test_flask_pickle_with_a_snapshot_needs_lembro_trust_pickle(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="trust_pickle"):
        Lembro(flask_app(tmp_path / "s.snap"))
    extension = Lembro(flask_app(tmp_path / "s.snap", LEMBRO_TRUST_PICKLE=True))
    assert isinstance(extension.store, MemoryStore)
    extension.store.close()


def test_django_pickle_with_a_snapshot_needs_trust_pickle(tmp_path: Path) -> None:
    options = {"SERIALIZER": "pickle", "SNAPSHOT": str(tmp_path / "s.snap"), "TTL": 60}
    with pytest.raises(ImproperlyConfigured, match="trust_pickle"):
        build_store(options)
    store = build_store({**options, "TRUST_PICKLE": True})
    assert isinstance(store, MemoryStore)
    store.close()


def test_a_snapshot_in_a_missing_directory_is_refused_when_the_app_starts(tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="existing directory"):
        Lembro(flask_app(tmp_path / "nowhere" / "s.snap", LEMBRO_SERIALIZER="msgpack"))
    with pytest.raises(ImproperlyConfigured, match="existing directory"):
        build_store({"SNAPSHOT": str(tmp_path / "nowhere" / "s.snap"), "TTL": 60})
