"""Log out everywhere (issue 19), through each framework over HTTP, on both stores:
Flask (with Flask-Login), Starlette, Django (with django.contrib.auth) and Litestar.

Two clients (two cookie jars) sign in as one user; one call ends the other client's
session, and that client's next request gets a fresh, anonymous session. Each test runs
on a MemoryStore and on a RedisStore over a real redis-server.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import flask
import flask_login
import httpx
import litestar
import pytest
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth import login as django_login
from django.contrib.auth import logout as django_logout
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from litestar import Litestar
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import lembro.flask
import lembro.litestar
import lembro.starlette
from lembro import InvalidOption, MemoryStore, RedisStore
from lembro.flask import Lembro
from lembro.litestar import LembroSessionConfig, LembroStore
from tests.integrations.test_django import configure_django

from ..redis_server import RedisServer

configure_django()

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 when its TestClient runs on httpx; the client is the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

import lembro.django  # noqa: E402 - after configure_django(), as Django needs

STORES = ["memory", "redis"]


@pytest.fixture(params=STORES)
def make_store(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Any]]:
    """Builds stores of one kind (Redis: each under a prefix of its own), closed after."""
    made: list[Any] = []

    def make(owner_key: str | None = "user") -> Any:
        if request.param == "memory":
            store: Any = MemoryStore("1M", None, owner_key=owner_key)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            prefix = f"lembro-test:{uuid.uuid4().hex[:12]}:"
            store = RedisStore(server.url, prefix=prefix, owner_key=owner_key)
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()
        store.close()


def sid_of(cookie: str) -> str:
    """The session id a signed cookie value carries (see lembro._cookies)."""
    return cookie.split(".")[0]


# ---- Flask, with Flask-Login ------------------------------------------------------------


class FlaskUser(flask_login.UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def flask_app(store: Any, hold: Callable[[], None] = lambda: None) -> flask.Flask:
    """The app; ``hold`` runs in ``/hold`` between loading the session and writing it."""
    app = flask.Flask(__name__)
    app.secret_key = "lembro-tests-only"
    Lembro(app, store)
    manager = flask_login.LoginManager(app)
    manager.user_loader(FlaskUser)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        lembro.flask.regenerate()
        flask_login.login_user(FlaskUser(name))
        return "in"

    @app.get("/whoami")
    def whoami() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        user = flask_login.current_user
        return f"{user.get_id() if user.is_authenticated else 'anonymous'} {flask.session['n']}"

    @app.get("/hold")
    def held() -> str:
        n = flask.session.get("n", 0)
        hold()
        flask.session["n"] = n + 1
        return "held"

    @app.post("/logout-others")
    def logout_others() -> str:
        return str(lembro.flask.logout_everywhere(flask_login.current_user.get_id()))

    @app.post("/logout-all")
    def logout_all() -> str:
        return str(lembro.flask.logout_everywhere(flask_login.current_user.get_id(), False))

    @app.post("/logout")
    def logout() -> str:
        flask_login.logout_user()
        return "out"

    return app


def flask_cookie(client: Any) -> str | None:
    cookie = client.get_cookie("session")
    return None if cookie is None else str(cookie.value)


@pytest.fixture
def flask_store(make_store: Callable[..., Any]) -> Any:
    return make_store(owner_key=lembro.flask.FLASK_LOGIN_OWNER_KEY)


def test_flask_logout_everywhere_ends_the_other_clients_session(flask_store: Any) -> None:
    app = flask_app(flask_store)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    phone_before = flask_cookie(phone)
    assert phone_before is not None
    assert len(flask_store.sessions_of("alice")) == 2

    assert laptop.post("/logout-others").text == "1"

    assert flask_store.sessions_of("alice") == [sid_of(flask_cookie(laptop) or "")]
    assert flask_store.get(sid_of(phone_before)) is None
    assert phone.get("/whoami").text == "anonymous 1"
    phone_after = flask_cookie(phone)
    assert phone_after is not None
    assert sid_of(phone_after) != sid_of(phone_before)
    assert laptop.get("/whoami").text == "alice 1"


def test_flask_logout_everywhere_without_keep_current_ends_this_session_too(
    flask_store: Any,
) -> None:
    app = flask_app(flask_store)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    response = laptop.post("/logout-all")
    assert response.text == "2"
    assert "session=;" in response.headers["Set-Cookie"]  # the cookie is deleted
    assert flask_store.sessions_of("alice") == []
    assert len(flask_store) == 0
    assert laptop.get("/whoami").text == "anonymous 1"
    assert phone.get("/whoami").text == "anonymous 1"


def test_flask_logout_everywhere_spares_the_current_session_of_someone_else(
    flask_store: Any,
) -> None:
    app = flask_app(flask_store)
    admin, alice = app.test_client(), app.test_client()
    admin.post("/login/admin")
    alice.post("/login/alice")
    with app.test_request_context():  # the admin's request, ending alice's sessions
        assert lembro.flask.logout_everywhere("alice", keep_current=False) == 1
    assert admin.get("/whoami").text == "admin 1"
    assert alice.get("/whoami").text == "anonymous 1"


def test_flask_logout_everywhere_outside_a_request_ends_every_session_of_the_user(
    flask_store: Any,
) -> None:
    app = flask_app(flask_store)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    with app.app_context():  # a CLI command or a job: no current session to keep
        assert lembro.flask.logout_everywhere(42) == 0  # owners compare as strings
        assert lembro.flask.logout_everywhere("alice") == 2
    assert laptop.get("/whoami").text == "anonymous 1"
    assert phone.get("/whoami").text == "anonymous 1"


def test_flask_user_ids_compare_as_strings(flask_store: Any) -> None:
    app = flask_app(flask_store)
    client = app.test_client()
    client.post("/login/42")
    with app.app_context():
        assert lembro.flask.logout_everywhere(42) == 1


def test_flask_login_as_someone_else_moves_the_session_and_logout_leaves_the_index(
    flask_store: Any,
) -> None:
    client = flask_app(flask_store).test_client()
    client.post("/login/alice")
    client.post("/login/bob")
    sid = sid_of(flask_cookie(client) or "")
    assert (flask_store.sessions_of("alice"), flask_store.sessions_of("bob")) == ([], [sid])
    client.post("/logout")
    assert flask_store.sessions_of("bob") == []


def test_flask_owner_key_defaults_to_flask_logins_user_id() -> None:
    app = flask.Flask(__name__)
    app.secret_key = "lembro-tests-only"
    Lembro(app)
    store = app.session_interface.store  # type: ignore[attr-defined]
    try:
        assert store.owner_key == "_user_id" == app.config["LEMBRO_OWNER_KEY"]
    finally:
        store.close()


def test_flask_owner_key_from_config_and_none_turns_the_index_off() -> None:
    for setting in ("account", None):
        app = flask.Flask(__name__)
        app.secret_key = "lembro-tests-only"
        app.config["LEMBRO_OWNER_KEY"] = setting
        Lembro(app)
        store = app.session_interface.store  # type: ignore[attr-defined]
        try:
            assert store.owner_key == setting
            with app.test_request_context():
                if setting is None:
                    with pytest.raises(InvalidOption):
                        lembro.flask.logout_everywhere("alice")
                else:
                    assert lembro.flask.logout_everywhere("alice") == 0
        finally:
            store.close()


def test_flask_a_bad_owner_key_setting_is_refused_at_init() -> None:
    for bad in (42, "", True):
        app = flask.Flask(__name__)
        app.config["LEMBRO_OWNER_KEY"] = bad
        with pytest.raises(InvalidOption, match="owner_key"):
            Lembro(app)


def test_flask_store_passed_in_keeps_its_own_owner_key(make_store: Callable[..., Any]) -> None:
    store = make_store(owner_key="account")
    app = flask.Flask(__name__)
    app.config["LEMBRO_OWNER_KEY"] = "_user_id"
    Lembro(app, store)
    assert app.session_interface.store.owner_key == "account"  # type: ignore[attr-defined]


def test_flask_logout_everywhere_refuses_a_bad_user_id(flask_store: Any) -> None:
    app = flask_app(flask_store)
    with app.test_request_context():
        for bad in (None, True, 4.2, b"alice"):
            with pytest.raises(InvalidOption):
                lembro.flask.logout_everywhere(bad)  # type: ignore[arg-type]


def test_flask_logout_everywhere_needs_lembro_installed() -> None:
    app = flask.Flask(__name__)
    app.secret_key = "lembro-tests-only"
    with app.test_request_context(), pytest.raises(RuntimeError, match="Lembro"):
        lembro.flask.logout_everywhere("alice")


def test_flask_concurrent_requests_of_the_user_never_bring_an_ended_session_back(
    flask_store: Any,
) -> None:
    devices_count = 6
    loaded = threading.Barrier(devices_count + 1)  # every device mid-request, session loaded
    ended = threading.Event()

    def hold() -> None:
        loaded.wait()
        ended.wait()

    app = flask_app(flask_store, hold)
    app.config["SESSION_REFRESH_EACH_REQUEST"] = True
    keeper = app.test_client()
    keeper.post("/login/alice")
    devices = [app.test_client() for _ in range(devices_count)]
    for device in devices:
        device.post("/login/alice")
    old_sids = [sid_of(flask_cookie(device) or "") for device in devices]
    stop = threading.Event()
    errors: list[BaseException] = []

    def browse(device: Any) -> None:
        try:
            device.get("/whoami")
            device.get("/hold")  # loaded before the call, written back after it
            while not stop.is_set():
                device.get("/whoami")  # a write of the session on every request
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=browse, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    loaded.wait()
    assert keeper.post("/logout-others").text == str(devices_count)
    ended.set()
    for device in devices:  # each device makes requests after the call too
        device.get("/whoami")
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert flask_store.sessions_of("alice") == [sid_of(flask_cookie(keeper) or "")]
    for sid in old_sids:
        assert flask_store.get(sid) is None
    for device in devices:
        assert device.get("/whoami").text.startswith("anonymous ")


# ---- Starlette / FastAPI ----------------------------------------------------------------


#: Awaited in ``/hold`` between loading the session and writing it (set by a test), in
#: the Starlette and the Litestar app.
async_hold: list[Callable[[], Coroutine[Any, Any, None]]] = []


def starlette_app(store: Any) -> Starlette:
    async def held(request: Request) -> PlainTextResponse:
        n = request.session.get("n", 0)
        for hold in async_hold:
            await hold()
        request.session["n"] = n + 1
        return PlainTextResponse("held")

    async def login(request: Request) -> PlainTextResponse:
        lembro.starlette.regenerate(request)
        request.session["user"] = request.path_params["name"]
        return PlainTextResponse("in")

    async def whoami(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        user = request.session.get("user") or "anonymous"
        return PlainTextResponse(f"{user} {request.session['n']}")

    async def logout_others(request: Request) -> PlainTextResponse:
        ended = await lembro.starlette.logout_everywhere(request, request.session["user"])
        return PlainTextResponse(str(ended))

    async def logout_all(request: Request) -> PlainTextResponse:
        user = request.session["user"]
        ended = await lembro.starlette.logout_everywhere(request, user, keep_current=False)
        return PlainTextResponse(str(ended))

    async def end(request: Request) -> PlainTextResponse:
        owner = request.path_params["name"]
        ended = await lembro.starlette.logout_everywhere(request, owner, keep_current=False)
        return PlainTextResponse(str(ended))

    async def logout(request: Request) -> PlainTextResponse:
        request.session.pop("user", None)
        return PlainTextResponse("out")

    app = Starlette(
        routes=[
            Route("/login/{name}", login, methods=["POST"]),
            Route("/whoami", whoami),
            Route("/logout-others", logout_others, methods=["POST"]),
            Route("/logout-all", logout_all, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/end/{name}", end, methods=["POST"]),
            Route("/hold", held),
        ]
    )
    app.add_middleware(lembro.starlette.SessionMiddleware, secret_key="t", store=store)
    return app


def asgi_client(app: Starlette) -> httpx.AsyncClient:
    """A client with a cookie jar of its own; several share one event loop (and so one
    async Redis connection pool)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def run_asgi(store: Any, scenario: Callable[[Starlette], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` on one event loop against the app on ``store`` (a RedisStore's
    async twin, closed on that loop afterwards)."""
    face = store.as_async() if isinstance(store, RedisStore) else store

    async def main() -> None:
        try:
            await scenario(starlette_app(face))
        finally:
            if face is not store:
                await face.close()

    asyncio.run(main())


def test_starlette_logout_everywhere_ends_the_other_clients_session(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Starlette) -> None:
        async with asgi_client(app) as laptop, asgi_client(app) as phone:
            await laptop.post("/login/alice")
            await phone.post("/login/alice")
            phone_before = phone.cookies["session"]
            assert len(store.sessions_of("alice")) == 2

            assert (await laptop.post("/logout-others")).text == "1"

            assert store.sessions_of("alice") == [sid_of(laptop.cookies["session"])]
            assert store.get(sid_of(phone_before)) is None
            assert (await phone.get("/whoami")).text == "anonymous 1"
            assert sid_of(phone.cookies["session"]) != sid_of(phone_before)
            assert (await laptop.get("/whoami")).text == "alice 1"

    run_asgi(store, scenario)


def test_starlette_logout_everywhere_without_keep_current_ends_this_session_too(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Starlette) -> None:
        async with asgi_client(app) as laptop, asgi_client(app) as phone:
            await laptop.post("/login/alice")
            await phone.post("/login/alice")
            response = await laptop.post("/logout-all")
            assert response.text == "2"
            assert "session=null" in response.headers["set-cookie"]
            assert "session" not in laptop.cookies  # expired: the client dropped it
            assert len(store) == 0
            assert (await laptop.get("/whoami")).text == "anonymous 1"
            assert (await phone.get("/whoami")).text == "anonymous 1"

    run_asgi(store, scenario)


def test_starlette_logout_everywhere_spares_the_current_session_of_someone_else(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Starlette) -> None:
        async with asgi_client(app) as admin, asgi_client(app) as alice:
            await admin.post("/login/admin")
            await alice.post("/login/alice")
            assert (await admin.post("/end/alice")).text == "1"
            assert (await admin.get("/whoami")).text == "admin 1"
            assert (await alice.get("/whoami")).text == "anonymous 1"

    run_asgi(store, scenario)


def test_starlette_login_as_someone_else_moves_the_session_and_logout_leaves_the_index(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Starlette) -> None:
        async with asgi_client(app) as client:
            await client.post("/login/alice")
            await client.post("/login/bob")
            await client.get("/whoami")
            sid = sid_of(client.cookies["session"])
            assert (store.sessions_of("alice"), store.sessions_of("bob")) == ([], [sid])
            await client.post("/logout")
            assert store.sessions_of("bob") == []
            assert sid in store  # the session lives on, anonymous

    run_asgi(store, scenario)


def test_starlette_logout_everywhere_on_a_store_without_owner_key_says_so(
    make_store: Callable[..., Any],
) -> None:
    async def scenario(app: Starlette) -> None:
        async with asgi_client(app) as client:
            await client.post("/login/alice")
            with pytest.raises(InvalidOption, match="owner_key"):
                await client.post("/logout-others")

    run_asgi(make_store(owner_key=None), scenario)


def test_starlette_logout_everywhere_needs_the_middleware() -> None:
    async def view(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(await lembro.starlette.logout_everywhere(request, "x")))

    app = Starlette(routes=[Route("/", view)])
    with TestClient(app) as client, pytest.raises(RuntimeError, match="SessionMiddleware"):
        client.get("/")


def test_starlette_concurrent_requests_of_the_user_never_bring_an_ended_session_back(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()
    devices_count = 4

    async def scenario(app: Starlette) -> None:
        loaded = 0
        all_loaded, ended = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            nonlocal loaded
            loaded += 1
            if loaded == devices_count:
                all_loaded.set()
            await ended.wait()

        clients = [asgi_client(app) for _ in range(devices_count + 1)]
        keeper, devices = clients[0], clients[1:]
        try:
            for client in clients:
                await client.post("/login/alice")
            old_sids = [sid_of(device.cookies["session"]) for device in devices]
            async_hold.append(hold)
            held = [asyncio.ensure_future(device.get("/hold")) for device in devices]
            await all_loaded.wait()  # every device mid-request, its session loaded
            assert (await keeper.post("/logout-others")).text == str(devices_count)
            ended.set()
            await asyncio.gather(*held)
            async_hold.clear()
            assert store.sessions_of("alice") == [sid_of(keeper.cookies["session"])]
            for sid in old_sids:
                assert store.get(sid) is None
            for device in devices:
                assert (await device.get("/whoami")).text == "anonymous 1"
        finally:
            async_hold.clear()
            for client in clients:
                await client.aclose()

    run_asgi(store, scenario)


# ---- Django ------------------------------------------------------------------------------


def django_login_view(request: HttpRequest, name: str) -> HttpResponse:
    user, _ = get_user_model().objects.get_or_create(username=name)
    django_login(request, user)
    return HttpResponse("in")


def django_whoami(request: HttpRequest) -> HttpResponse:
    # The user first: Django flushes a session whose password hash is stale on this read.
    user = request.user.get_username() if request.user.is_authenticated else "anonymous"
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse(f"{user} {request.session['n']}")


def django_logout_others(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(lembro.django.logout_everywhere(request.user, keep=request.session)))


def django_logout_all(request: HttpRequest) -> HttpResponse:
    ended = lembro.django.logout_everywhere(request.user.pk)
    django_logout(request)
    return HttpResponse(str(ended))


def django_logout_view(request: HttpRequest) -> HttpResponse:
    django_logout(request)
    return HttpResponse("out")


def django_change_password(request: HttpRequest) -> HttpResponse:
    user = request.user
    user.set_password(uuid.uuid4().hex)  # type: ignore[union-attr]
    user.save()  # type: ignore[union-attr]
    update_session_auth_hash(request, user)  # type: ignore[arg-type]
    return HttpResponse("changed")


#: Runs in ``/hold`` between loading the session and writing it (set by a test).
django_hold: list[Callable[[], None]] = []


def django_held(request: HttpRequest) -> HttpResponse:
    n = request.session.get("n", 0)
    for hold in django_hold:
        hold()
    request.session["n"] = n + 1
    return HttpResponse("held")


urlpatterns = [
    path("hold", django_held),
    path("login/<str:name>", django_login_view),
    path("whoami", django_whoami),
    path("logout-others", django_logout_others),
    path("logout-all", django_logout_all),
    path("logout", django_logout_view),
    path("change-password", django_change_password),
]


@pytest.fixture(scope="module")
def auth_db() -> Iterator[None]:
    """A test database with auth's tables, as Django's test runner makes one."""
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield
    connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture
def django_store(make_store: Callable[..., Any], auth_db: None) -> Iterator[Any]:
    store = make_store(owner_key="_auth_user_id")
    with override_settings(
        LEMBRO={"STORE": store},
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
    ):
        yield store
    # The in-memory test database may outlive this module's: leave no user behind.
    get_user_model().objects.all().delete()


def django_sid(client: Client) -> str:
    return str(client.cookies["sessionid"].value)


def pk_of(name: str) -> str:
    return str(get_user_model().objects.get(username=name).pk)


def test_django_logout_everywhere_ends_the_other_clients_session(django_store: Any) -> None:
    laptop, phone = Client(), Client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    phone_before = django_sid(phone)
    assert len(django_store.sessions_of(pk_of("alice"))) == 2

    assert laptop.post("/logout-others").content == b"1"

    assert django_store.sessions_of(pk_of("alice")) == [django_sid(laptop)]
    assert django_store.get(phone_before) is None
    assert phone.get("/whoami").content == b"anonymous 1"
    assert django_sid(phone) != phone_before
    assert laptop.get("/whoami").content == b"alice 1"


def test_django_logout_everywhere_with_no_keep_ends_them_all(django_store: Any) -> None:
    laptop, phone = Client(), Client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    assert laptop.post("/logout-all").content == b"2"
    assert django_store.sessions_of(pk_of("alice")) == []
    assert laptop.get("/whoami").content == b"anonymous 1"
    assert phone.get("/whoami").content == b"anonymous 1"


def test_django_login_as_someone_else_moves_the_session_and_logout_leaves_the_index(
    django_store: Any,
) -> None:
    client = Client()
    client.post("/login/alice")
    client.post("/login/bob")  # login() flushes: a new key, for bob only
    assert django_store.sessions_of(pk_of("alice")) == []
    assert django_store.sessions_of(pk_of("bob")) == [django_sid(client)]
    client.post("/logout")
    assert django_store.sessions_of(pk_of("bob")) == []


def test_django_logout_everywhere_takes_a_user_or_its_pk(django_store: Any) -> None:
    Client().post("/login/alice")
    Client().post("/login/alice")
    user = get_user_model().objects.get(username="alice")
    assert lembro.django.logout_everywhere(user, keep=None) == 2
    Client().post("/login/alice")
    assert lembro.django.logout_everywhere(user.pk) == 1
    for bad in (None, 4.2, object()):
        with pytest.raises(InvalidOption):
            lembro.django.logout_everywhere(bad)
    with pytest.raises(InvalidOption, match="keep"):
        lembro.django.logout_everywhere(user, keep=42)  # type: ignore[arg-type]


def test_django_password_change_keeps_the_other_sessions_unless_asked(
    django_store: Any,
) -> None:
    laptop, phone = Client(), Client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    laptop.post("/change-password")
    # Django's own check still ends the phone's login on its next request; the record
    # itself stays until then.
    assert len(django_store.sessions_of(pk_of("alice"))) == 2
    assert laptop.get("/whoami").content == b"alice 1"
    assert phone.get("/whoami").content == b"anonymous 1"
    assert len(django_store.sessions_of(pk_of("alice"))) == 1


def test_django_password_change_ends_the_other_sessions_with_the_option(
    django_store: Any,
) -> None:
    laptop, phone, tablet = Client(), Client(), Client()
    for client in (laptop, phone, tablet):
        client.post("/login/alice")
    phone_before = django_sid(phone)
    with override_settings(LEMBRO={"STORE": django_store, "LOGOUT_ON_PASSWORD_CHANGE": True}):
        laptop.post("/change-password")
        assert django_store.sessions_of(pk_of("alice")) == [django_sid(laptop)]
        assert django_store.get(phone_before) is None
        assert laptop.get("/whoami").content == b"alice 1"
        assert phone.get("/whoami").content == b"anonymous 1"
        # A login, and a login again on the same device, is not a password change.
        phone.post("/login/alice")
        phone.post("/login/alice")
        assert len(django_store.sessions_of(pk_of("alice"))) == 2


def test_django_settings_check_the_owner_options(make_store: Callable[..., Any]) -> None:
    built = lembro.django.build_store({"OWNER_KEY": "account"})
    assert built.owner_key == "account"  # type: ignore[attr-defined]
    built.close()
    default = lembro.django.build_store({})
    assert default.owner_key == "_auth_user_id"  # type: ignore[attr-defined]
    default.close()
    store = make_store(owner_key=None)
    bad = [
        {"OWNER_KEY": ""},
        {"OWNER_KEY": 42},
        {"LOGOUT_ON_PASSWORD_CHANGE": "yes"},
        {"OWNER_KEY": None, "LOGOUT_ON_PASSWORD_CHANGE": True},
        {"OWNER_KEY": "account", "LOGOUT_ON_PASSWORD_CHANGE": True},
        {"STORE": store, "LOGOUT_ON_PASSWORD_CHANGE": True},
        {"STORE": make_store(owner_key="account"), "LOGOUT_ON_PASSWORD_CHANGE": True},
        {"STORE": store, "OWNER_KEY": "_auth_user_id"},
    ]
    for options in bad:
        with pytest.raises(ImproperlyConfigured):
            lembro.django.build_store(options)
        with override_settings(LEMBRO=options):
            assert [m.id for m in lembro.django.check_settings()] == ["lembro.E001"]


# ---- Litestar ----------------------------------------------------------------------------


def litestar_app(store: LembroStore) -> Litestar:
    @litestar.post("/login/{name:str}")
    async def login(request: litestar.Request[Any, Any, Any]) -> str:
        lembro.litestar.regenerate(request)
        request.session["user"] = request.path_params["name"]
        return "in"

    @litestar.get("/whoami")
    async def whoami(request: litestar.Request[Any, Any, Any]) -> str:
        request.session["n"] = request.session.get("n", 0) + 1
        return f"{request.session.get('user') or 'anonymous'} {request.session['n']}"

    @litestar.post("/logout-others")
    async def logout_others(request: litestar.Request[Any, Any, Any]) -> str:
        owner = request.session["user"]
        return str(await lembro.litestar.logout_everywhere(request, owner))

    @litestar.post("/logout-all")
    async def logout_all(request: litestar.Request[Any, Any, Any]) -> str:
        owner = request.session["user"]
        return str(await lembro.litestar.logout_everywhere(request, owner, keep_current=False))

    @litestar.get("/hold")
    async def held(request: litestar.Request[Any, Any, Any]) -> str:
        n = request.session.get("n", 0)
        for hold in async_hold:
            await hold()
        request.session["n"] = n + 1
        return "held"

    @litestar.post("/logout")
    async def logout(request: litestar.Request[Any, Any, Any]) -> str:
        request.session.pop("user", None)
        return "out"

    return Litestar(
        route_handlers=[login, whoami, held, logout_others, logout_all, logout],
        middleware=[LembroSessionConfig().middleware],
        stores={"sessions": store},
    )


def run_litestar(store: Any, scenario: Callable[[Litestar], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` on one event loop against the app on ``store``; the LembroStore's
    async face (a RedisStore's async twin) is closed on that loop afterwards."""

    async def main() -> None:
        sessions = LembroStore(store)
        try:
            await scenario(litestar_app(sessions))
        finally:
            if isinstance(store, RedisStore):
                await sessions.__aexit__(None, None, None)

    asyncio.run(main())


def litestar_client(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def test_litestar_logout_everywhere_ends_the_other_clients_session(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Litestar) -> None:
        async with litestar_client(app) as laptop, litestar_client(app) as phone:
            await laptop.post("/login/alice")
            await phone.post("/login/alice")
            phone_before = phone.cookies["session"]
            assert len(store.sessions_of("alice")) == 2

            assert (await laptop.post("/logout-others")).text == "1"

            assert len(store.sessions_of("alice")) == 1
            assert (await phone.get("/whoami")).text == "anonymous 1"
            assert phone.cookies["session"] != phone_before
            assert (await laptop.get("/whoami")).text == "alice 1"
            assert len(store.sessions_of("alice")) == 1

    run_litestar(store, scenario)


def test_litestar_logout_everywhere_without_keep_current_ends_this_session_too(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Litestar) -> None:
        async with litestar_client(app) as laptop, litestar_client(app) as phone:
            await laptop.post("/login/alice")
            await phone.post("/login/alice")
            response = await laptop.post("/logout-all")
            assert response.text == "2"
            assert "session=null" in response.headers["set-cookie"]
            assert len(store) == 0
            assert (await laptop.get("/whoami")).text == "anonymous 1"
            assert (await phone.get("/whoami")).text == "anonymous 1"

    run_litestar(store, scenario)


def test_litestar_login_as_someone_else_moves_the_session_and_logout_leaves_the_index(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()

    async def scenario(app: Litestar) -> None:
        async with litestar_client(app) as client:
            await client.post("/login/alice")
            await client.get("/whoami")
            assert len(store.sessions_of("alice")) == 1
            await client.post("/login/bob")
            assert (len(store.sessions_of("alice")), len(store.sessions_of("bob"))) == (0, 1)
            await client.post("/logout")
            assert store.sessions_of("bob") == []
            assert (await client.get("/whoami")).text == "anonymous 2"  # the session lives on

    run_litestar(store, scenario)


def test_litestar_store_refuses_an_owner_key_that_names_a_record_field() -> None:
    for field in ("s", "b", "x"):
        with MemoryStore("1M", None, owner_key=field) as store, pytest.raises(InvalidOption):
            LembroStore(store)


def test_django_a_login_after_a_password_change_elsewhere_is_not_a_password_change(
    django_store: Any,
) -> None:
    tablet, phone = Client(), Client()
    tablet.post("/login/alice")
    phone.post("/login/alice")
    tablet.post("/change-password")  # the option is off: the phone's session stays, stale
    with override_settings(LEMBRO={"STORE": django_store, "LOGOUT_ON_PASSWORD_CHANGE": True}):
        phone.post("/login/alice")  # a stale hash: login() flushes, then writes the new one
        assert len(django_store.sessions_of(pk_of("alice"))) == 2
        assert tablet.get("/whoami").content == b"alice 1"


def test_django_a_password_set_outside_the_users_session_needs_the_call(
    django_store: Any,
) -> None:
    laptop, phone = Client(), Client()
    laptop.post("/login/alice")
    phone.post("/login/alice")
    with override_settings(LEMBRO={"STORE": django_store, "LOGOUT_ON_PASSWORD_CHANGE": True}):
        user = get_user_model().objects.get(username="alice")
        user.set_password(uuid.uuid4().hex)  # a reset link, the admin, the shell
        user.save()
        assert len(django_store.sessions_of(pk_of("alice"))) == 2
        assert lembro.django.logout_everywhere(user) == 2
        assert laptop.get("/whoami").content == b"anonymous 1"


def test_django_concurrent_requests_of_the_user_never_bring_an_ended_session_back(
    django_store: Any,
) -> None:
    devices_count = 4
    loaded = threading.Barrier(devices_count + 1)  # every device mid-request, session loaded
    ended = threading.Event()

    def hold() -> None:
        loaded.wait()
        ended.wait()

    keeper = Client()
    keeper.post("/login/alice")
    devices = [Client() for _ in range(devices_count)]
    for device in devices:
        device.post("/login/alice")
    old_keys = [django_sid(device) for device in devices]
    statuses: list[int] = []
    errors: list[BaseException] = []

    def browse(device: Client) -> None:
        try:
            statuses.append(device.get("/hold").status_code)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    django_hold.append(hold)
    try:
        threads = [threading.Thread(target=browse, args=(device,)) for device in devices]
        for thread in threads:
            thread.start()
        loaded.wait()
        assert keeper.post("/logout-others").content == str(devices_count).encode()
        ended.set()
        for thread in threads:
            thread.join()
    finally:
        django_hold.clear()
    assert errors == []
    # Each write-back finds its record gone: Django answers 400 (SessionInterrupted).
    assert statuses == [400] * devices_count
    assert django_store.sessions_of(pk_of("alice")) == [django_sid(keeper)]
    for key in old_keys:
        assert django_store.get(key) is None
    for device in devices:
        assert device.get("/whoami").content == b"anonymous 1"


def test_litestar_concurrent_requests_of_the_user_never_bring_an_ended_session_back(
    make_store: Callable[..., Any],
) -> None:
    store = make_store()
    devices_count = 4

    async def scenario(app: Litestar) -> None:
        loaded = 0
        all_loaded, ended = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            nonlocal loaded
            loaded += 1
            if loaded == devices_count:
                all_loaded.set()
            await ended.wait()

        clients = [litestar_client(app) for _ in range(devices_count + 1)]
        keeper, devices = clients[0], clients[1:]
        try:
            for client in clients:
                await client.post("/login/alice")
            async_hold.append(hold)
            held = [asyncio.ensure_future(device.get("/hold")) for device in devices]
            await all_loaded.wait()  # every device mid-request, its session loaded
            assert (await keeper.post("/logout-others")).text == str(devices_count)
            ended.set()
            await asyncio.gather(*held)
            async_hold.clear()
            assert len(store.sessions_of("alice")) == 1
            for device in devices:
                assert (await device.get("/whoami")).text == "anonymous 1"
            assert (await keeper.get("/whoami")).text == "alice 1"
        finally:
            async_hold.clear()
            for client in clients:
                await client.aclose()

    run_litestar(store, scenario)
