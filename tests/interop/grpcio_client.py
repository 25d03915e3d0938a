#!/usr/bin/env python3
"""Interoperability test: grpcio's proxyless xDS client against `xds-sidecar`.

    grpcio_client.py --sidecar PATH/TO/xds-sidecar [--mtls DIR | --accept REGISTRY SERVICE...]

Starts three gRPC backends on 127.0.0.1 (each serves grpc.health.v1.Health and counts the
Check calls it receives), writes a registry naming two of them, starts `xds-sidecar` on a free
loopback port and points a grpcio channel at `xds:///myservice` through an inline bootstrap.
Then checks, every wait bounded:

1. RPCs are balanced round robin over both registered backends;
2. replacing the registry file (write a new file, rename it over the old one) moves the
   traffic to the new endpoint set;
3. editing the file in place (truncate and rewrite, as many editors do) does too;
4. an invalid registry (unknown field) is rejected: RPCs keep reaching the last good
   endpoints;
5. with the sidecar's gRPC health checks on, a backend whose checks fail stops receiving RPCs
   and receives them again once it recovers;
6. clusters with every other load-balancing policy (least_request, random, maglev, ring_hash)
   are accepted, those grpcio does not implement with the fallback the sidecar lists beside
   them; and the client ACKed every update, NACKed none.

With --mtls DIR (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem, the client
certificate carrying the URI SAN MTLS_IDENTITY) the sidecar serves xDS over mutual TLS with that
identity bound to the node id, the bootstrap's channel_creds are `tls` with the client
certificate (gRFC A65), and two steps run: the exchange over mutual TLS, with /clients
showing the certificate identity on the client's stream; and a client with the same
certificate claiming another node id is refused (PERMISSION_DENIED, logged by the sidecar) and
gets no configuration.

With --accept REGISTRY SERVICE... the sidecar serves REGISTRY instead (its health checks off:
the endpoints need not exist), a channel dials xds:///SERVICE for each service once, and the
client must ACK everything it is sent, NACK nothing (the Rust test hands it
examples/registry-full.yaml, which uses every setting).

Prints one progress line per step. Exits 0 on success; on failure prints why, the sidecar's
log and exits 1. Debug the client with GRPC_VERBOSITY=debug
GRPC_TRACE=xds_client,xds_resolver,cds_lb (inherited from the environment).
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

SERVICE = "myservice"
NODE_ID = "interop-test"
MTLS_IDENTITY = "spiffe://interop.test/grpcio"
# A node the certificate of MTLS_IDENTITY may not claim.
OTHER_NODE_ID = "someone-else"
# Run in a process of its own (a process has one xDS client, made from the bootstrap in its
# environment): one call, printing how it ended.
REFUSED_PROBE = """
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel("xds:///myservice")
try:
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""
CHECK_METHOD = "/grpc.health.v1.Health/Check"
# The gRPC health service name the sidecar checks in step 5 (the client's calls use "").
HEALTH_SERVICE = "xds-sidecar-check"
HEALTH_CHECK_LINE = (
    f"health_check: {{kind: grpc, service_name: {HEALTH_SERVICE}, interval: 100ms, timeout: 100ms, "
    "unhealthy_threshold: 2, healthy_threshold: 2}"
)
# Bounds of every wait, in seconds.
SIDECAR_START_TIMEOUT = 20.0
FIRST_ROUND_ROBIN_TIMEOUT = 30.0
UPDATE_TIMEOUT = 20.0
RPC_TIMEOUT = 3.0
BATCH = 12
INVALID_EDIT_LOG_WAIT = 5.0
INVALID_EDIT_OBSERVE = 3.0

# Filled in by import_grpc(), after the bootstrap is in the environment.
grpc = None
health = None
health_pb2 = None
health_pb2_grpc = None


class TestFailure(Exception):
    """A check failed; the message says which and what was seen."""


