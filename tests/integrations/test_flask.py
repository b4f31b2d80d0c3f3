"""lembro.flask through Flask's own test client, against a real MemoryStore."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import runpy
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask, session
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from werkzeug.test import TestResponse

from lembro import MemoryStore, SerializationError, StoreUnavailable
from lembro.errors import InvalidOption
from lembro.flask import Lembro, LembroSession, LembroSessionInterface
from lembro.ids import is_session_id, new_session_id
from lembro.serializers import JsonSerializer
from tests.servers import ROOT

from ..conftest import FakeClock

SECRET = "test-secret"


def make_app(store: MemoryStore | None = None, **config: Any) -> Flask:
    """An app with routes that exercise the session, using lembro with ``store``."""
    app = Flask(__name__)
    app.config.update({"SECRET_KEY": SECRET, "TESTING": True, **config})
    Lembro(app, store)

    @app.get("/inc")
    def inc() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    @app.get("/none")
    def none() -> str:
        return "no session here"

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "cleared"

    @app.get("/regenerate")
    def regenerate() -> str:
        assert isinstance(session, LembroSession)
        session.regenerate()
        return "regenerated"

    @app.get("/permanent/<int:flag>")
    def permanent(flag: int) -> str:
        session.permanent = bool(flag)
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    return app


@pytest.fixture
def app(store: MemoryStore) -> Flask:
    return make_app(store)


@pytest.fixture
def client(app: Flask) -> Iterator[Any]:
    with app.test_client() as c:
        yield c


def sign(sid: str, key: str = SECRET) -> str:
    """Sign ``sid`` as docs/security.md says lembro.flask does, with ``key``: computed here
    independently, the id, a dot, and keyed BLAKE2b-256 of the id under HMAC-SHA256(key,
    "lembro.session-id")."""
    derived = hmac.digest(key.encode(), b"lembro.session-id", "sha256")
    tag = base64.urlsafe_b64encode(
        hashlib.blake2b(sid.encode(), key=derived, digest_size=32).digest()
    ).rstrip(b"=")
    return f"{sid}.{tag.decode()}"


def session_cookie(response: TestResponse, name: str = "session") -> str | None:
    """The Set-Cookie header for ``name`` in ``response``, or ``None``."""
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def cookie_sid(client: Any, name: str = "session") -> str:
    """The session id in the client's cookie (the part before the signature)."""
    cookie = client.get_cookie(name)
    assert cookie is not None
    sid, _, _ = cookie.value.partition(".")
    return str(sid)


# ---- round trip and the cookie ---------------------------------------------------------


def test_counter_round_trips(client: Any, store: MemoryStore) -> None:
    assert [client.get("/inc").text for _ in range(3)] == ["1", "2", "3"]
    assert list(store.all().values()) == [{"n": 3}]


def test_cookie_holds_only_a_signed_43_char_id(client: Any, store: MemoryStore) -> None:
    client.get("/inc")
    value = client.get_cookie("session").value
    sid, dot, _signature = value.partition(".")
    assert dot == "."
    assert len(sid) == 43
    assert is_session_id(sid)
    assert value == sign(sid)
    assert sid in store
    assert len(value) == 43 + 1 + 43  # id, dot, BLAKE2b-256: room for nothing else


def test_session_keeps_its_id_across_writes(client: Any) -> None:
    client.get("/inc")
    first = cookie_sid(client)
    client.get("/inc")
    assert cookie_sid(client) == first


# ---- cookies the server did not issue ----------------------------------------------------


def planted_cookies() -> dict[str, tuple[str, str | None]]:
    """Cookie values the server never issued, each with the id it would smuggle in."""
    sid = new_session_id()
    good = sign(sid)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    return {
        "tampered": (tampered, sid),
        "unknown id, correctly signed": (sign(sid), sid),
        "unsigned id": (sid, sid),
        "other key": (sign(sid, "another-secret"), sid),
        "signed non-id": (sign("admin"), "admin"),
        "garbage": ("%%%not a cookie;;", None),
        "huge": ("A" * 4000, None),
        "unicode": ("sessão-☃-💥", None),
        "empty signature": (sid + ".", sid),
    }


