"""Hostile input against the real cluster-gateway binary. For every main case (test_NN without a
letter) the test checks (a) the exact refusal (HTTP status and body, WebSocket close code, TLS alert
or closed connection), (b) a log line with the reason (the gateway runs at --log-level debug: TLS
handshake failures on the agent port are logged at debug only, so that scanners do not flood the
log), (c) a metric moved where one exists (read before, exact increase after), and (d) that a
well-behaved agent connected beforehand (cluster-agent-sim, plane `bystander`) keeps its very
session and still answers a proxied request through the internal API. A `b` test (test_02b, ...)
is the regression test of one bug and checks only what that bug was about (the answer, a log line,
a counter's exact increase), not (d).

Gaps found in the gateway are asserted too, in their own small tests marked
@unittest.expectedFailure with a `# GATEWAY BUG:` comment; remove the marker once fixed.

Python agents (the `websockets` library) use plane `hostile`; raw `ssl` + `socket` clients send
what no agent library would. One gateway process per test class."""
import asyncio
import base64
import http.client
import json
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
SIM = os.environ.get("CG_AGENT_SIM_BIN", os.path.join(os.path.dirname(BIN), "cluster-agent-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import (LogLines, metric_sum, proc_cpu_seconds, proc_fd_count, proc_status_kib,  # noqa: E402
                          start_gateway, wait_for)

HANDSHAKE_TIMEOUT = 4.0      # --handshake-timeout of the main class, seconds
MAX_MESSAGE = 256 * 1024     # --max-message-size of the main class
PODS = "/api/v1/namespaces/default/pods"
TIMED_OUT = "The socket was closed due to a timeout"  # Beast's message for an expired tcp_stream
HANDSHAKES = "cluster_gateway_agent_handshakes_total"
PKI = None  # set by setUpModule


def setUpModule():
    global PKI, _module_tmp
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    _module_tmp = tempfile.TemporaryDirectory(prefix="cg-hostile-")
    PKI = os.path.join(_module_tmp.name, "pki")
    subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), PKI], check=True)


def tearDownModule():
    _module_tmp.cleanup()


def pki(name):
    return os.path.join(PKI, name)


def b64file(name):
    with open(pki(name), "rb") as f:
        return base64.b64encode(f.read()).decode()


def plane_yaml(name, ca):
    return ("apiVersion: openchoreo.dev/v1alpha1\nkind: ClusterDataPlane\n"
            f"metadata:\n  name: {name}\nspec:\n  planeID: {name}\n  clusterAgent:\n    clientCA:\n"
            f"      value: {b64file(ca)}\n")