def log(message):
    print(f"[grpcio-interop] {message}", flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bootstrap_json(xds_port, mtls_dir=None, node_id=NODE_ID):
    if mtls_dir is None:
        server_uri, creds = f"127.0.0.1:{xds_port}", {"type": "insecure"}
    else:
        # The name the server certificate carries (it has 127.0.0.1 too).
        server_uri = f"localhost:{xds_port}"
        creds = {
            "type": "tls",
            "config": {
                "ca_certificate_file": os.path.join(mtls_dir, "ca.pem"),
                "certificate_file": os.path.join(mtls_dir, "client.pem"),
                "private_key_file": os.path.join(mtls_dir, "client-key.pem"),
            },
        }
    return json.dumps(
        {
            "xds_servers": [{"server_uri": server_uri, "channel_creds": [creds], "server_features": ["xds_v3"]}],
            "node": {"id": node_id, "locality": {"zone": "z"}},
        }
    )


def set_bootstrap(xds_port, mtls_dir=None):
    # A bootstrap file named by GRPC_XDS_BOOTSTRAP would win over the inline one.
    os.environ.pop("GRPC_XDS_BOOTSTRAP", None)
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = bootstrap_json(xds_port, mtls_dir)


def import_grpc():
    global grpc, health, health_pb2, health_pb2_grpc
    # Loopback only: never let a proxy from the environment carry these connections.
    for var in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(var, None)
    import grpc as _grpc
    from grpc_health.v1 import health as _health
    from grpc_health.v1 import health_pb2 as _health_pb2
    from grpc_health.v1 import health_pb2_grpc as _health_pb2_grpc

    grpc, health, health_pb2, health_pb2_grpc = _grpc, _health, _health_pb2, _health_pb2_grpc
    log(f"grpcio {grpc.__version__}")


class Backend:
    """A gRPC server on 127.0.0.1 serving the health service and counting Check calls."""

    def __init__(self, label):
        self.label = label
        self._lock = threading.Lock()
        self._calls = 0
        backend = self

        class Counter(grpc.ServerInterceptor):
            def intercept_service(self, continuation, handler_call_details):
                # Count the client's RPCs only, not the sidecar's own health checks.
                agent = dict(handler_call_details.invocation_metadata or ()).get("user-agent", "")
                if handler_call_details.method == CHECK_METHOD and "grpc-python" in agent:
                    with backend._lock:
                        backend._calls += 1
                return continuation(handler_call_details)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[Counter()])
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.health = servicer
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise TestFailure(f"backend {label}: cannot bind a port on 127.0.0.1")
        self.server.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def calls(self):
        with self._lock:
            return self._calls

    def set_serving(self, serving):
        """What the backend answers to the sidecar's health checks (service HEALTH_SERVICE)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(HEALTH_SERVICE, status)

    def stop(self):
        self.server.stop(grace=None)


def registry_yaml(endpoints, extra_service_line=None):
    listed = ", ".join(f'"{e}"' for e in endpoints)
    text = f"services:\n  - name: {SERVICE}\n    endpoints: [{listed}]\n"
    if extra_service_line:
        text += f"    {extra_service_line}\n"
    return text


def replace_file(path, text):
    """Writes a new file beside `path` and renames it over `path` (atomic replace)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def edit_in_place(path, text):
    """Truncates and rewrites `path` itself (same inode), like an editor saving in place."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class Sidecar:
    """The `xds-sidecar` process, its log captured in a file."""

    def __init__(self, binary, config, workdir, extra_args=()):
        self.binary = binary
        self.config = config
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(workdir, "sidecar.log")
        self.proc = None
        self.port = None

    def start(self, attempts=3):
        """Starts on a free port (retrying if another process took it first)."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.admin_port = free_port()
            args = [
                self.binary,
                "--config",
                self.config,
                "--xds-addr",
                f"127.0.0.1:{self.port}",
                "--admin-addr",
                f"127.0.0.1:{self.admin_port}",
                # One thread, the set-up suggested beside proxies on a small machine (the other
                # sidecar tests run on the default, one per CPU).
                "--worker-threads",
                "1",
                "--log-level",
                # Every xDS request and response and every reload, without HTTP/2 frames.
                "info,xds_server=debug,xds_cache=debug,xds_examples=debug",
            ] + self.extra_args
            log(f"starting {' '.join(args)}")
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_listening():
                log(f"xds-sidecar is listening on 127.0.0.1:{self.port} (pid {self.proc.pid})")
                return
            if self.proc.poll() is None:
                self.stop()
                raise TestFailure(f"xds-sidecar did not accept TCP connections within {SIDECAR_START_TIMEOUT:.0f} s")
            log(f"xds-sidecar exited with status {self.proc.returncode} (attempt {attempt} of {attempts})")
        raise TestFailure("xds-sidecar exited at start-up (see its log below)")

    def _wait_listening(self):
        deadline = time.monotonic() + SIDECAR_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def admin_json(self, path):
        """GET a JSON admin page of the sidecar."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as e:
            return f"(no log: {e})"

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise TestFailure(f"xds-sidecar exited unexpectedly with status {self.proc.returncode}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Client:
    """A grpcio channel to xds:///myservice and the health stub on it."""

    def __init__(self, service=SERVICE):
        self.channel = grpc.insecure_channel(f"xds:///{service}")
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    def batch(self, n):
        """Makes `n` Check calls; returns the list of errors (empty when all succeeded)."""
        errors = []
        for _ in range(n):
            try:
                reply = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT, wait_for_ready=True)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    errors.append(f"status {reply.status}")
            except grpc.RpcError as e:
                errors.append(f"{e.code().name}: {e.details()}")
        return errors

    def close(self):
        self.channel.close()