@pytest.mark.parametrize("kind", list(planted_cookies()))
def test_cookie_not_issued_gets_a_fresh_session(kind: str, client: Any, store: MemoryStore) -> None:
    value, planted_sid = planted_cookies()[kind]
    client.set_cookie("session", value)
    response = client.get("/inc")
    assert response.status_code == 200
    assert response.text == "1"
    sid = cookie_sid(client)
    assert sid != planted_sid
    assert list(store.all()) == [sid]


def test_unknown_id_is_not_adopted_even_when_signed(client: Any, store: MemoryStore) -> None:
    planted = new_session_id()
    client.set_cookie("session", sign(planted))
    client.get("/inc")
    assert planted not in store
    assert cookie_sid(client) != planted


cookie_text = st.one_of(
    st.text(),
    st.text(alphabet="ABCXYZabcxyz0123456789-_.", min_size=40, max_size=100),
    st.builds(lambda sid, tail: sid + "." + tail, st.just(new_session_id()), st.text()),
)


def test_random_cookies_never_raise_nor_get_adopted(clock: FakeClock) -> None:
    with MemoryStore("1M", None, clock=clock) as store:
        app = make_app(store)
        client = app.test_client()

        @settings(max_examples=200, deadline=None)
        @given(value=cookie_text)
        def check(value: str) -> None:
            store.clear()
            client.delete_cookie("session")
            client.set_cookie("session", value)
            response = client.get("/inc")
            assert response.status_code == 200
            assert response.text == "1"
            sid = cookie_sid(client)
            assert sid not in value
            assert list(store.all()) == [sid]

        check()


# ---- storing only what someone wrote -----------------------------------------------------


def test_request_without_session_sets_no_cookie_and_stores_nothing(
    client: Any, store: MemoryStore
) -> None:
    response = client.get("/none")
    assert session_cookie(response) is None
    assert "Cookie" not in response.vary
    assert len(store) == 0


def test_read_only_request_creates_nothing(client: Any, store: MemoryStore) -> None:
    response = client.get("/read")
    assert response.text == "None"
    assert session_cookie(response) is None
    assert len(store) == 0


def test_permanent_flag_alone_creates_nothing(store: MemoryStore) -> None:
    app = make_app(store)

    @app.before_request
    def make_permanent() -> None:
        session.permanent = True

    response = app.test_client().get("/read")
    assert session_cookie(response) is None
    assert len(store) == 0


def test_clearing_the_session_deletes_record_and_cookie(client: Any, store: MemoryStore) -> None:
    client.get("/inc")
    sid = cookie_sid(client)
    response = client.get("/clear")
    header = session_cookie(response)
    assert header is not None
    assert "Max-Age=0" in header
    assert sid not in store
    assert len(store) == 0
    assert client.get_cookie("session") is None
    assert "Cookie" in response.vary


# ---- regenerate -------------------------------------------------------------------------


def test_regenerate_moves_data_to_a_new_id_and_destroys_the_old(
    client: Any, store: MemoryStore
) -> None:
    client.get("/inc")
    client.get("/inc")
    old = cookie_sid(client)
    client.get("/regenerate")
    new = cookie_sid(client)
    assert new != old
    assert is_session_id(new)
    assert old not in store
    assert store.all() == {new: {"n": 2}}
    assert client.get("/inc").text == "3"


def test_old_id_is_dead_after_regenerate(client: Any, store: MemoryStore) -> None:
    client.get("/inc")
    old_cookie = client.get_cookie("session").value
    client.get("/regenerate")
    client.set_cookie("session", old_cookie)
    assert client.get("/read").text == "None"


def test_regenerate_of_an_emptied_session_deletes_everything(store: MemoryStore) -> None:
    app = make_app(store)

    @app.get("/logout")
    def logout() -> str:
        assert isinstance(session, LembroSession)
        session.clear()
        session.regenerate()
        return "bye"

    client = app.test_client()
    client.get("/inc")
    response = client.get("/logout")
    assert "Max-Age=0" in (session_cookie(response) or "")
    assert len(store) == 0