def stop_process(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def client_hello():
    """The bytes of a real TLS ClientHello (Python's OpenSSL), produced without a socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def read_until_closed(sock, timeout):
    """Reads until the peer closes. Returns (bytes, how): how is 'eof', 'reset', 'tls-error: …' or
    'open' (still open after `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
    except (socket.timeout, TimeoutError):
        return data, "open"
    except ConnectionResetError:
        return data, "reset"
    except ssl.SSLError as e:
        return data, f"tls-error: {e}"


def tls_records(data):
    """Splits raw bytes into TLS records [(content_type, payload)]; raises on anything else."""
    out = []
    while data:
        if len(data) < 5 or data[1] != 3:
            raise AssertionError(f"not a TLS record: {data[:16]!r}")
        n = int.from_bytes(data[3:5], "big")
        out.append((data[0], data[5:5 + n]))
        data = data[5 + n:]
    return out


def parse_http(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def tunnel_reply(req, status=200, body=b"", headers=None):
    return json.dumps({"requestID": req["requestID"], "statusCode": status,
                       "headers": headers or {"Content-Type": ["text/plain; charset=utf-8"]},
                       "body": base64.b64encode(body).decode()})


# Under a sanitizer (scripts/test --sanitize, CG_SANITIZE set by CMake) RSS measures the sanitizer's
# allocator (ASan keeps up to 256 MiB of freed memory in quarantine), not the gateway: the RSS bounds
# are checked by the normal build only; LeakSanitizer checks leaks in the ASan build.
SANITIZED = bool(os.environ.get("CG_SANITIZE"))


def assert_rss_growth_below(case, rss0, rss1, limit_kib):
    if SANITIZED:
        print(f"  (RSS bound not checked under {os.environ['CG_SANITIZE']} sanitizer: {rss0} -> {rss1} KiB)",
              file=sys.stderr)
        return
    case.assertLess(rss1 - rss0, limit_kib, f"RSS grew from {rss0} to {rss1} KiB")


class GatewayCase(unittest.TestCase):
    """One gateway per class, planes `bystander` (tenant B CA; cluster-agent-sim) and `hostile`
    (tenant A CA; Python agents), the log kept in memory, and the checks shared by every case."""
    extra_args = ()
    preexec_fn = None
    env = None

    @classmethod
    def setUpClass(cls):
        # Class cleanups run even when setUpClass fails half-way: no process is left behind.
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-hostile-")
        cls.addClassCleanup(cls.tmp.cleanup)
        d = cls.tmp.name
        cls.planes = os.path.join(d, "planes")
        os.makedirs(cls.planes)
        with open(os.path.join(cls.planes, "bystander.yaml"), "w") as f:
            f.write(plane_yaml("bystander", "tenant-b-ca.crt"))
        with open(os.path.join(cls.planes, "hostile.yaml"), "w") as f:
            f.write(plane_yaml("hostile", "tenant-a-ca.crt"))
        cls.logfile = open(os.path.join(d, "gateway.log"), "w")
        cls.addClassCleanup(cls.logfile.close)
        cls.log = LogLines(echo=cls.logfile)
        args = {"--heartbeat-interval": "1s", "--heartbeat-timeout": "30s", "--handshake-timeout": f"{HANDSHAKE_TIMEOUT:g}s",
                "--max-message-size": str(MAX_MESSAGE), "--request-timeout": "30s", "--startup-grace": "0s",
                "--shutdown-timeout": "5s", "--log-level": "debug", "--io-threads": "2"}
        args.update(dict(zip(cls.extra_args[::2], cls.extra_args[1::2])))
        cmd = [BIN, "--port", "0", "--health-port", "0", "--internal-port", "0", "--bind", "127.0.0.1",
               "--planes-dir", cls.planes, "--server-cert", pki("server.crt"), "--server-key", pki("server.key"),
               "--internal-client-ca-cert", pki("internal-ca.crt")]
        for k, v in args.items():
            cmd += [k, v]
        cls.proc, started = start_gateway(cmd, log=cls.log, preexec_fn=cls.preexec_fn, env=cls.env)
        cls.addClassCleanup(stop_process, cls.proc)
        cls.pid = cls.proc.pid
        cls.agent_port, cls.health_port = started["agentPort"], started["healthPort"]
        cls.internal_port = started["internalPort"]
        cls.sim_log = open(os.path.join(d, "sim.log"), "w")
        cls.addClassCleanup(cls.sim_log.close)
        cls.sim = subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{cls.agent_port}/ws", "--plane-type", "dataplane",
             "--plane-id", "bystander", "--client-cert", pki("agent-b-chain.crt"), "--client-key", pki("agent-b.key"),
             "--server-ca", pki("gateway-ca.crt"), "--reconnect-delay", "1s"],
            stdout=cls.sim_log, stderr=subprocess.STDOUT)
        cls.addClassCleanup(stop_process, cls.sim)
        ev = cls.log.wait("agent connected successfully", planeID="bystander", timeout=30)
        if not ev:
            raise AssertionError("the bystander agent did not connect")
        cls.bystander_id = ev[0]["connectionID"]
        if not wait_for(lambda: cls.sessions("bystander") == 1, 20):
            raise AssertionError("the bystander session is not registered")

    # ---- observation helpers ------------------------------------------------------------------
    @classmethod
    def metrics(cls):
        with urllib.request.urlopen(f"http://127.0.0.1:{cls.health_port}/metrics", timeout=30) as r:
            return r.read().decode()

    @classmethod
    def metric(cls, name, **labels):
        return metric_sum(cls.metrics(), name, **labels)

    @classmethod
    def sessions(cls, plane):
        return metric_sum(cls.metrics(), "cluster_gateway_agent_sessions", plane_type="dataplane", plane_id=plane)

    def wait_metric(self, name, value, timeout=20, **labels):
        """Waits until the metric equals `value`; fails with the last value seen."""
        got = wait_for(lambda: self.metric(name, **labels) == value, timeout, 0.1)
        self.assertTrue(got, f"{name}{labels} is {self.metric(name, **labels)}, expected {value}")

    def status_file(self, plane):
        try:
            with open(os.path.join(self.planes, "status", f"ClusterDataPlane._cluster.{plane}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def connected_in_status(self, plane):
        return (self.status_file(plane) or {}).get("agentConnection", {}).get("connected")

    @classmethod
    def ssl_ctx(cls, cert=None, alpn=None, max_version=None):
        ctx = ssl.create_default_context(cafile=pki("gateway-ca.crt"))
        if cert:
            chain = "agent-b-chain.crt" if cert == "agent-b" else f"{cert}.crt"
            ctx.load_cert_chain(pki(chain), pki(f"{cert}.key"))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if max_version:
            ctx.maximum_version = max_version
        return ctx

    @classmethod
    def tls_connect(cls, port=None, cert="agent-a", **kw):
        s = socket.create_connection(("127.0.0.1", port or cls.agent_port), timeout=30)
        return cls.ssl_ctx(cert, **kw).wrap_socket(s, server_hostname="localhost")

    @classmethod
    def proxy(cls, plane, path=PODS, request_id=None, timeout=40):
        """GET through the internal API as a control-plane caller; returns (status, body bytes)."""
        conn = http.client.HTTPSConnection("localhost", cls.internal_port, timeout=timeout,
                                           context=cls.ssl_ctx("controller"))
        try:
            conn.request("GET", f"/api/proxy/dataplane/{plane}/_cluster/{plane}/k8s{path}",
                         headers={"X-Request-ID": request_id} if request_id else {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def assert_bystander_serves(self):
        """(d): the agent connected before the case still has the same session and answers a proxied
        request, and the gateway is alive."""
        self.assertIsNone(self.proc.poll(), "the gateway exited")
        self.assertIsNone(self.sim.poll(), "the bystander agent exited")
        status, body = self.proxy("bystander", request_id="bystander-check")
        self.assertEqual(status, 200, body)
        names = [p["metadata"]["name"] for p in json.loads(body)["items"]]
        self.assertEqual(names, ["bystander-worker-0", "bystander-worker-1"])
        self.assertEqual(self.log.find("agent disconnected", planeID="bystander"), [],
                         "the bystander session was dropped")
        self.assertEqual([e["connectionID"] for e in self.log.find("agent connected successfully", planeID="bystander")],
                         [self.bystander_id], "the bystander reconnected")
        self.assertEqual(self.sessions("bystander"), 1)

    # ---- Python agents on plane `hostile` -------------------------------------------------------
    async def agent(self, expect=1):
        """A websockets agent on plane `hostile` with a tenant-A certificate, registered: waits until
        the plane has `expect` sessions. Its connectionID is in `ws.cid`."""
        url = f"wss://localhost:{self.agent_port}/ws?planeID=hostile&planeType=dataplane"
        ws = await websockets.connect(url, ssl=self.ssl_ctx("agent-a"), ping_interval=None, max_size=None,
                                      open_timeout=30, close_timeout=10)
        remote = f"127.0.0.1:{ws.local_address[1]}"
        ev = await asyncio.to_thread(self.log.wait, "agent connected successfully", remote=remote, timeout=20)
        self.assertTrue(ev, "no 'agent connected successfully' for " + remote)
        ws.cid = ev[0]["connectionID"]
        # The session registers right after that line; the sessions gauge moves after registration.
        await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions", expect,
                                plane_type="dataplane", plane_id="hostile")
        return ws

    def setUp(self):
        # Agents of the previous case are gone (their close may still be in flight).
        if self.proc.poll() is None:
            self.wait_metric("cluster_gateway_agent_sessions", 0, plane_type="dataplane", plane_id="hostile")

    async def proxied(self, ws, respond, request_id):
        """Sends a proxy request for plane `hostile`; `respond(req)` (a coroutine) answers on `ws`.
        Returns (status, body) of the caller."""
        call = asyncio.ensure_future(asyncio.to_thread(self.proxy, "hostile", request_id=request_id))
        req = json.loads(await asyncio.wait_for(ws.recv(), 30))
        self.assertEqual(req["gatewayRequestID"], request_id)
        await respond(req)
        return await asyncio.wait_for(call, 40)


class HostileInputTest(GatewayCase):
    """Hostile input on the agent port and the internal port, against one gateway."""

    # ---- slow TLS handshakes ------------------------------------------------------------------
    def test_01_slow_tls_handshake_is_closed_at_the_handshake_timeout(self):
        m0 = self.metric(HANDSHAKES, result="rejected", reason="tls_handshake_failed")
        mark = self.log.mark()
        silent = socket.create_connection(("127.0.0.1", self.agent_port), timeout=30)
        half = socket.create_connection(("127.0.0.1", self.agent_port), timeout=30)
        hello = client_hello()
        half.sendall(hello[:len(hello) // 2])
        t0 = time.monotonic()
        self.assert_bystander_serves()  # while both handshakes hang
        for s in (silent, half):
            with s:
                data, how = read_until_closed(s, HANDSHAKE_TIMEOUT + 30)
                elapsed = time.monotonic() - t0
                self.assertIn(how, ("eof", "reset"), data)
                self.assertEqual(data, b"")  # no alert: the server never got a full ClientHello
                self.assertGreater(elapsed, HANDSHAKE_TIMEOUT - 1.0)
                ev = self.log.wait("agent TLS handshake failed", since=mark, remote=f"127.0.0.1:{s.getsockname()[1]}")
                self.assertTrue(ev)
                self.assertEqual(ev[0]["reason"], TIMED_OUT)
        self.wait_metric(HANDSHAKES, m0 + 2, result="rejected", reason="tls_handshake_failed")
        self.assert_bystander_serves()

    def test_02_slow_upgrade_request_after_tls_is_closed_at_the_handshake_timeout(self):
        mark = self.log.mark()
        t0 = time.monotonic()  # the deadline covers the TLS handshake and the upgrade request
        t = self.tls_connect()
        port = t.getsockname()[1]
        t.sendall(b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n")  # never ends
        with t:
            data, how = read_until_closed(t, HANDSHAKE_TIMEOUT + 30)
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(data, b"")
        self.assertGreater(time.monotonic() - t0, HANDSHAKE_TIMEOUT - 1.0)
        ev = self.log.wait("agent upgrade request not read", since=mark, remote=f"127.0.0.1:{port}")
        self.assertTrue(ev)
        self.assertEqual(ev[0]["reason"], TIMED_OUT)
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): a handshake that times out after TLS, while the upgrade request is read, is
    # counted nowhere (gateway/agent_listener.cpp read_request(): the generic `if (ec)` branch only
    # logs at debug). operations.md says tls_handshake_failed includes handshake timeouts; expected
    # some rejected reason (e.g. reason="handshake_timeout" or "bad_request") to move.
    def test_02b_slow_upgrade_request_is_counted(self):
        m0 = self.metric(HANDSHAKES, result="rejected", reason="handshake_timeout")
        t = self.tls_connect()
        t.sendall(b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\n")
        with t:
            _, how = read_until_closed(t, HANDSHAKE_TIMEOUT + 30)
        self.assertIn(how, ("eof", "reset"))
        self.wait_metric(HANDSHAKES, m0 + 1, timeout=10, result="rejected", reason="handshake_timeout")

    # ---- garbage, plain HTTP, HTTP/2 on the TLS port -------------------------------------------
    def test_03_garbage_plain_http_and_h2_preface_fail_the_tls_handshake(self):
        cases = {
            "garbage": bytes((i * 37 + 11) % 256 for i in range(4096)),
            "tls-record-header-with-huge-length": b"\x16\x03\x01\xff\xff" + b"\x01" * 512,
            "plain-http": b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "h2-prior-knowledge": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        }
        # What OpenSSL answers and why (the alert payloads, hex, and a part of the log reason).
        expected = {
            "garbage": ([], "wrong version number"),
            "tls-record-header-with-huge-length": (["0216"], "packet length too long"),  # fatal record_overflow
            "plain-http": ([], "http request"),
            "h2-prior-knowledge": ([], "wrong version number"),
        }
        self.observed_tls = {}
        for name, payload in cases.items():
            with self.subTest(name):
                m0 = self.metric(HANDSHAKES, result="rejected", reason="tls_handshake_failed")
                mark = self.log.mark()
                s = socket.create_connection(("127.0.0.1", self.agent_port), timeout=30)
                t0 = time.monotonic()
                s.sendall(payload)
                with s:
                    data, how = read_until_closed(s, HANDSHAKE_TIMEOUT + 30)
                    port = s.getsockname()[1]
                elapsed = time.monotonic() - t0
                self.assertIn(how, ("eof", "reset"))
                # Refused at once, not by the handshake timeout.
                self.assertLess(elapsed, HANDSHAKE_TIMEOUT - 0.5, f"{name}: closed after {elapsed:.1f}s")
                # Whatever came back is TLS alerts only (never an HTTP answer or application data).
                recs = tls_records(data)
                self.assertTrue(all(ct == 21 for ct, _ in recs), recs)
                ev = self.log.wait("agent TLS handshake failed", since=mark, remote=f"127.0.0.1:{port}")
                self.assertTrue(ev, name)
                self.assertNotEqual(ev[0]["reason"], TIMED_OUT)
                alerts, reason = expected[name]
                self.assertEqual([p.hex() for _, p in recs], alerts, name)
                self.assertIn(reason, ev[0]["reason"], name)
                self.wait_metric(HANDSHAKES, m0 + 1, result="rejected", reason="tls_handshake_failed")
                print(f"\n  {name}: {how} after {elapsed:.2f}s, alerts={[p.hex() for _, p in recs]}, "
                      f"log reason={ev[0]['reason']!r}", file=sys.stderr)
        self.assert_bystander_serves()

    H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS

    def test_04_h2_alpn_is_not_negotiated_and_the_preface_is_dropped(self):
        mark = self.log.mark()
        t = self.tls_connect(alpn=["h2"])
        self.assertIsNone(t.selected_alpn_protocol())  # no ALPN answer: a client must not speak h2
        port = t.getsockname()[1]
        t0 = time.monotonic()
        t.sendall(self.H2_PREFACE)
        with t:
            data, how = read_until_closed(t, 30)
        # Beast refuses "HTTP/2.0" as a bad version: answered 400 (see test_04b) and closed at once,
        # not at the handshake timeout.
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), (data, how))
        self.assertLess(time.monotonic() - t0, HANDSHAKE_TIMEOUT - 0.5)
        ev = self.log.wait("agent upgrade request not read", since=mark, remote=f"127.0.0.1:{port}")
        self.assertTrue(ev)
        self.assertEqual(ev[0]["reason"], "bad version")
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): bytes after the TLS handshake that do not parse as HTTP/1.1 (a binary blob, or
    # the HTTP/2 preface of a client that ignored the missing ALPN answer) get no answer and are
    # counted nowhere: gateway/agent_listener.cpp read_request() closes on any parse error with only
    # a debug log ("agent upgrade request not read", reason "bad method" / "bad version").
    # Expected: an HTTP/1.1 400 (Go's net/http, which upstream uses, answers "400 Bad Request" to
    # both) and cluster_gateway_agent_handshakes_total{result="rejected",reason="bad_request"} + 1.
    def test_04b_non_http_after_tls_gets_400_and_is_counted(self):
        for name, payload in (("binary", bytes((i * 37 + 11) % 256 for i in range(300)) + b"\r\n\r\n"),
                              ("h2-preface", self.H2_PREFACE)):
            with self.subTest(name):
                m0 = self.metric(HANDSHAKES, result="rejected", reason="bad_request")
                mark = self.log.mark()
                t = self.tls_connect()
                port = t.getsockname()[1]
                t.sendall(payload)
                with t:
                    data, how = read_until_closed(t, 30)
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), (data, how))
                status, _, body = parse_http(data)
                self.assertEqual(status, 400)
                self.assertRegex(body, rb"^400 Bad Request: malformed HTTP request \([a-z ]+\)\n$")
                ev = self.log.wait("agent connection rejected", since=mark, timeout=10, remote=f"127.0.0.1:{port}")
                self.assertTrue(ev)
                self.assertEqual((ev[0]["status"], ev[0]["reason"]), (400, body.decode()[:-1]))
                self.wait_metric(HANDSHAKES, m0 + 1, timeout=10, result="rejected", reason="bad_request")

    # ---- oversized request line and headers ----------------------------------------------------
    OVERSIZED = {
        "request-line": (b"GET /ws?planeID=hostile&planeType=dataplane&pad=" + b"a" * 9000 +
                         b" HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        "many-headers": (b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n" +
                         b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"p" * 40) for i in range(300)) + b"\r\n"),
        "one-huge-header": (b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                            b"X-Big: " + b"b" * 9000 + b"\r\n\r\n"),
    }

    def test_05_oversized_request_line_and_headers_get_431(self):
        for name, request in self.OVERSIZED.items():
            with self.subTest(name):
                m0 = self.metric(HANDSHAKES, result="rejected", reason="header_too_large")
                t = self.tls_connect()
                t.sendall(request)
                with t:
                    data, how = read_until_closed(t, 30)
                status, headers, body = parse_http(data)
                self.assertEqual((status, body), (431, b"request header fields too large\n"), how)
                self.assertEqual(headers.get("connection"), "close")
                self.wait_metric(HANDSHAKES, m0 + 1, result="rejected", reason="header_too_large")
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): the 431 answer is not logged at all (gateway/agent_listener.cpp read_request(),
    # the header_limit branch replies without log::warn). Expected an "agent connection rejected"
    # line with status 431 and the remote address, like every other refusal of /ws.
    def test_05b_oversized_headers_are_logged(self):
        mark = self.log.mark()
        t = self.tls_connect()
        t.sendall(self.OVERSIZED["many-headers"])
        with t:
            read_until_closed(t, 30)
            port = t.getsockname()[1]
        ev = self.log.wait("agent connection rejected", since=mark, timeout=10, remote=f"127.0.0.1:{port}")
        self.assertTrue(ev)
        self.assertEqual((ev[0]["status"], ev[0]["reason"]), (431, "request header fields too large"))

    def test_06_upgrade_request_with_a_body_gets_413(self):
        t = self.tls_connect()
        t.sendall(b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Length: 5\r\n\r\nhello")
        with t:
            data, how = read_until_closed(t, 30)
        status, _, body = parse_http(data)
        self.assertEqual((status, body), (413, b"request body not allowed\n"), how)
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): the 413 answer to an upgrade request with a body (gateway/agent_listener.cpp
    # read_request(), the body_limit branch) is neither logged nor counted. Expected an "agent
    # connection rejected" line (status 413) and a rejected handshake reason (e.g. "bad_request").
    def test_06b_upgrade_request_with_a_body_is_logged_and_counted(self):
        m0 = self.metric(HANDSHAKES, result="rejected", reason="bad_request")
        mark = self.log.mark()
        t = self.tls_connect()
        t.sendall(b"GET /ws?planeID=hostile&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Length: 5\r\n\r\nhello")
        with t:
            data, _ = read_until_closed(t, 30)
            port = t.getsockname()[1]
        self.assertEqual(parse_http(data)[0], 413)
        ev = self.log.wait("agent connection rejected", since=mark, timeout=10, remote=f"127.0.0.1:{port}")
        self.assertTrue(ev)
        self.assertEqual((ev[0]["status"], ev[0]["reason"]), (413, "request body not allowed"))
        self.wait_metric(HANDSHAKES, m0 + 1, timeout=10, result="rejected", reason="bad_request")

    # ---- WebSocket messages --------------------------------------------------------------------
    def test_07_oversized_message_closes_1009_and_status_follows(self):
        async def run():
            for name, message in (("one frame", "x" * (MAX_MESSAGE + 1)),
                                  ("fragmented", ["y" * 65536] * 5)):  # 320 KiB in 5 frames of 64 KiB
                with self.subTest(name):
                    closed0 = await asyncio.to_thread(self.metric, "cluster_gateway_agent_sessions_closed_total",
                                                      plane_type="dataplane")
                    ws = await self.agent()
                    ok = await asyncio.to_thread(wait_for, lambda: self.connected_in_status("hostile"), 20)
                    self.assertTrue(ok, "status never showed the agent connected")
                    await ws.send(message)
                    await asyncio.wait_for(ws.wait_closed(), 30)
                    # The gateway closes with 1009 and reads (discarding) what the agent still sends until
                    # its close frame, so the 1009 reaches the agent even mid-message (no reset, no 1006).
                    self.assertEqual(ws.close_code, 1009)
                    ev = await asyncio.to_thread(self.log.wait, "agent disconnected", connectionID=ws.cid)
                    self.assertTrue(ev)
                    await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions", 0,
                                            plane_type="dataplane", plane_id="hostile")
                    gone = await asyncio.to_thread(wait_for, lambda: self.connected_in_status("hostile") is False, 20)
                    self.assertTrue(gone, f"status still says connected: {self.status_file('hostile')}")
                    self.assertEqual(self.status_file("hostile")["agentConnection"]["message"], "No agents connected")
                    await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions_closed_total",
                                            closed0 + 1, plane_type="dataplane")
        asyncio.run(run())
        self.assert_bystander_serves()

    # Was a gateway bug (bug 4 in docs/reliability.md): the teardown's error replaced message_too_big.
    def test_07b_oversized_message_is_logged_and_counted_as_message_too_big(self):
        async def run():
            closed0 = await asyncio.to_thread(self.metric, "cluster_gateway_agent_sessions_closed_total",
                                              plane_type="dataplane", reason="message_too_big")
            ws = await self.agent()
            await ws.send("x" * (MAX_MESSAGE + 1))
            await asyncio.wait_for(ws.wait_closed(), 30)
            ev = await asyncio.to_thread(self.log.wait, "agent disconnected", connectionID=ws.cid)
            self.assertEqual(ev[0]["reason"], f"message larger than the limit of {MAX_MESSAGE} bytes")
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions_closed_total", closed0 + 1,
                                    timeout=3, plane_type="dataplane", reason="message_too_big")
        asyncio.run(run())

    def test_08_binary_and_fragmented_frames_carry_a_valid_response(self):
        async def run():
            ws = await self.agent()
            ok0 = await asyncio.to_thread(self.metric, "cluster_gateway_tunnel_requests_total",
                                          plane_type="dataplane", code="200", target="k8s")
            variants = {
                "binary": lambda req: ws.send(tunnel_reply(req, body=b"binary").encode()),
                "fragmented-text": lambda req: ws.send(list(self.chunks(tunnel_reply(req, body=b"fragmented-text"), 7))),
                "fragmented-binary": lambda req: ws.send(
                    list(self.chunks(tunnel_reply(req, body=b"fragmented-binary").encode(), 5))),
            }
            for name, respond in variants.items():
                with self.subTest(name):
                    status, body = await self.proxied(ws, respond, f"frames-{name}")
                    self.assertEqual((status, body), (200, name.encode()))
                    ev = await asyncio.to_thread(self.log.wait, "HTTP proxy request completed", requestID=f"frames-{name}")
                    self.assertTrue(ev)
                    self.assertEqual(ev[0]["statusCode"], 200)
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_tunnel_requests_total", ok0 + 3,
                                    plane_type="dataplane", code="200", target="k8s")
            self.assertTrue(ws.open)
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    @staticmethod
    def chunks(s, n):
        size = -(-len(s) // n)
        return [s[i:i + size] for i in range(0, len(s), size)]

    def test_09_deep_json_nesting_is_dropped_as_invalid(self):
        async def run():
            ws = await self.agent()
            inputs = {
                "100000 [": "[" * 100000,
                "balanced 50000 []": "[" * 50000 + "]" * 50000,
                "30000 nested objects": '{"a":' * 30000 + "1" + "}" * 30000,
                "deep inside a response": '{"requestID":"x","statusCode":200,"headers":' + "[" * 100000,
            }
            for name, text in inputs.items():
                with self.subTest(name):
                    inv0 = await asyncio.to_thread(self.metric, "cluster_gateway_agent_frames_dropped_total", reason="invalid")
                    mark = self.log.mark()
                    await ws.send(text)
                    ev = await asyncio.to_thread(self.log.wait, "invalid frame from agent dropped", since=mark,
                                                 connectionID=ws.cid)
                    self.assertTrue(ev, name)
                    self.assertEqual(ev[0]["reason"], "JSON nested deeper than 64 levels")
                    await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_frames_dropped_total", inv0 + 1,
                                            reason="invalid")
                    self.assertIsNone(self.proc.poll(), "the gateway died")
            # The session survived all of it and still serves.
            status, body = await self.proxied(ws, lambda req: ws.send(tunnel_reply(req, body=b"still here")), "deep-after")
            self.assertEqual((status, body), (200, b"still here"))
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    def test_10_unknown_and_duplicate_request_ids_are_dropped(self):
        async def run():
            ws = await self.agent()
            unk0 = await asyncio.to_thread(self.metric, "cluster_gateway_agent_frames_dropped_total", reason="unknown_request")
            await ws.send(json.dumps({"requestID": "no-such-request", "statusCode": 200}))
            ev = await asyncio.to_thread(self.log.wait, "received HTTP tunnel response for unknown request",
                                         requestID="no-such-request", connectionID=ws.cid)
            self.assertTrue(ev)
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_frames_dropped_total", unk0 + 1,
                                    reason="unknown_request")
            hop = {}

            async def answer_twice(req):
                hop["id"] = req["requestID"]
                await ws.send(tunnel_reply(req, body=b"first"))
                await ws.send(tunnel_reply(req, status=500, body=b"duplicate"))
            status, body = await self.proxied(ws, answer_twice, "duplicate-reply")
            self.assertEqual((status, body), (200, b"first"))
            ev = await asyncio.to_thread(self.log.wait, "received HTTP tunnel response for unknown request",
                                         requestID=hop["id"], connectionID=ws.cid)
            self.assertTrue(ev, "the duplicate reply was not logged")
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_frames_dropped_total", unk0 + 2,
                                    reason="unknown_request")
            self.assertTrue(ws.open)
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    def test_11_a_reply_from_a_session_that_was_not_asked_is_dropped(self):
        async def run():
            a = await self.agent()
            b = await self.agent(expect=2)
            wrong0 = await asyncio.to_thread(self.metric, "cluster_gateway_agent_frames_dropped_total", reason="wrong_session")
            for attempt in range(2):  # round-robin: each of the two is asked once
                call = asyncio.ensure_future(asyncio.to_thread(self.proxy, "hostile", request_id=f"wrong-session-{attempt}"))
                ra, rb = asyncio.ensure_future(a.recv()), asyncio.ensure_future(b.recv())
                done, pending = await asyncio.wait({ra, rb}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
                self.assertTrue(done, "no agent received the request")
                for p in pending:
                    p.cancel()
                asked, other = (a, b) if ra in done else (b, a)
                req = json.loads((ra if ra in done else rb).result())
                mark = self.log.mark()
                await other.send(tunnel_reply(req, status=418, body=b"forged"))
                ev = await asyncio.to_thread(self.log.wait, "reply from a session that was not asked; dropped", since=mark,
                                             requestID=req["requestID"])
                self.assertTrue(ev)
                self.assertEqual((ev[0]["connectionID"], ev[0]["askedConnectionID"]), (other.cid, asked.cid))
                await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_frames_dropped_total",
                                        wrong0 + attempt + 1, reason="wrong_session")
                self.assertFalse(call.done(), "the forged reply answered the caller")
                await asked.send(tunnel_reply(req, body=b"genuine"))
                self.assertEqual(await asyncio.wait_for(call, 40), (200, b"genuine"))
            self.assertTrue(a.open and b.open)
            await a.close()
            await b.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # ---- an agent certificate on the internal port ---------------------------------------------
    def test_12_agent_certificate_on_the_internal_port_is_refused_in_the_handshake(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version.name):
                mark = self.log.mark()
                s = socket.create_connection(("127.0.0.1", self.internal_port), timeout=30)
                port = s.getsockname()[1]
                err = None
                try:
                    t = self.ssl_ctx("agent-a", max_version=version).wrap_socket(s, server_hostname="localhost")
                    # TLS 1.3: the client's side of the handshake ends before the server has checked
                    # the certificate; its alert arrives with the first read.
                    with t:
                        t.sendall(b"GET /api/v1/planes/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
                        data, how = read_until_closed(t, 30)
                        self.assertEqual(data, b"", "the internal API answered an agent certificate")
                        err = how
                except ssl.SSLError as e:
                    err = str(e)
                    s.close()
                self.assertIn("alert unknown ca", err.lower())
                ev = self.log.wait("internal API TLS handshake refused", since=mark, remote=f"127.0.0.1:{port}")
                self.assertTrue(ev)
                self.assertIn("certificate verify failed", ev[0]["reason"])
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): refusals on the internal port are not counted (gateway/internal_api.cpp
    # Conn::run() only logs). Expected a counter, e.g.
    # cluster_gateway_internal_handshakes_total{result="rejected",reason="tls_handshake_failed"}.
    # A running total would not do: test_12 raised it already. The refusal of this one connection
    # must move it by exactly one.
    def test_12b_internal_port_refusals_are_counted(self):
        m0 = self.metric("cluster_gateway_internal_handshakes_total", result="rejected")
        s = socket.create_connection(("127.0.0.1", self.internal_port), timeout=30)
        with self.assertRaises(ssl.SSLError):
            with self.ssl_ctx("agent-a", max_version=ssl.TLSVersion.TLSv1_2).wrap_socket(s, server_hostname="localhost"):
                pass
        s.close()
        self.wait_metric("cluster_gateway_internal_handshakes_total", m0 + 1, timeout=10, result="rejected")

class FloodAndMemoryTest(GatewayCase):
    """Bursts against a fresh gateway (so that the RSS baseline is not the previous cases' peak):
    500 full mTLS + WebSocket upgrades that leave, then 2000 half-open TCP connections."""

    def test_1_memory_returns_to_baseline_after_500_full_upgrades(self):
        async def burst(count, concurrency=10):
            sem = asyncio.Semaphore(concurrency)
            url = f"wss://localhost:{self.agent_port}/ws?planeID=hostile&planeType=dataplane"
            ctx = self.ssl_ctx("agent-a")

            async def one():
                async with sem:
                    ws = await websockets.connect(url, ssl=ctx, ping_interval=None, open_timeout=60, close_timeout=10)
                    await ws.close()
            await asyncio.gather(*(one() for _ in range(count)))

        asyncio.run(burst(50))  # warm-up: OpenSSL, allocator arenas, registry and status tracks
        self.wait_metric("cluster_gateway_agent_sessions", 0, plane_type="dataplane", plane_id="hostile")
        time.sleep(2.0)
        rss0 = proc_status_kib(self.pid)
        acc0 = self.metric(HANDSHAKES, result="accepted", reason="ok")
        mark = self.log.mark()
        t0 = time.monotonic()
        asyncio.run(burst(500))
        took = time.monotonic() - t0
        self.wait_metric(HANDSHAKES, acc0 + 500, result="accepted", reason="ok")
        self.wait_metric("cluster_gateway_agent_sessions", 0, timeout=30, plane_type="dataplane", plane_id="hostile")
        self.assertEqual(len(self.log.wait("agent disconnected", since=mark, count=500, timeout=30, planeID="hostile")), 500)
        time.sleep(3.0)
        rss1 = proc_status_kib(self.pid)
        print(f"\n  500 mTLS + WebSocket upgrades in {took:.1f}s; RSS {rss0} KiB -> {rss1} KiB", file=sys.stderr)
        # glibc's malloc keeps freed memory in its arenas (one per I/O thread) instead of returning
        # it to the kernel, and nothing calls malloc_trim, so RSS after a burst can stay above the
        # baseline by allocator slack. The bound is therefore generous (20 MiB, ~40 KiB per session
        # of the burst): it catches per-session state that is never freed, not slack.
        assert_rss_growth_below(self, rss0, rss1, 20 * 1024)
        self.assert_bystander_serves()

    def test_2_thousands_of_half_open_connections_are_closed_by_the_handshake_timeout(self):
        n = 2000
        m0 = self.metric(HANDSHAKES, result="rejected", reason="tls_handshake_failed")
        time.sleep(1.0)
        rss0 = proc_status_kib(self.pid)
        mark = self.log.mark()
        seen = {}

        async def meanwhile():
            # A good agent connects and serves while the 2000 are pending.
            ws = await self.agent()
            status, body = await self.proxied(ws, lambda req: ws.send(tunnel_reply(req, body=b"meanwhile")),
                                              "half-open-meanwhile")
            self.assertEqual((status, body), (200, b"meanwhile"))
            seen["agent_served"] = time.monotonic()
            seen["peak_rss"] = proc_status_kib(self.pid)
            return ws

        t0, closes = half_open_burst(self, n, meanwhile)  # also checks that the agent stayed connected
        self.assertEqual(len(closes), n, "not every half-open connection was closed")
        self.assertLess(seen["agent_served"], min(closes), "the good agent had to wait for the flood to clear")
        self.assertGreater(min(closes) - t0, HANDSHAKE_TIMEOUT - 1.0)
        self.wait_metric(HANDSHAKES, m0 + n, timeout=30, result="rejected", reason="tls_handshake_failed")
        timeouts = self.log.wait("agent TLS handshake failed", since=mark, count=n, reason=TIMED_OUT)
        self.assertEqual(len(timeouts), n)
        time.sleep(3.0)
        rss1 = proc_status_kib(self.pid)
        type(self).half_open_rss = (rss0, seen["peak_rss"], rss1)
        print(f"\n  {n} half-open: closed {min(closes) - t0:.1f}s to {max(closes) - t0:.1f}s after the first "
              f"connect; RSS {rss0} KiB -> {seen['peak_rss']} KiB (all open) -> {rss1} KiB", file=sys.stderr)
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): memory does not return to its baseline after a flood of half-open connections:
    # each pending TLS handshake costs ~87 KiB (asio's ssl::stream keeps two 17 KiB buffers, the
    # BIO pair two more, plus OpenSSL's SSL object and read buffer), and after 2000 of them time out
    # the RSS stays ~170 MiB above the baseline (later floods reuse it; it is free memory kept by
    # glibc's arenas: with GLIBC_TUNABLES mmap_threshold=4096 it goes back, see
    # HalfOpenLeakTest). Expected: RSS back within 20 MiB, e.g. by not creating the TLS stream
    # before the first byte arrives (socket.async_wait(wait_read) under the handshake deadline, in
    # gateway/agent_listener.cpp Handshake::run()), and/or malloc_trim(0) once a burst is over.
    def test_3_half_open_flood_memory_returns_to_baseline(self):
        rss0, _, rss1 = self.half_open_rss
        assert_rss_growth_below(self, rss0, rss1, 20 * 1024)


class HalfOpenLeakTest(GatewayCase):
    """The half-open flood again, with glibc told to mmap every allocation of 4 KiB or more and to
    trim at once (GLIBC_TUNABLES), so that freed per-connection buffers go back to the kernel and
    RSS after the flood measures what is still allocated: no leak of per-connection state."""
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=4096:glibc.malloc.trim_threshold=0")

    def test_half_open_flood_leaves_no_per_connection_state(self):
        n = 2000
        time.sleep(1.0)
        rss0 = proc_status_kib(self.pid)
        seen = {}

        async def meanwhile():
            await asyncio.sleep(1.0)
            seen["peak_rss"] = proc_status_kib(self.pid)
        t0, closes = half_open_burst(self, n, meanwhile)
        self.assertEqual(len(closes), n)
        time.sleep(3.0)
        rss1 = proc_status_kib(self.pid)
        print(f"\n  {n} half-open (mmap_threshold=4096): RSS {rss0} KiB -> {seen['peak_rss']} KiB -> {rss1} KiB",
              file=sys.stderr)
        # Peak is ~87 KiB per connection; a leak of the TLS stream would leave ~170 MiB. The bound
        # leaves room for pools that keep their peak (asio's reactor keeps descriptor states) and
        # for small-chunk fragmentation below the mmap threshold.
        assert_rss_growth_below(self, rss0, rss1, 20 * 1024)
        self.assert_bystander_serves()


def half_open_burst(case, n, meanwhile):
    """Opens `n` TCP connections to the agent port that send nothing, runs the coroutine function
    `meanwhile()` while they are pending (it may return a websockets connection, which must still
    be open once the gateway has closed every one of the `n`). Returns (t0, close times)."""
    socks = []
    t0 = time.monotonic()
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", case.agent_port), timeout=30)
            s.setblocking(False)
            socks.append(s)

        async def run():
            ws = await meanwhile()
            closes = await asyncio.to_thread(wait_all_closed, socks, HANDSHAKE_TIMEOUT + 60)
            if ws is not None:
                case.assertTrue(ws.open, "the good agent was dropped")
                await ws.close()
            return ws, closes
        ws, closes = asyncio.run(run())
    finally:
        for s in socks:
            s.close()
    return t0, closes


def wait_all_closed(socks, timeout):
    """Waits until the peer closed every socket (EOF or reset, never data); returns the close times."""
    closes = []
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                raise AssertionError(f"a half-open connection received {data[:32]!r}")
            sel.unregister(key.fileobj)
            closes.append(time.monotonic())
    sel.close()
    return closes


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FdExhaustionTest.FD_LIMIT, FdExhaustionTest.FD_LIMIT))


class FdExhaustionTest(GatewayCase):
    """The gateway runs with RLIMIT_NOFILE 64; more connections than that are opened (TCP only,
    kept open with a long handshake timeout so that the saturation lasts), then released.
    setUpClass runs the scenario once and records what it saw; each test checks one property."""
    FD_LIMIT = 64
    CONNECTIONS = 120
    extra_args = ("--handshake-timeout", "60s")
    preexec_fn = staticmethod(_low_fd_limit)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        obs = cls.obs = {}
        obs["fds_before"] = proc_fd_count(cls.pid)
        obs["metrics_before"] = cls.metrics()
        cls.mark = cls.log.mark()
        obs["t_mark"] = time.monotonic()
        socks = []
        try:
            for _ in range(cls.CONNECTIONS):
                socks.append(socket.create_connection(("127.0.0.1", cls.agent_port), timeout=30))
            obs["emfile_seen"] = bool(cls.log.wait("accept failed; pausing 100ms", since=cls.mark, timeout=20,
                                                   reason=lambda r: "Too many open files" in r))
            obs["fds_saturated"] = proc_fd_count(cls.pid)
            c0, t0 = proc_cpu_seconds(cls.pid), time.monotonic()
            time.sleep(3.0)
            obs["cpu_fraction"] = (proc_cpu_seconds(cls.pid) - c0) / (time.monotonic() - t0)
            obs["saturated_for"] = time.monotonic() - t0
            obs["accept_failures"] = cls.log.find("accept failed; pausing 100ms", since=cls.mark)
            obs["t_lines_read"] = time.monotonic()  # every line above was logged between t_mark and this
        finally:
            for s in socks:
                s.close()
        t_release = time.monotonic()

        async def connect_again():
            deadline = time.monotonic() + 60
            while True:
                try:
                    ws = await websockets.connect(
                        f"wss://localhost:{cls.agent_port}/ws?planeID=hostile&planeType=dataplane",
                        ssl=cls.ssl_ctx("agent-a"), ping_interval=None, open_timeout=20)
                    await ws.close()
                    return time.monotonic()
                except (OSError, asyncio.TimeoutError, websockets.InvalidStatusCode, websockets.InvalidHandshake):
                    if time.monotonic() > deadline:
                        return None
                    await asyncio.sleep(0.5)
        t_ok = asyncio.run(connect_again())
        obs["reaccept_after"] = None if t_ok is None else t_ok - t_release
        wait_for(lambda: proc_fd_count(cls.pid) <= obs["fds_before"] + 2, 30)
        obs["fds_after"] = proc_fd_count(cls.pid)
        obs["metrics_after"] = cls.metrics()
        obs["t_metrics_after"] = time.monotonic()
        # The bystander may have been dropped (see test_4); give it time to come back, then ask it.
        wait_for(lambda: cls.sessions("bystander") == 1, 30)
        try:
            obs["proxy_after"] = cls.proxy("bystander")
        except OSError as e:
            obs["proxy_after"] = (None, repr(e))
        print(f"\n  fd limit {cls.FD_LIMIT}: fds {obs['fds_before']} -> {obs['fds_saturated']} (saturated) -> "
              f"{obs['fds_after']}; CPU {obs['cpu_fraction']:.1%} of a core over {obs['saturated_for']:.1f}s; "
              f"{len(obs['accept_failures'])} 'accept failed' lines; accepting again "
              f"{obs['reaccept_after'] and round(obs['reaccept_after'], 2)}s after release", file=sys.stderr)

    def accept_errors(self, when):
        return metric_sum(self.obs[when], "cluster_gateway_accept_errors_total", listener="agent")

    # No busy loop: after a failed accept the listener pauses 100 ms, so it cannot fail more than
    # once per 100 ms of the time from the first connect to the scrape after the release (a loop
    # without the pause fails thousands of times a second). Counted, not timed: a slower machine
    # only fails less often. The CPU used meanwhile is printed (observed, not asserted: a
    # wall-clock figure belongs in bench/).
    def test_1_no_busy_loop_while_saturated(self):
        self.assertGreaterEqual(self.obs["fds_saturated"], self.FD_LIMIT - 2)
        failures = self.accept_errors("metrics_after") - self.accept_errors("metrics_before")
        span = self.obs["t_metrics_after"] - self.obs["t_mark"]
        self.assertGreater(failures, 0)
        self.assertLessEqual(failures, span / 0.1 + 1, f"{failures} failed accepts in {span:.1f}s")

    # Bug 6: the warn is logged at most once a second per listener, with the failures since the
    # previous line. Before the fix it was logged at every failure (10 lines a second: 30 in the
    # 3 s window), which the bound below refuses.
    def test_2_emfile_is_logged_at_a_bounded_rate(self):
        self.assertTrue(self.obs["emfile_seen"])
        ev = [e for e in self.obs["accept_failures"] if "Too many open files" in e["reason"]]
        self.assertTrue(ev)
        self.assertEqual({e["listener"] for e in ev}, {"agent"})  # nothing connected to the other ports
        window = self.obs["t_lines_read"] - self.obs["t_mark"]
        # Lines at least 1 s apart: at most floor(window) + 1 of them in the window.
        self.assertLessEqual(len(ev), int(window) + 1, f"{len(ev)} lines in {window:.1f}s")
        self.assertGreaterEqual(len(ev), 2, "saturated for 3 s, yet fewer than 2 lines")
        counts = [e["failuresSinceLastLog"] for e in ev]
        self.assertEqual(counts[0], 1)  # the first failure is logged at once
        # Between two lines (1 s) the listener retried about every 100 ms: each later line stands for
        # several failures, and the lines account for no more failures than the counter saw.
        self.assertTrue(all(c > 1 for c in counts[1:]), counts)
        self.assertLessEqual(sum(counts), self.accept_errors("metrics_after") - self.accept_errors("metrics_before"))

    def test_3_accepts_again_after_release(self):
        self.assertIsNotNone(self.obs["reaccept_after"], "no agent could connect after the release")
        self.assertLess(self.obs["reaccept_after"], 30)
        self.assertLessEqual(self.obs["fds_after"], self.obs["fds_before"] + 2)
        status, body = self.obs["proxy_after"]
        self.assertEqual(status, 200, body)
        self.assertIsNone(self.proc.poll())

    # Was a gateway bug (fixed; kept as a regression test): under EMFILE the file plane source reads an empty directory and drops every CR:
    # plane_index/file_source.cpp scan() treats `directory_iterator(dir_, ec)` failing (and an
    # `ifstream` that cannot open) as "no files", logs "plane file removed" and replaces the index
    # with an empty world, so every live session is revoked and closed with 1008 and the status
    # files are deleted; they come back when descriptors are free again. Expected: a scan error
    # (EMFILE, EACCES, ...) keeps the previous world and is logged ("plane directory scan failed"),
    # so the bystander keeps its session through the saturation.
    def test_4_bystander_keeps_its_session_through_saturation(self):
        self.assertEqual(self.log.find("plane file removed", since=self.mark), [])
        self.assert_bystander_serves()

    # Was a gateway bug (fixed; kept as a regression test): accept failures are not counted (gateway/acceptor.cpp logs "accept failed;
    # pausing 100ms" only). Expected a counter, e.g.
    # cluster_gateway_accept_errors_total{listener="agent",reason="emfile"}.
    def test_5_accept_failures_are_counted(self):
        self.assertGreater(metric_sum(self.obs["metrics_after"], "cluster_gateway_accept_errors_total", listener="agent"),
                           metric_sum(self.obs["metrics_before"], "cluster_gateway_accept_errors_total", listener="agent"))


if __name__ == "__main__":
    unittest.main()