def counts(backends):
    return {b.label: b.calls() for b in backends}


def wait_for_traffic(client, sidecar, backends, hit, idle, timeout, what):
    """Makes batches of calls until one batch succeeds entirely, reaches every backend of `hit`
    and none of `idle`. Returns that batch's calls per backend."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = None
    while time.monotonic() < deadline:
        sidecar.check_alive()
        before = counts(backends)
        errors = client.batch(BATCH)
        after = counts(backends)
        delta = {k: after[k] - before[k] for k in after}
        last = (delta, errors)
        if not errors and all(delta[b.label] > 0 for b in hit) and all(delta[b.label] == 0 for b in idle):
            log(f"{what}: ok after {time.monotonic() - started:.1f} s, calls per backend {delta}")
            return delta
        time.sleep(0.2)
    delta, errors = last if last else ({}, [])
    raise TestFailure(
        f"{what}: not reached within {timeout:.0f} s: wanted calls on {[b.label for b in hit]} and none on "
        f"{[b.label for b in idle]}; last batch of {BATCH}: calls per backend {delta}, "
        f"{len(errors)} errors {sorted(set(errors))[:3]}"
    )


def wait_for_log(sidecar, needle, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in sidecar.log_text():
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def running(sidecar, backends):
    """Around a scenario: prints the sidecar's log if it fails; then closes the clients it put in
    the yielded list, stops the sidecar and the backends."""
    clients = []
    try:
        yield clients
    except BaseException:
        print_sidecar_log(sidecar)
        raise
    finally:
        for client in clients:
            client.close()
        sidecar.stop()
        for b in backends:
            b.stop()


def held_by_node(sidecar):
    """What NODE_ID holds per type in /clients: (sent, ACKed, last NACK); and its streams."""
    clients = sidecar.admin_json("/clients")["clients"]
    ours = [c for c in clients if c["node_id"] == NODE_ID]
    if not ours:
        raise TestFailure(f"/clients does not list node {NODE_ID}: {clients}")
    held = {}
    for stream in ours[0]["streams"]:
        for t in stream["types"].values():
            held[t["type"]] = (t["last_sent_version"], t["last_acked_version"], t["last_nack"])
    return held, ours[0]["streams"]


def wait_for_answer(sidecar, short, before, timeout):
    """Waits until a version of type `short` other than `before` was sent and answered (ACK or
    NACK: the final checks say which)."""
    deadline = time.monotonic() + timeout
    held = {}
    while time.monotonic() < deadline:
        held, _ = held_by_node(sidecar)
        sent, acked, nack = held.get(short, (None, None, None))
        if sent and sent != before and (sent == acked or nack):
            return
        time.sleep(0.1)
    raise TestFailure(f"no answer to a new {short} version within {timeout:.0f} s: {held}")


def expect_acked(sidecar):
    """Checks in /clients that NODE_ID holds (has ACKed) the version last sent of LDS, RDS, CDS
    and EDS; returns what it holds per type and its streams."""
    held, streams = held_by_node(sidecar)
    for short in ("LDS", "RDS", "CDS", "EDS"):
        sent, acked, nack = held.get(short, (None, None, None))
        if not sent or sent != acked or nack:
            raise TestFailure(f"/clients: {short} of {NODE_ID} should be ACKed at the version sent: {held}")
    return held, streams


def run_mtls(binary, workdir, mtls_dir):
    """Step 1 over mutual TLS, the client's certificate identity bound to its node id."""
    backends = [Backend(f"backend{i}") for i in (1, 2)]
    b1, b2 = backends
    registry = os.path.join(workdir, "registry.yaml")
    replace_file(registry, registry_yaml([b1.address, b2.address]))
    pem = lambda name: os.path.join(mtls_dir, name)  # noqa: E731
    tls_args = [
        "--tls-cert", pem("server.pem"),
        "--tls-key", pem("server-key.pem"),
        "--tls-client-ca", pem("ca.pem"),
        "--bind-identity", f"{MTLS_IDENTITY}={NODE_ID}",
    ]
    sidecar = Sidecar(binary, registry, workdir, tls_args)
    with running(sidecar, backends) as clients:
        sidecar.start()
        set_bootstrap(sidecar.port, mtls_dir)
        client = Client()
        clients.append(client)
        log(f"step 1 over mutual TLS: round robin over {b1.label} and {b2.label}")
        wait_for_traffic(client, sidecar, backends, [b1, b2], [], FIRST_ROUND_ROBIN_TIMEOUT, "first RPCs")
        held, streams = expect_acked(sidecar)
        identities = sorted({i for s in streams for i in s["identities"]})
        if identities != [MTLS_IDENTITY]:
            raise TestFailure(f"/clients should show the client certificate's identity {MTLS_IDENTITY}, not {identities}")
        log(f"step 1: /clients shows {NODE_ID} as {identities[0]}, holding what it was sent: {sorted(held)}")

        log(f"step 2: the same certificate claiming node {OTHER_NODE_ID} (another process)")
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=bootstrap_json(sidecar.port, mtls_dir, OTHER_NODE_ID))
        probe = subprocess.run(
            [sys.executable, "-c", REFUSED_PROBE], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        outcome = probe.stdout.strip()
        if probe.returncode != 0 or not outcome or outcome.startswith("OK"):
            raise TestFailure(
                f"the call as {OTHER_NODE_ID} should fail: {outcome!r} (exit {probe.returncode}) {probe.stderr[-2000:]}"
            )
        if not wait_for_log(sidecar, "PermissionDenied", INVALID_EDIT_LOG_WAIT) or OTHER_NODE_ID not in sidecar.log_text():
            raise TestFailure(f"xds-sidecar did not log refusing {OTHER_NODE_ID} with PermissionDenied")
        lines = [l for l in sidecar.log_text().splitlines() if "PermissionDenied" in l]
        if not any(OTHER_NODE_ID in l for l in lines):
            raise TestFailure(f"the PermissionDenied lines do not name {OTHER_NODE_ID}: {lines[:3]}")
        listed = [c["node_id"] for c in sidecar.admin_json("/clients")["clients"]]
        if OTHER_NODE_ID in listed:
            raise TestFailure(f"/clients lists {OTHER_NODE_ID}, which should have been refused: {listed}")
        log(f"step 2: refused ({outcome[:120]}); the sidecar logged: {lines[0][-200:]}")
        sidecar.check_alive()


def expect_no_nack(sidecar):
    nacks = [line for line in sidecar.log_text().splitlines() if "NACK: the client rejected" in line]
    if nacks:
        raise TestFailure(f"the client NACKed {len(nacks)} responses, the first: {nacks[0]}")


def run_accept(binary, workdir, registry, services):
    """Dials every service of `registry` once; everything sent must be ACKed."""
    sidecar = Sidecar(binary, os.path.abspath(registry), workdir, ["--no-health-checks"])
    with running(sidecar, []) as clients:
        sidecar.start()
        set_bootstrap(sidecar.port)
        log(f"dialing {', '.join(f'xds:///{s}' for s in services)} as served from {registry}")
        for service in services:
            client = Client(service)
            clients.append(client)
            try:
                client.stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT)
                log(f"{service}: OK")
            except grpc.RpcError as e:
                log(f"{service}: {e.code().name} {e.details()[:120]}")
        deadline = time.monotonic() + UPDATE_TIMEOUT
        while True:
            try:
                held, _ = expect_acked(sidecar)
                break
            except TestFailure:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        expect_no_nack(sidecar)
        log(f"every resource type ACKed, none NACKed: { {t: v[0] for t, v in held.items()} }")
        sidecar.check_alive()