def test_regenerate_of_a_new_session_just_creates_it(client: Any, store: MemoryStore) -> None:
    app = client.application

    @app.get("/login")
    def login() -> str:
        assert isinstance(session, LembroSession)
        session["user"] = "ada"
        session.regenerate()
        return "hi"

    client.get("/login")
    assert store.all() == {cookie_sid(client): {"user": "ada"}}


# ---- lifetimes --------------------------------------------------------------------------


def test_non_permanent_session_gets_a_browser_session_cookie(client: Any) -> None:
    header = session_cookie(client.get("/permanent/0"))
    assert header is not None
    assert "Expires" not in header
    assert client.get_cookie("session").expires is None


def test_permanent_session_cookie_expires_after_the_lifetime(store: MemoryStore) -> None:
    client = make_app(store, PERMANENT_SESSION_LIFETIME=timedelta(days=3)).test_client()
    before = datetime.now(timezone.utc)
    header = session_cookie(client.get("/permanent/1"))
    after = datetime.now(timezone.utc)
    assert header is not None
    expires = client.get_cookie("session").expires
    assert expires is not None
    # Expires has one-second resolution.
    low = before + timedelta(days=3) - timedelta(seconds=1)
    high = after + timedelta(days=3) + timedelta(seconds=1)
    assert low <= expires <= high


