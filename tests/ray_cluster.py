"""Network namespaces, a loopback bridge into them and a real local Ray cluster, for tests.

Ray binds the machine's external address even when told 127.0.0.1, and tests must keep their
traffic on loopback; inside a fresh network namespace the only address is 127.0.0.1, so Ray, the
server and their drivers run there. The test process stays in the root namespace and reaches
the server through `LoopbackBridge`, a TCP forwarder (so httpx and Chromium need no namespace).

Never `ray stop`: it kills every Ray process of the machine (the pid namespace is shared), other
people's clusters included. A node here is the process group of the `ray start` that made it
(raylet, agents, gcs_server) plus those processes' descendants (the workers, which Ray puts in
groups of their own), and is stopped by signalling exactly those processes."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.servers import REPO, wait_http

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
RAY = Path(sys.executable).with_name("ray")

# A killed node is declared dead by the GCS health check after `failure_threshold` failed checks
# `period` apart: Ray's defaults (3 s x 5) take about 15 s, these about 5 s at most (often under
# 1 s, when the GCS sees the raylet's connection drop). Not tighter: a raylet starved of CPU on a
# busy 2-core machine must not be declared dead while it lives.
HEALTH_CHECK_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}
# One torch/BLAS thread per worker process, and no usage reporting.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


# ---------------------------------------------------------------- namespaces

def _ns_inode(ns: str) -> int:
    return os.stat(NETNS_DIR / ns).st_ino


def pids_in_netns(ns: str) -> list[int]:
    """Every live process (this one excluded) whose network namespace is `ns`."""
    inode, found = _ns_inode(ns), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == inode and not _is_zombie(int(entry.name)):
                found.append(int(entry.name))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(alive, timeout: float) -> list[int]:
    """Poll `alive()` until it is empty or `timeout` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    left = alive()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive()
    return left


def stop_netns_processes(ns: str, grace: float = 3.0) -> None:
    """SIGTERM everything in `ns`, SIGKILL what is still there after `grace` seconds."""
    _signal_all(pids_in_netns(ns), signal.SIGTERM)
    left = _wait_gone(lambda: pids_in_netns(ns), grace)
    _signal_all(left, signal.SIGKILL)
    _wait_gone(lambda: pids_in_netns(ns), 5)


@contextmanager
def netns(name_prefix: str = "sdray") -> Iterator[str]:
    """A fresh network namespace with `lo` up; yields its name. On exit every process still in
    it is stopped and the namespace deleted. Skips the test where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) is not installed")
    name = f"{name_prefix}{os.getpid()}{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` failed: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        stop_netns_processes(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_netns(ns: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start `argv` inside `ns` (`ip netns exec` execs it, so the Popen's pid is the command's)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *map(str, argv)], **popen_kwargs)


def run_in_netns(ns: str, argv: list[str], timeout: float = 60, **run_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` of `argv` inside `ns`, text output captured unless told otherwise."""
    run_kwargs.setdefault("capture_output", True)
    run_kwargs.setdefault("text", True)
    return subprocess.run(["ip", "netns", "exec", ns, *map(str, argv)], timeout=timeout, **run_kwargs)