def run(binary, workdir):
    backends = [Backend(f"backend{i}") for i in (1, 2, 3)]
    b1, b2, b3 = backends
    log("backends: " + ", ".join(f"{b.label}={b.address}" for b in backends))
    registry = os.path.join(workdir, "registry.yaml")
    replace_file(registry, registry_yaml([b1.address, b2.address]))
    sidecar = Sidecar(binary, registry, workdir)
    with running(sidecar, backends) as clients:
        sidecar.start()
        set_bootstrap(sidecar.port)
        client = Client()
        clients.append(client)

        log(f"step 1: round robin over {b1.label} and {b2.label}")
        wait_for_traffic(client, sidecar, backends, [b1, b2], [b3], FIRST_ROUND_ROBIN_TIMEOUT, "first RPCs")
        before = counts(backends)
        errors = client.batch(20)
        after = counts(backends)
        spread = {k: after[k] - before[k] for k in after}
        if errors or spread[b1.label] < 5 or spread[b2.label] < 5 or spread[b3.label]:
            raise TestFailure(f"20 calls were not balanced round robin: calls per backend {spread}, errors {errors[:3]}")
        log(f"step 1: 20 calls balanced {spread}")
        held, _ = expect_acked(sidecar)
        log(f"step 1: the sidecar's /clients shows the client holding what it was sent: {sorted(held)}")

        log(f"step 2: registry replaced by rename: {b2.label} -> {b3.label}")
        replace_file(registry, registry_yaml([b1.address, b3.address]))
        wait_for_traffic(client, sidecar, backends, [b1, b3], [b2], UPDATE_TIMEOUT, "after rename")

        log(f"step 3: registry edited in place: {b1.label} -> {b2.label}")
        edit_in_place(registry, registry_yaml([b2.address, b3.address]))
        wait_for_traffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, "after in-place edit")

        log("step 4: invalid registry (unknown field `weight`, would send everything to backend1)")
        replace_file(registry, registry_yaml([b1.address], extra_service_line="weight: 3"))
        if wait_for_log(sidecar, "weight", INVALID_EDIT_LOG_WAIT):
            log("step 4: xds-sidecar logged the rejection")
        else:
            log(f"step 4: note: no log line mentioning `weight` within {INVALID_EDIT_LOG_WAIT:.0f} s")
        deadline = time.monotonic() + INVALID_EDIT_OBSERVE
        before = counts(backends)
        errors = []
        while time.monotonic() < deadline:
            sidecar.check_alive()
            errors += client.batch(4)
            time.sleep(0.02)
        after = counts(backends)
        delta = {k: after[k] - before[k] for k in after}
        if errors or delta[b1.label] or not delta[b2.label] or not delta[b3.label]:
            raise TestFailure(
                f"after the invalid edit RPCs should keep going to {b2.label} and {b3.label} only: "
                f"calls per backend {delta}, {len(errors)} errors {sorted(set(errors))[:3]}"
            )
        log(f"step 4: last good endpoints kept for {INVALID_EDIT_OBSERVE:.0f} s, calls per backend {delta}")

        log(f"step 5: gRPC health checks by the sidecar; {b3.label} fails its checks, then recovers")
        replace_file(registry, registry_yaml([b2.address, b3.address], extra_service_line=HEALTH_CHECK_LINE))
        wait_for_traffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, "health-checked service")
        b3.set_serving(False)
        wait_for_traffic(client, sidecar, backends, [b2], [b1, b3], UPDATE_TIMEOUT, f"{b3.label} failing its checks")
        b3.set_serving(True)
        wait_for_traffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, f"{b3.label} recovered")

        for policy in ("least_request", "random", "maglev", "ring_hash"):
            log(f"step 6: lb_policy {policy}")
            before = expect_acked(sidecar)[0]["CDS"][0]
            replace_file(registry, registry_yaml([b2.address, b3.address], extra_service_line=f"lb_policy: {policy}"))
            wait_for_answer(sidecar, "CDS", before, UPDATE_TIMEOUT)
            wait_for_traffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, f"lb_policy {policy}")
        held, _ = expect_acked(sidecar)
        expect_no_nack(sidecar)
        log(f"every update was ACKed, none NACKed: { {t: v[0] for t, v in held.items()} }")
        sidecar.check_alive()


