"""The Ray test harness itself (tests/ray_cluster.py): a server inside a network namespace is
reachable only through the bridge, streams and half-closes pass through it, and a real
two-node Ray cluster places actors on both nodes, notices a killed node within seconds and
takes a node added later; nothing is left running afterwards."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.ray_cluster import LoopbackBridge, RayCluster, free_port_in, in_netns, netns, pids_in_netns

pytestmark = pytest.mark.ray

CHUNKS = 5
SERVER = textwrap.dedent("""
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            if self.path == "/stream":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(%d):
                    data = f"chunk {i} {time.monotonic()}\\n".encode()
                    self.wfile.write(b"%%x\\r\\n%%s\\r\\n" %% (len(data), data))
                    self.wfile.flush()
                    time.sleep(0.3)
                self.wfile.write(b"0\\r\\n\\r\\n")
            else:
                body = b"inside the namespace"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""" % CHUNKS)

# Reads until the client half-closes, then answers with what it got, reversed, and closes.
REVERSER = textwrap.dedent("""
    import socket, sys
    s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    conn, _ = s.accept()
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    conn.sendall(got[::-1])
    conn.close()
""")


def wait_listening(bridge: LoopbackBridge, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(bridge.url + "/", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bridge_reaches_a_server_inside_the_namespace_and_streams_through_it(tmp_path):
    with netns() as ns:
        port = free_port_in(ns)
        server = in_netns(ns, [sys.executable, "-c", SERVER, port])
        with LoopbackBridge(ns, port) as bridge:
            wait_listening(bridge)
            assert bridge.url == f"http://127.0.0.1:{bridge.port}"

            conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10)
            for _ in range(2):  # one keep-alive connection, two requests
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"inside the namespace"
            conn.request("GET", "/stream")
            response = conn.getresponse()
            arrivals, lines = [], []
            while line := response.readline():
                arrivals.append(time.monotonic())
                lines.append(line.decode())
            conn.close()
            assert [line.split()[:2] for line in lines] == [["chunk", str(i)] for i in range(CHUNKS)]
            assert arrivals[-1] - arrivals[0] > 0.3 * (CHUNKS - 2), "chunks arrived in one lump: the bridge buffered the stream"

            # The same port in the root namespace is not the server (normally nothing listens there).
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.read() != b"inside the namespace"
            except OSError:
                pass
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", bridge.port), timeout=2).close()
        server.terminate()
        server.wait(5)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_bridge_passes_a_half_close_on():
    with netns() as ns:
        port = free_port_in(ns)
        server = in_netns(ns, [sys.executable, "-c", REVERSER, port])
        with LoopbackBridge(ns, port) as bridge:
            deadline = time.monotonic() + 15
            while not pids_in_netns(ns) or not _listening_in(ns, port):
                assert time.monotonic() < deadline, "the reverser never listened"
                time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as s:
                s.sendall(b"abc" * 1000)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := s.recv(4096):
                    got += chunk
            assert got == (b"abc" * 1000)[::-1]
        server.wait(5)
    # `netns` stopped whatever was left in the namespace before deleting it.
    assert server.poll() is not None


def _listening_in(ns: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


# A driver run inside the namespace, step by step on the test's word (one ray.init for the whole test).
DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import ray

    def say(**kw):
        print("@@" + json.dumps(kw), flush=True)

    def alive():
        return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    @ray.remote(num_cpus=1, resources={"webui_cpu_worker": 1})
    class Where:
        def where(self):
            return ray.get_runtime_context().get_node_id(), os.getpid(), os.environ.get("OMP_NUM_THREADS")

    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    actors = [Where.remote(), Where.remote()]
    say(alive=alive(), placed=ray.get([a.where.remote() for a in actors], timeout=60))
    sys.stdin.readline()  # a node was killed
    start = time.monotonic()
    while len(alive()) != 1 and time.monotonic() - start < 60:
        time.sleep(0.1)
    say(alive=alive(), at=time.monotonic())  # the machine's one monotonic clock: the test knows when it killed
    sys.stdin.readline()  # a node was added
    late = Where.remote()
    say(alive=alive(), placed=ray.get(late.where.remote(), timeout=60))
""")


def _expect(proc: subprocess.Popen, log, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the driver exited ({proc.wait()}):\n{log.read_text()[-3000:]}")
                if line.startswith("@@"):
                    return json.loads(line[2:])
    raise AssertionError(f"the driver said nothing in time:\n{log.read_text()[-3000:]}")


def _tell(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_two_node_cluster_places_actors_on_both_notices_a_killed_node_and_takes_a_new_one(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    with netns() as ns:
        with RayCluster(ns, nodes=2, resources={"webui_cpu_worker": 1}) as cluster:
            head, other = cluster.nodes
            assert cluster.address.startswith("127.0.0.1:") and head.head and not other.head
            driver_log = tmp_path / "driver.log"
            with driver_log.open("w") as stderr:  # a file, not a pipe: nobody reads stderr while the driver runs
                driver = in_netns(ns, [sys.executable, script, cluster.address], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=stderr, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
            try:
                first = _expect(driver, driver_log)
                assert first["alive"] == {head.node_id: "127.0.0.1", other.node_id: "127.0.0.1"}
                # one actor per node, each a process of that node (so kill_node takes it too), one thread each
                assert sorted(node for node, _, _ in first["placed"]) == sorted([head.node_id, other.node_id])
                for node_id, pid, threads in first["placed"]:
                    assert pid in cluster.node_pids(head if node_id == head.node_id else other) and threads == "1"

                killed_at = time.monotonic()
                cluster.kill_node(other)
                _tell(driver)
                after_kill = _expect(driver, driver_log)
                assert after_kill["alive"] == {head.node_id: "127.0.0.1"}
                seconds = after_kill["at"] - killed_at
                assert seconds < 10, "node death took Ray's default health-check time (15 s): HEALTH_CHECK_ENV not in effect"
                print(f"\nkilled node seen dead by the driver after {seconds:.1f}s")

                late = cluster.add_node()
                _tell(driver)
                added = _expect(driver, driver_log)
                assert added["alive"] == {head.node_id: "127.0.0.1", late.node_id: "127.0.0.1"}
                assert added["placed"][0] == late.node_id and added["placed"][1] in cluster.node_pids(late)
                assert driver.wait(30) == 0
            finally:
                driver.kill()
                driver.wait()
            tmp_dir = cluster.tmp_dir
        assert pids_in_netns(ns) == [], "the cluster left processes running"
        assert not os.path.exists(tmp_dir)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
