"""Rows of docs/compatibility.md that had no test (issue 16), checked against the real binary with
upstream's answers: status, body bytes and content type as upstream's Go code sends them
(`http.Error`: `text/plain; charset=utf-8`, the text plus a newline). Upstream source: openchoreo at
ad3f5030, internal/cluster-gateway/{server,validator,connection_manager,exec}.go.

One gateway per class (GatewayCase of tests/gateway/test_hostile.py: planes `bystander` with
cluster-agent-sim and `hostile` for Python agents), started with SKIP_CLIENT_CERT_VERIFY=true in
its environment and --heartbeat-timeout 3s."""
import asyncio
import json
import os
import re
import socket
import ssl
import unittest
import urllib.error
import urllib.request

import websockets

from test_hostile import GatewayCase, parse_http, setUpModule, tearDownModule, tunnel_reply  # noqa: F401 (fixtures)
from test_hostile_callers import UPGRADE, read_response
from gateway_proc import wait_for  # noqa: E402 (on sys.path once test_hostile is imported)

TEXT = "text/plain; charset=utf-8"
GW_ID = re.compile(r"^gw-[0-9a-f]{16}$")
HOSTILE = "dataplane/hostile/_cluster/hostile"
HEARTBEAT_TIMEOUT = 3.0


def ws_frame(opcode, payload=b""):
    """One masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawAgent:
    """A WebSocket agent on a raw TLS socket: it sees every frame the gateway sends (pings included)
    and answers nothing unless told."""

    def __init__(self, sock, rest):
        self.sock, self.buf = sock, rest

    def _parse(self):
        """One whole frame from the buffer (consumed), or None when more bytes are needed."""
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = int.from_bytes(b[2:10], "big"), 10
        mask = None
        if b[1] & 0x80:
            if len(b) < at + 4:
                return None
            mask, at = b[at:at + 4], at + 4
        if len(b) < at + n:
            return None
        payload, self.buf = b[at:at + n], b[at + n:]
        if mask:
            payload = bytes(x ^ mask[i % 4] for i, x in enumerate(payload))
        return bool(b[0] & 0x80), bool(b[1] & 0x80), b[0] & 0x0F, payload

    def read_frame(self, timeout):
        """(fin, masked, opcode, payload); False when none came within `timeout`; None once the
        gateway closed the connection."""
        self.sock.settimeout(timeout)
        while True:
            f = self._parse()
            if f:
                return f
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def send(self, opcode, payload=b""):
        self.sock.sendall(ws_frame(opcode, payload))


class CompatRowsTest(GatewayCase):
    extra_args = ("--heartbeat-timeout", f"{HEARTBEAT_TIMEOUT:g}s")
    env = dict(os.environ, SKIP_CLIENT_CERT_VERIFY="true")

    # ---- helpers ---------------------------------------------------------------------------------
    def internal(self, request, timeout=30):
        """Raw bytes to the internal port (controller certificate); returns (status, headers, body)."""
        t = self.tls_connect(port=self.internal_port, cert="controller")
        with t:
            t.sendall(request)
            data, how = read_response(t, timeout)
        self.assertEqual(how, "response", data)
        return parse_http(data)

    def assert_text(self, answer, status, text):
        got_status, headers, body = answer
        self.assertEqual((got_status, body), (status, text.encode() + b"\n"))
        self.assertEqual(headers.get("content-type"), TEXT)

    def raw_agent(self, cert="agent-a", target="/ws?planeID=hostile&planeType=dataplane"):
        t = self.tls_connect(cert=cert)
        t.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n".encode() + UPGRADE + b"\r\n")
        t.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = t.recv(65536)
            self.assertTrue(chunk, f"closed during the upgrade: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        return RawAgent(t, rest)

    def raw_agent_answer(self, target, cert="agent-a"):
        t = self.tls_connect(cert=cert)
        with t:
            t.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n".encode() + UPGRADE + b"\r\n")
            data, _ = read_response(t, 30)
        return parse_http(data)

    # ---- listeners and flags ---------------------------------------------------------------------
    def test_health_paths(self):
        """Upstream's /health and /ready: 200 `OK` (Go sniffs text/plain); /healthz and /readyz are the
        same answers; anything else is Go's 404 text."""
        for path in ("/health", "/ready", "/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=10) as r:
                self.assertEqual((r.status, r.read(), r.headers["Content-Type"]), (200, b"OK", TEXT), path)
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/nothing", timeout=10)
        self.assertEqual((e.exception.code, e.exception.read()), (404, b"404 page not found\n"))

    def test_skip_client_cert_verify_warns_and_has_no_effect(self):
        """SKIP_CLIENT_CERT_VERIFY=true (upstream's env for --skip-client-cert-verify) is parsed, logged
        as a configuration warning, and agents are still verified per CR."""
        self.assertTrue(self.log.find("configuration warning",
                                      reason="--skip-client-cert-verify is deprecated and has no effect"))
        # A certificate of tenant B's CA on tenant A's plane: 401 as without the flag.
        self.assert_text(self.raw_agent_answer("/ws?planeID=hostile&planeType=dataplane", cert="agent-b"), 401,
                         "client certificate verification failed: certificate not valid for any CR with planeID 'hostile'")

    def test_malformed_request_target(self):
        """A request target that is not origin-form: 400 `malformed request target` on both HTTPS
        listeners (Go's server answers 400 too, with its own text)."""
        self.assert_text(self.raw_agent_answer("/ws?planeID=%zz&planeType=dataplane"), 400, "malformed request target")
        self.assert_text(self.internal(b"GET /api/v1/planes/%zz/x/status HTTP/1.1\r\nHost: localhost\r\n"
                                       b"Connection: close\r\n\r\n"), 400, "malformed request target")
        self.assert_bystander_serves()

    # ---- internal API: proxy -------------------------------------------------------------------
    def test_validation_order_with_two_faults(self):
        """Two faults in one proxy request get the answer of upstream's code order (URL 400, 405, target
        403, deny-list 403, declared size 413, `..` 400, NUL 400), including for a NUL byte, which the
        gateway judges among its path forms (tests/gateway/proxy_rules_test.cpp keeps the other forms
        before the deny-list; docs/compatibility.md lists where that differs from upstream)."""
        prefix = "/api/proxy/" + HOSTILE
        big = 10 * 1024 * 1024 + 1

        def req(method, path, length=None):
            extra = f"Content-Length: {length}\r\n" if length is not None else ""
            return self.internal(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n".encode())
        too_large = f"Request body too large: {big} bytes (max: 10485760)"
        cases = [
            # (method, path, declared length, status, body): upstream's answer
            ("TRACE", "/api/proxy/dataplane/hostile", None, 400,
             "invalid proxy URL format: /api/proxy/{planeType}/{planeID}/{namespace}/{crName}/{target}/{path}"),
            ("TRACE", prefix + "/shell/api/v1/namespaces/kube-system/secrets", None, 405, "HTTP method not allowed: TRACE"),
            ("GET", prefix + "/shell/api/v1/namespaces/kube-system/secrets", big, 403, "Target not allowed: shell"),
            ("POST", prefix + "/k8s/api/v1/namespaces/kube-system/secrets", big, 403,
             "Access to path is blocked: /api/v1/namespaces/kube-system/secrets"),
            ("POST", prefix + "/k8s/api/v1/namespaces/d/pods/a..b", big, 413, too_large),
            ("GET", prefix + "/k8s/api/v1/namespaces/kube-system/secrets/a..b", None, 403,
             "Access to path is blocked: /api/v1/namespaces/kube-system/secrets/a..b"),
            # NUL with another fault: upstream checks NUL last.
            ("GET", prefix + "/k8s/api/v1/namespaces/kube-system/secrets/x%00", None, 403,
             "Access to path is blocked: /api/v1/namespaces/kube-system/secrets/x\x00"),
            ("POST", prefix + "/k8s/api/v1/namespaces/d/pods/x%00", big, 413, too_large),
            ("GET", prefix + "/k8s/api/v1/namespaces/d/pods/a..b%00", None, 400, "Path contains directory traversal"),
            ("GET", prefix + "/k8s/api/v1/namespaces/d/pods/x%3F%00", None, 400, "Path contains null bytes"),
            # A watch is judged before it is streamed (upstream: validator before isStreamingRequest).
            ("GET", prefix + "/k8s/api/v1/namespaces/kube-system/secrets?watch=true", None, 403,
             "Access to path is blocked: /api/v1/namespaces/kube-system/secrets"),
        ]
        for method, path, length, status, body in cases:
            with self.subTest(f"{method} {path} {length}"):
                self.assert_text(req(method, path, length), status, body)
        # Two faults where the gateway's own path forms come first (upstream passes these forms):
        # the 400 of the form, where upstream answers 403 / 413 (docs/compatibility.md, "Validation order").
        self.assert_text(req("GET", prefix + "/k8s/api/v1/namespaces/kube-system/secrets%3F"), 400,
                         "Path contains '?' after decoding (%3F); the agent would start a query string there")
        self.assert_text(req("POST", prefix + "/k8s/api/v1/namespaces/d/pods%0A", big), 400,
                         "Path contains a control character")
        self.assert_bystander_serves()

    def test_reused_request_id_and_malformed_agent_response(self):
        """The caller's X-Request-ID is the hop's gatewayRequestID and the hop's requestID a UUIDv4; an
        agent reply whose body is not base64 is a 502 `malformed response from agent` at once (upstream
        drops it and the caller waits for the timeout: Better)."""
        async def run():
            ws = await self.agent()
            call = asyncio.ensure_future(asyncio.to_thread(self.proxy, "hostile", request_id="trace-compat-1"))
            req = json.loads(await asyncio.wait_for(ws.recv(), 30))
            self.assertEqual(req["gatewayRequestID"], "trace-compat-1")
            self.assertRegex(req["requestID"], r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            await ws.send(json.dumps({"requestID": req["requestID"], "statusCode": 200, "headers": {},
                                      "body": "!!! not base64 !!!"}))
            status, body = await asyncio.wait_for(call, 40)
            self.assertEqual(status, 502)
            self.assertTrue(body.startswith(b"proxy request failed: malformed response from agent: "), body)
            self.assertTrue(body.endswith(b"\n"))
            self.assertTrue(ws.open)
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    def test_caller_leaving_is_499_and_the_late_reply_is_dropped(self):
        """A caller that hangs up: the request counts as 499, the agent is not told, its late reply is
        dropped as for an unknown request, and its session keeps serving."""
        async def run():
            ws = await self.agent()
            n499 = await asyncio.to_thread(self.metric, "cluster_gateway_tunnel_requests_total",
                                           plane_type="dataplane", code="499")
            t = self.tls_connect(port=self.internal_port, cert="controller")
            t.sendall(f"GET /api/proxy/{HOSTILE}/k8s/api/v1/namespaces/default/pods HTTP/1.1\r\nHost: localhost\r\n"
                      "X-Request-ID: leaving-caller\r\n\r\n".encode())
            req = json.loads(await asyncio.wait_for(ws.recv(), 30))
            self.assertEqual(req["gatewayRequestID"], "leaving-caller")
            t.close()
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_tunnel_requests_total", n499 + 1,
                                    plane_type="dataplane", code="499")
            mark = self.log.mark()
            await ws.send(tunnel_reply(req, body=b"late"))
            dropped = await asyncio.to_thread(self.log.wait, "received HTTP tunnel response for unknown request",
                                              since=mark, timeout=20)
            self.assertTrue(dropped, "the late reply was not dropped as unknown")
            # No message about the cancelled request reached the agent; the session still serves.
            status, body = await self.proxied(ws, lambda r: ws.send(tunnel_reply(r, body=b"next")), "after-leave")
            self.assertEqual((status, body), (200, b"next"))
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # ---- plane lifecycle -----------------------------------------------------------------------
    def test_reconnect_and_notify_deleted_close_1001(self):
        """POST …/reconnect and notify `deleted` close every session of the plane with a close frame
        1001 (`reconnect requested`, `plane CR deleted`). Upstream closes the TCP connection without a
        close frame (connection_manager.go DisconnectAllForPlane: conn.Conn.Close()); upstream's agent
        reconnects either way. The answers' JSON is upstream's."""
        def post(path, body=b""):
            return self.internal(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

        async def run(trigger, reason, want):
            ws = await self.agent()
            status, headers, body = await asyncio.to_thread(trigger)
            self.assertEqual(status, 200, body)
            self.assertEqual(headers.get("content-type"), "application/json")
            self.assertEqual(json.loads(body), want)
            await asyncio.wait_for(ws.wait_closed(), 20)
            self.assertEqual((ws.close_code, ws.close_reason), (1001, reason))
        asyncio.run(run(lambda: post("/api/v1/planes/dataplane/hostile/reconnect"), "reconnect requested",
                        {"success": True, "disconnectedAgents": 1}))
        self.wait_metric("cluster_gateway_agent_sessions", 0, plane_type="dataplane", plane_id="hostile")
        note = json.dumps({"planeType": "dataplane", "planeID": "hostile", "event": "deleted", "namespace": "",
                           "name": "hostile"}).encode()
        asyncio.run(run(lambda: post("/api/v1/planes/notify", note), "plane CR deleted",
                        {"success": True, "action": "disconnect", "disconnectedAgents": 1}))
        self.assert_bystander_serves()

    # ---- exec and wirelogs ---------------------------------------------------------------------
    def test_exec_and_wirelogs_refusal_texts(self):
        """upstream's exec.go and wirelogs.go `http.Error` texts with their content type; wirelogs
        takes any method (no 405), exec's non-upgrade answers are gorilla's."""
        def get(method, path, extra=b""):
            return self.internal(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + extra +
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.assert_text(get("GET", "/api/exec/dataplane/hostile/_cluster"), 400,
                         "invalid exec URL: expected /api/exec/{planeType}/{planeID}/{crNamespace}/{crName}")
        self.assert_text(get("GET", "/api/exec/" + HOSTILE + "?podName=x"), 400,
                         "podNamespace and podName query parameters are required")
        self.assert_text(get("GET", "/api/exec/dataplane/nope/_cluster/nope?podNamespace=a&podName=b"), 503,
                         "no agent available: no agents found for plane dataplane/nope")
        status, headers, body = get("POST", "/api/exec/dataplane/bystander/_cluster/bystander?podNamespace=a&podName=b",
                                    UPGRADE)
        self.assertEqual((status, body, headers.get("sec-websocket-version")), (405, b"Method Not Allowed\n", "13"))
        status, headers, body = get("GET", "/api/exec/dataplane/bystander/_cluster/bystander?podNamespace=a&podName=b")
        self.assertEqual((status, body, headers.get("sec-websocket-version")), (400, b"Bad Request\n", "13"))
        for method in ("GET", "POST", "DELETE"):
            with self.subTest(method):
                self.assert_text(get(method, "/api/wirelogs/dataplane/hostile/x"), 400,
                                 "invalid wirelogs URL: expected /api/wirelogs/{planeType}/{planeID}/{crNamespace}/{crName}")
                self.assert_text(get(method, "/api/wirelogs/" + HOSTILE + "?namespace=shop"), 400,
                                 "environment and namespace query parameters are required")
                self.assert_text(get(method, "/api/wirelogs/dataplane/nope/_cluster/nope?environment=d&namespace=n"), 503,
                                 "no agent available: no agents found for plane dataplane/nope")

    def test_exec_with_a_reused_request_id(self):
        """Exec's StreamInit requestID is the caller's X-Request-ID; a second exec with the same id while
        the first is open gets a fresh gw- id, the original in gatewayRequestID. When each caller leaves,
        the agent gets upstream's close chunk for that stream."""
        request = (b"GET /api/exec/" + HOSTILE.encode() + b"?podNamespace=default&podName=web-1&command=sh HTTP/1.1\r\n"
                   b"Host: localhost\r\n" + UPGRADE + b"X-Request-ID: exec-compat\r\n\r\n")

        async def run():
            ws = await self.agent()
            callers, inits = [], []
            for _ in range(2):
                c = self.tls_connect(port=self.internal_port, cert="controller")
                callers.append(c)
                c.sendall(request)
                inits.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                c.settimeout(30)
                self.assertTrue(c.recv(65536).startswith(b"HTTP/1.1 101 "))
            self.assertEqual(inits[0]["requestID"], "exec-compat")
            self.assertTrue(inits[0]["isUpgrade"])
            self.assertEqual(inits[0]["upgradeProto"], "SPDY/3.1")
            self.assertRegex(inits[1]["requestID"], GW_ID)
            self.assertEqual(inits[1]["gatewayRequestID"], "exec-compat")
            for c, init in zip(callers, inits):
                c.close()
                close = json.loads(await asyncio.wait_for(ws.recv(), 30))
                self.assertEqual(close, {"requestID": init["requestID"], "data": None, "isClose": True})
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # ---- heartbeats ------------------------------------------------------------------------------
    def test_ping_payload_and_deadline(self):
        """Pings carry an empty payload (unmasked, FIN). The deadline moves only with pongs: an agent that
        sends data frames but never a pong is dropped after --heartbeat-timeout, its socket closed
        without a close frame (upstream: the read deadline expires, conn.Close()); an agent that answers
        pings (the websockets library) and was connected earlier stays."""
        async def run():
            keeper = await self.agent()
            mark = self.log.mark()
            raw = await asyncio.to_thread(self.raw_agent)
            await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions", 2,
                                    plane_type="dataplane", plane_id="hostile")
            # The log is read from the gateway's stdout by a thread: wait for the line, do not just look.
            ev = await asyncio.to_thread(self.log.wait, "agent connected successfully", since=mark,
                                         remote=f"127.0.0.1:{raw.sock.getsockname()[1]}", timeout=20)
            self.assertEqual(len(ev), 1)
            conn = ev[0]["connectionID"]
            frames = []
            for _ in range(int((HEARTBEAT_TIMEOUT + 20) / 0.5)):  # bounded: fails below if never closed
                # A data frame the gateway reads (a reply for no request: dropped) before each read.
                try:
                    raw.send(0x1, json.dumps({"requestID": "nothing", "statusCode": 200}).encode())
                except OSError:
                    break  # the gateway closed the connection
                f = await asyncio.to_thread(raw.read_frame, 0.5)
                if f is None:
                    break
                if f:
                    frames.append(f)
            else:
                self.fail("the gateway never closed an agent that sends no pongs")
            raw.sock.close()
            return keeper, conn, frames

        async def main():
            keeper, conn, frames = await run()
            pings = [f for f in frames if f[2] == 0x9]
            self.assertTrue(pings, f"no ping among {frames}")
            self.assertTrue(all(f == (True, False, 0x9, b"") for f in pings), pings)
            self.assertFalse([f for f in frames if f[2] == 0x8], "a close frame was sent")
            ev = self.log.wait("agent heartbeat timeout", connectionID=conn, timeout=20)
            self.assertEqual(len(ev), 1, "not closed by the heartbeat deadline")
            self.assertEqual(ev[0].get("timeout"), f"{HEARTBEAT_TIMEOUT:g}s")
            self.assertTrue(keeper.open, "the agent answering pings was dropped")
            await keeper.close()
        asyncio.run(main())
        self.assert_bystander_serves()


if __name__ == "__main__":
    unittest.main()