def print_sidecar_log(sidecar):
    text = sidecar.log_text()
    lines = text.splitlines()
    shown = lines[-400:]
    print(f"----- xds-sidecar log ({sidecar.log_path}, last {len(shown)} of {len(lines)} lines) -----", file=sys.stderr)
    print("\n".join(shown), file=sys.stderr)
    print("----- end of xds-sidecar log -----", file=sys.stderr, flush=True)


def terminated(signum, _frame):
    # Unwinds through run()'s cleanup: the sidecar and the backends are stopped.
    raise SystemExit(f"[grpcio-interop] FAIL: terminated by signal {signum}")


def main():
    signal.signal(signal.SIGTERM, terminated)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecar", required=True, help="path of the xds-sidecar binary")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--mtls", metavar="DIR", help="serve over mutual TLS with the certificates in DIR (steps 1-2)")
    mode.add_argument(
        "--accept", nargs="+", metavar="ARG", help="REGISTRY SERVICE...: every resource for these services must be ACKed"
    )
    args = parser.parse_args()
    if args.accept is not None and len(args.accept) < 2:
        parser.error("--accept takes a registry file and at least one service name")
    binary = os.path.abspath(args.sidecar)
    if not os.access(binary, os.X_OK):
        print(f"[grpcio-interop] FAIL: {binary} is not an executable (build it: cargo build --workspace --bins)", file=sys.stderr)
        return 1
    # The bootstrap must be in the environment before grpc creates its xDS client; it is set
    # again with the sidecar's actual port before the channel is created.
    set_bootstrap(free_port(), args.mtls)
    import_grpc()
    with tempfile.TemporaryDirectory(prefix="xds-grpcio-interop-") as workdir:
        try:
            if args.mtls:
                run_mtls(binary, workdir, os.path.abspath(args.mtls))
            elif args.accept:
                run_accept(binary, workdir, args.accept[0], args.accept[1:])
            else:
                run(binary, workdir)
        except TestFailure as e:
            print(f"[grpcio-interop] FAIL: {e}", file=sys.stderr, flush=True)
            return 1
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