def test_non_permanent_record_still_lives_for_the_store_ttl(
    client: Any, store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/permanent/0")
    sid = cookie_sid(client)
    clock.advance(store.ttl - 1)
    assert sid in store
    clock.advance(2)
    assert sid not in store


def test_expired_server_side_session_gives_a_fresh_one(
    client: Any, store: MemoryStore, clock: FakeClock
) -> None:
    client.get("/inc")
    old = cookie_sid(client)
    clock.advance(store.ttl + 1)
    assert client.get("/inc").text == "1"
    assert cookie_sid(client) != old
    assert old not in store


class CountingStore(MemoryStore):
    """A MemoryStore that counts its writes (set or replace) and touches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sets = 0
        self.touches = 0

    def set(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> None:
        self.sets += 1
        super().set(sid, data, ttl)

    def replace(self, sid: str, data: dict[str, Any], ttl: float | None = None) -> bool:
        self.sets += 1
        return super().replace(sid, data, ttl)

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        self.touches += 1
        return super().touch(sid, ttl)


@pytest.fixture
def counting(clock: FakeClock) -> Iterator[CountingStore]:
    s = CountingStore("1M", None, ttl=100, clock=clock)
    try:
        yield s
    finally:
        s.close()


def test_refresh_each_request_touches_and_refreshes_the_cookie(
    counting: CountingStore, clock: FakeClock
) -> None:
    client = make_app(counting, SESSION_REFRESH_EACH_REQUEST=True).test_client()
    client.get("/permanent/1")
    assert (counting.sets, counting.touches) == (1, 0)
    for _ in range(3):  # each read is a use: 3 x 60 s outlives the 100 s ttl
        clock.advance(60)
        response = client.get("/read")
        assert response.text == "1"
        assert session_cookie(response) is not None
    assert (counting.sets, counting.touches) == (1, 3)


def test_without_refresh_each_request_a_read_neither_touches_nor_sets_a_cookie(
    counting: CountingStore, clock: FakeClock
) -> None:
    client = make_app(counting, SESSION_REFRESH_EACH_REQUEST=False).test_client()
    client.get("/permanent/1")
    clock.advance(60)
    response = client.get("/read")
    assert response.text == "1"
    assert session_cookie(response) is None
    assert counting.touches == 0
    clock.advance(60)  # 120 s since the only write: past the 100 s ttl
    assert client.get("/read").text == "None"


def test_non_permanent_session_is_touched_but_gets_no_new_cookie(
    counting: CountingStore, clock: FakeClock
) -> None:
    client = make_app(counting, SESSION_REFRESH_EACH_REQUEST=True).test_client()
    client.get("/permanent/0")
    clock.advance(60)
    response = client.get("/read")
    assert session_cookie(response) is None
    assert (counting.sets, counting.touches) == (1, 1)
    clock.advance(60)
    assert client.get("/read").text == "1"


def test_a_session_destroyed_meanwhile_stays_destroyed(store: MemoryStore) -> None:
    """A logout in another request wins over this request's changes: the old id is not
    written again, no other id takes its data, and no cookie is set."""
    app = make_app(store)

    @app.get("/late")
    def late() -> str:
        assert isinstance(session, LembroSession)
        assert session.sid is not None
        store.destroy(session.sid)  # another request of this session logged out meanwhile
        session["late"] = True
        return "ok"

    client = app.test_client()
    client.get("/inc")
    old = cookie_sid(client)
    response = client.get("/late")
    assert response.text == "ok"
    assert session_cookie(response) is None
    assert old not in store
    assert len(store) == 0


def test_touch_of_a_vanished_session_sets_no_cookie(counting: CountingStore) -> None:
    app = make_app(counting)

    @app.get("/vanish")
    def vanish() -> str:
        assert isinstance(session, LembroSession)
        assert session.sid is not None
        counting.destroy(session.sid)  # as a concurrent logout would
        return str(session.get("n"))

    client = app.test_client()
    client.get("/permanent/1")
    response = client.get("/vanish")
    assert response.text == "1"
    assert session_cookie(response) is None
    assert len(counting) == 0


# ---- Flask's settings -------------------------------------------------------------------


def test_cookie_settings_are_honored(store: MemoryStore) -> None:
    settings_ = {
        "SESSION_COOKIE_NAME": "sid",
        "SESSION_COOKIE_DOMAIN": "example.test",
        "SESSION_COOKIE_PATH": "/app",
        "SESSION_COOKIE_HTTPONLY": False,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_PARTITIONED": True,
    }
    app = make_app(store, **settings_)
    client = app.test_client()
    where = "https://example.test/app"  # where a browser would send that cookie back
    for response in (client.get("/inc", base_url=where), client.get("/clear", base_url=where)):
        header = session_cookie(response, "sid")
        assert header is not None
        attributes = header.split("; ")[1:]
        assert "Domain=example.test" in attributes
        assert "Path=/app" in attributes
        assert "HttpOnly" not in attributes
        assert "Secure" in attributes
        assert "SameSite=Strict" in attributes
        assert "Partitioned" in attributes
    assert len(store) == 0  # the second request carried the cookie and cleared the record


def test_default_cookie_is_httponly_without_secure_or_partitioned(client: Any) -> None:
    header = session_cookie(client.get("/inc"))
    assert header is not None
    attributes = header.split("; ")[1:]
    assert "HttpOnly" in attributes
    assert "Path=/" in attributes
    assert "Secure" not in attributes
    assert "Partitioned" not in attributes
    assert not any(a.startswith("Domain=") for a in attributes)


def test_cookie_path_and_name_round_trip(store: MemoryStore) -> None:
    app = make_app(store, SESSION_COOKIE_NAME="sid", APPLICATION_ROOT="/")
    client = app.test_client()
    client.get("/inc")
    assert client.get("/inc").text == "2"
    assert client.get_cookie("sid") is not None
    assert client.get_cookie("session") is None


# ---- data types -------------------------------------------------------------------------


TAGGED: dict[str, Any] = {
    "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    "raw": b"\x00\xffbytes",
    "pair": (1, "two", (3.5, None)),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"deep": {"list": [1, (2, 3), {"b": b"x"}]}, " t": "looks like a tag"},
    "one_key_tag_dict": {" t": [1, 2]},
    "plain": ["a", 1, 2.5, True, None],
}


@pytest.mark.parametrize("serializer", ["msgpack", "json", "pickle"])
def test_flask_tagged_types_round_trip(serializer: str, clock: FakeClock) -> None:
    with MemoryStore("1M", None, serializer=serializer, clock=clock) as store:
        app = make_app(store)
        seen: list[dict[str, Any]] = []

        @app.get("/put")
        def put() -> str:
            session.update(TAGGED)
            return "ok"

        @app.get("/get")
        def get() -> str:
            seen.append(dict(session))
            return "ok"

        client = app.test_client()
        client.get("/put")
        client.get("/get")
        assert seen == [TAGGED]
        assert type(seen[0]["pair"][2]) is tuple
        assert type(seen[0]["id"]) is uuid.UUID


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_markup_is_refused_not_turned_into_str(serializer: str) -> None:
    with MemoryStore("1M", None, serializer=serializer) as store:
        app = make_app(store)

        @app.get("/markup")
        def markup() -> str:
            session["html"] = Markup("<b>bold</b>")
            return "ok"

        with pytest.raises(SerializationError, match=r"session\['html'\]: Markup"):
            app.test_client().get("/markup")
        assert len(store) == 0


def test_unserializable_data_raises_at_save(client: Any) -> None:
    app = client.application

    @app.get("/bad")
    def bad() -> str:
        session["s"] = object()
        return "ok"

    with pytest.raises(SerializationError):
        client.get("/bad")


# ---- Vary -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/read", "/inc", "/clear"])
def test_vary_cookie_when_the_session_was_accessed(client: Any, path: str) -> None:
    assert "Cookie" in client.get(path).vary


# ---- secret keys ------------------------------------------------------------------------


def test_secret_key_fallback_keeps_sessions_and_re_signs_the_cookie(
    store: MemoryStore,
) -> None:
    app = make_app(store, SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    client.get("/inc")
    sid = cookie_sid(client)
    app.config.update(SECRET_KEY="rotated", SECRET_KEY_FALLBACKS=[SECRET])
    response = client.get("/read")  # read only, no refresh: re-signed all the same
    assert response.text == "1"
    assert session_cookie(response) is not None
    assert client.get_cookie("session").value == sign(sid, "rotated")
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get("/inc").text == "2"


def test_secret_key_without_fallback_rejects_old_cookies(store: MemoryStore) -> None:
    app = make_app(store)
    client = app.test_client()
    client.get("/inc")
    old = cookie_sid(client)
    app.config["SECRET_KEY"] = "rotated"
    assert client.get("/inc").text == "1"
    assert cookie_sid(client) != old


def test_no_secret_key_reads_an_empty_session_and_refuses_writes(store: MemoryStore) -> None:
    app = make_app(store, SECRET_KEY=None)
    client = app.test_client()
    client.set_cookie("session", sign(new_session_id()))
    assert client.get("/read").text == "None"
    with pytest.raises(RuntimeError, match="secret key"):
        client.get("/inc")
    assert len(store) == 0


# ---- store failures ---------------------------------------------------------------------


class FlakyJson:
    """JSON that refuses to load once ``broken`` is set, as a damaged record would."""

    def __init__(self) -> None:
        self.json = JsonSerializer()
        self.broken = False

    def dumps(self, obj: Any) -> bytes:
        return self.json.dumps(obj)

    def loads(self, data: bytes) -> Any:
        if self.broken:
            raise ValueError("damaged")
        return self.json.loads(data)


def test_record_that_no_longer_deserializes_gives_a_fresh_session(clock: FakeClock) -> None:
    serializer = FlakyJson()
    with MemoryStore("1M", None, serializer=serializer, clock=clock) as store:
        client = make_app(store).test_client()
        client.get("/inc")
        old = cookie_sid(client)
        serializer.broken = True
        response = client.get("/read")
        assert response.status_code == 200
        assert response.text == "None"
        assert old not in store


@pytest.mark.parametrize("record", [{1: "x"}, {b"k": 1}], ids=["int key", "bytes key"])
def test_record_with_keys_flask_cannot_hold_gives_a_fresh_session(
    record: dict[str, Any], client: Any, store: MemoryStore
) -> None:
    sid = new_session_id()
    store.set(sid, record)
    client.set_cookie("session", sign(sid))
    response = client.get("/inc")
    assert response.status_code == 200
    assert response.text == "1"
    assert sid not in store


class DownStore(MemoryStore):
    """A store whose backing service is down for reads."""

    def get(self, sid: str) -> dict[str, Any] | None:
        raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")

    def load(self, sid: str) -> Any:  # the read a request makes
        raise StoreUnavailable("redis at 127.0.0.1:1 refused the connection")


def test_store_unavailable_propagates_as_itself(clock: FakeClock) -> None:
    with DownStore("1M", None, clock=clock) as store:
        client = make_app(store).test_client()
        client.set_cookie("session", sign(new_session_id()))
        with pytest.raises(StoreUnavailable):
            client.get("/read")


def test_store_unavailable_reaches_a_500_handler(clock: FakeClock) -> None:
    with DownStore("1M", None, clock=clock) as store:
        app = make_app(store, PROPAGATE_EXCEPTIONS=False)

        @app.errorhandler(500)
        def down(e: Any) -> tuple[str, int]:
            return type(e.original_exception).__name__, 503

        client = app.test_client()
        client.set_cookie("session", sign(new_session_id()))
        response = client.get("/read")
        assert (response.status_code, response.text) == (503, "StoreUnavailable")


# ---- the extension ----------------------------------------------------------------------


def test_extension_registers_itself_and_its_store(store: MemoryStore) -> None:
    app = Flask(__name__)
    ext = Lembro()
    ext.init_app(app, store)
    assert app.extensions["lembro"] is ext
    assert ext.store is store
    assert isinstance(app.session_interface, LembroSessionInterface)
    assert app.session_interface.store is store


def test_store_given_to_the_constructor_serves_init_app(store: MemoryStore) -> None:
    app = Flask(__name__)
    Lembro(store=store).init_app(app)
    assert isinstance(app.session_interface, LembroSessionInterface)
    assert app.session_interface.store is store


def test_store_built_from_config_picks_lembro_settings() -> None:
    app = Flask(__name__)
    app.config.update(
        LEMBRO_MAX_SIZE="2M",
        LEMBRO_INTERVAL=0,
        LEMBRO_TTL=120,
        LEMBRO_LOW_WATER=0.5,
        LEMBRO_SERIALIZER="json",
    )
    store = Lembro(app).store
    assert isinstance(store, MemoryStore)
    with store:
        assert store.max_size == 2 * 1024 * 1024
        assert store.interval is None
        assert store.ttl == 120
        assert store.low_water == 0.5
        with pytest.raises(SerializationError):
            store.set("a", {1: 2})  # JSON keys are strings


def test_store_built_from_config_defaults() -> None:
    app = Flask(__name__)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=2)
    store = Lembro(app).store
    assert isinstance(store, MemoryStore)
    with store:
        assert store.max_size == 4 * 1024 * 1024
        assert store.interval == 360
        assert store.ttl == 7200
        assert store.low_water == 0.75


def test_not_a_store_is_refused() -> None:
    with pytest.raises(InvalidOption):
        Lembro(Flask(__name__), store=json)  # type: ignore[arg-type]


def test_import_lembro_does_not_import_flask() -> None:
    code = "import sys, lembro; sys.exit('flask' in sys.modules or 'itsdangerous' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_example_app_counts() -> None:
    path = ROOT / "examples" / "flask_app.py"
    example = runpy.run_path(str(path), run_name="flask_app")
    app: Flask = example["app"]
    store = app.extensions["lembro"].store
    with store:
        client = app.test_client()
        assert [client.get("/").text for _ in range(2)] == ["visit 1\n", "visit 2\n"]
        assert len(store) == 1


def test_a_key_that_is_not_a_str_is_refused_at_the_write_and_the_session_kept(
    app: Flask, client: Any, store: MemoryStore
) -> None:
    """A record with such a key would be discarded, whole, on the next read."""

    @app.get("/int-key")
    def int_key() -> str:
        session[1] = "x"  # type: ignore[index]
        return "written"

    assert client.get("/inc").text == "1"
    app.testing = False  # a 500, as in production, rather than the exception re-raised
    response = client.get("/int-key")
    assert response.status_code == 500
    assert client.get("/inc").text == "2"  # the stored session is as it was


def test_the_write_refusing_a_non_str_key_names_it(app: Flask, store: MemoryStore) -> None:
    @app.get("/int-key")
    def int_key() -> str:
        session[1] = "x"  # type: ignore[index]
        return "written"

    with app.test_client() as c, pytest.raises(SerializationError, match="session key 1"):
        c.get("/int-key")
    assert len(store) == 0