def netns_socket(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in `ns`, made from this (root namespace) process.

    setns() switches only the calling thread, so a short-lived thread enters `ns` and creates the
    socket there; a socket keeps its namespace for life and may then be used from any thread."""
    result: dict = {}

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["socket"] = socket.socket(family, type)
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=make, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


def free_port_in(ns: str) -> int:
    """A TCP port free on 127.0.0.1 inside `ns` (at the time of asking)."""
    with netns_socket(ns) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- bridge

class LoopbackBridge:
    """Listens on 127.0.0.1:<free port> in the root namespace and forwards each connection to
    127.0.0.1:`port` inside `ns`, byte for byte in both directions (keep-alive, streaming and
    websockets pass through; a half-close is passed on). A connection that cannot reach the inner
    port is closed at once, which clients see as a reset and retry, as for a server not yet up.

    Use as a context manager; `.port` and `.url` name the root-namespace end."""

    def __init__(self, ns: str, port: int):
        self.ns, self.target_port = ns, port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closing = False

    def __enter__(self) -> "LoopbackBridge":
        self._listener.listen(64)
        self._spawn(self._accept_loop, "bridge-accept")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            sockets = [self._listener, *self._open]
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes accept() and recv() in the other threads
        for t in list(self._threads):
            t.join(5)
        for s in sockets:
            s.close()

    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._closing:
                return False
            self._open.update(socks)
            return True

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._spawn(self._connect, "bridge-conn", client)

    def _connect(self, client: socket.socket) -> None:
        inner = netns_socket(self.ns)
        try:
            inner.connect(("127.0.0.1", self.target_port))
        except OSError:
            inner.close()
            client.close()
            return
        for s in (client, inner):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._track(client, inner):
            client.close()
            inner.close()
            return
        other_way = threading.Thread(target=self._copy, args=(inner, client), name="bridge-copy", daemon=True)
        other_way.start()
        self._copy(client, inner)
        other_way.join()
        with self._lock:
            self._open.difference_update((client, inner))
        client.close()
        inner.close()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        """One direction, in its own thread so that a slow reader on one side never stalls the
        other: copy until `src` ends, then pass the half-close on; a failure ends both ways."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # a reset, or close() shutting the bridge down
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------- server

@dataclass
class NetnsServer:
    """A launch.py server running inside `ns`: `url` reaches it from the root namespace (through
    `bridge`), `url_in_ns` from inside `ns` (for drivers and clients run there)."""

    ns: str
    proc: subprocess.Popen
    port_in_ns: int
    bridge: LoopbackBridge

    @property
    def url(self) -> str:
        return self.bridge.url

    @property
    def url_in_ns(self) -> str:
        return f"http://127.0.0.1:{self.port_in_ns}"


@contextmanager
def launched_in_netns(data: Path, ns: str, *flags: str, env_extra: dict | None = None, ready_path: str = "/",
                      timeout: float = 120) -> Iterator[NetnsServer]:
    """`tests.servers.launched`, but the server runs inside `ns`: yields a `NetnsServer` once
    `ready_path` answers 200 through the bridge; stops the server's process group afterwards.
    Its output goes to data/server.log."""
    port = free_port_in(ns)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "COMMANDLINE_ARGS": "", **WORKER_ENV, **(env_extra or {})}
    log = open(data / "server.log", "a")
    proc = in_netns(ns, [sys.executable, REPO / "launch.py", "--skip-install", "--no-download-sd-model", "--data-dir", data,
                         "--port", port, *flags], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with LoopbackBridge(ns, port) as bridge:
            wait_http(bridge.url + ready_path, proc, timeout=timeout)
            yield NetnsServer(ns, proc, port, bridge)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


# ---------------------------------------------------------------- Ray

@dataclass(frozen=True)
class RayNode:
    """One `ray start` of a `RayCluster`: `pgid` is the process group of all its processes
    (raylet, agents, its workers), `node_id` Ray's hex id of it (as `ray.nodes()` and
    `ray.get_runtime_context().get_node_id()` give it)."""

    index: int
    pgid: int
    node_id: str
    head: bool
    resources: dict = field(default_factory=dict)


# Waits for the GCS to list `want` alive nodes; prints the alive ones as JSON. The GCS client
# answers in under a second, where a full ray.init driver takes several.
_ALIVE_NODES = """
import json, sys, time
from ray._raylet import GcsClient
address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
client = GcsClient(address=address)
while True:
    alive = {k.hex(): v.node_manager_address for k, v in client.get_all_node_info().items() if v.state == 0}
    if len(alive) == want or time.monotonic() > deadline:
        print(json.dumps(alive))
        sys.exit(0 if len(alive) == want else 3)
    time.sleep(0.2)
"""


class RayCluster:
    """A real Ray cluster inside namespace `ns`: a head and `nodes - 1` more nodes, each with
    `cpus_per_node` CPUs (plus `resources`, a dict given to every node started without its own).
    Entering starts it and waits until every node is alive; `.address` is "127.0.0.1:<port>"
    for `ray.init(address=...)` run inside `ns`. Exiting stops every process of every node
    (SIGTERM, SIGKILL after 3 s) and removes the temp dir (unless `tmp_dir` was given); drivers
    and servers started beside it are the caller's (or `netns`'s exit) to stop."""

    def __init__(self, ns: str, nodes: int = 2, cpus_per_node: int = 1, resources: dict | None = None,
                 tmp_dir: str | None = None, env_extra: dict | None = None, fast_health_check: bool = True,
                 start_timeout: float = 60):
        self.ns, self.node_count, self.cpus_per_node = ns, nodes, cpus_per_node
        self.resources = resources or {}
        self._own_tmp = tmp_dir is None
        self.tmp_dir = tmp_dir or tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Unix socket paths are limited to 107 bytes
        self.env = {**os.environ, **WORKER_ENV, **(HEALTH_CHECK_ENV if fast_health_check else {}), **(env_extra or {})}
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.nodes: list[RayNode] = []  # the live ones, head first
        self._started = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "RayCluster":
        try:
            self.port = free_port_in(self.ns)
            self._start_node(head=True, resources=self.resources)
            for _ in range(self.node_count - 1):
                self._start_node(head=False, resources=self.resources)
            self.wait_alive(len(self.nodes))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_node(self, resources: dict | None = None, cpus: int | None = None, wait: bool = True) -> RayNode:
        """Start one more node (`resources` defaults to the cluster's); with `wait`, returns once
        the GCS lists it alive."""
        node = self._start_node(head=False, resources=self.resources if resources is None else resources, cpus=cpus)
        if wait:
            self.wait_alive(len(self.nodes))
        return node

    def kill_node(self, node: RayNode, wait: bool = False) -> None:
        """SIGKILL every process of a non-head node at once, as a machine that dies; with `wait`,
        returns once the GCS has marked it dead (at most about 5 s with HEALTH_CHECK_ENV)."""
        if node.head:
            raise ValueError("kill_node is for non-head nodes; the head is stopped by leaving the cluster")
        pids = self.node_pids(node)  # gathered first: the raylet's workers are reparented once it dies
        _signal_all(pids, signal.SIGKILL)
        self.nodes.remove(node)
        _wait_gone(lambda: _alive_of(pids), 5)
        if wait:
            self.wait_alive(len(self.nodes))

    def alive_nodes(self, want: int | None = None, timeout: float = 0) -> dict[str, str]:
        """node_id -> address of the nodes the GCS lists alive; with `want`, polls up to `timeout`
        seconds until there are that many."""
        out = run_in_netns(self.ns, [sys.executable, "-c", _ALIVE_NODES, self.address, -1 if want is None else want, timeout],
                           timeout=timeout + 30, env=self.env)
        if out.returncode not in (0, 3):
            raise RuntimeError(f"asking the GCS for nodes failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_alive(self, count: int, timeout: float = 30) -> dict[str, str]:
        """Wait until exactly `count` nodes are alive; returns them (node_id -> address)."""
        alive = self.alive_nodes(count, timeout)
        if len(alive) != count:
            raise TimeoutError(f"{len(alive)} Ray nodes alive after {timeout}s, expected {count}: {alive}")
        return alive

    def close(self) -> None:
        pids = [pid for node in reversed(self.nodes) for pid in self.node_pids(node)]  # other nodes first, the head last
        _signal_all(pids, signal.SIGTERM)
        _signal_all(_wait_gone(lambda: _alive_of(pids), 3), signal.SIGKILL)
        _wait_gone(lambda: _alive_of(pids), 5)
        self.nodes = []
        if self._own_tmp:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def node_pids(self, node: RayNode) -> list[int]:
        """Every live process of `node`: its process group (raylet, agents; gcs_server and
        monitors on the head) and their descendants (the worker processes, which Ray puts in
        process groups of their own). An actor's worker is among them while it lives."""
        return _with_descendants(_group_pids(node.pgid))

    def _start_node(self, head: bool, resources: dict, cpus: int | None = None) -> RayNode:
        argv = [RAY, "start", f"--num-cpus={cpus or self.cpus_per_node}", "--disable-usage-stats", f"--temp-dir={self.tmp_dir}",
                "--node-ip-address=127.0.0.1"]
        if head:
            argv += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={free_port_in(self.ns)}"]
        else:
            argv += [f"--address={self.address}"]
        if resources:
            argv.append(f"--resources={json.dumps(resources)}")
        # Its own session, so that the raylet, agents and workers it leaves behind share one process group.
        proc = in_netns(self.ns, argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"`ray start` failed ({proc.returncode}):\n{output[-3000:]}")
        node = RayNode(index=self._started, pgid=proc.pid, node_id=_raylet_node_id(proc.pid), head=head, resources=dict(resources))
        self.nodes.append(node)
        self._started += 1
        return node


def _group_pids(pgid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    found.append(int(entry.name))
    return found


def _with_descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()
                if fields[0] not in ("Z", "X"):
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def _alive_of(pids: list[int]) -> list[int]:
    return [pid for pid in pids if not _is_zombie(pid)]


def _raylet_node_id(pgid: int) -> str:
    """The node id given to the raylet of process group `pgid` (from its command line)."""
    for pid in _group_pids(pgid):
        with suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if args and args[0].endswith(b"/raylet"):
                for a in args:
                    if a.startswith(b"--node_id="):
                        return a.split(b"=", 1)[1].decode()
    raise RuntimeError(f"no raylet found in process group {pgid}")
