"""Drives the real cluster-gateway binary with an independent client: Python `websockets` over
TLS with a client certificate from the openssl-generated dev PKI (scripts/dev-pki)."""
import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import raw_upgrade, start_gateway, wait_for  # noqa: E402


class PythonAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-py-")
        d = cls.tmp.name
        cls.pki = os.path.join(d, "pki")
        subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), cls.pki], check=True)
        cls.planes = os.path.join(d, "planes")
        os.makedirs(cls.planes)
        with open(os.path.join(cls.pki, "tenant-a-ca.crt"), "rb") as f:
            ca_b64 = base64.b64encode(f.read()).decode()
        with open(os.path.join(cls.planes, "py.yaml"), "w") as f:
            f.write(
                "apiVersion: openchoreo.dev/v1alpha1\nkind: ClusterWorkflowPlane\nmetadata:\n  name: py\n"
                "spec:\n  planeID: py-plane\n  clusterAgent:\n    clientCA:\n"
                f"      value: {ca_b64}\n"
            )
        cls.proc, started = start_gateway(
            [BIN, "--port", "0", "--health-port", "0", "--bind", "127.0.0.1", "--planes-dir", cls.planes,
             "--server-cert", os.path.join(cls.pki, "server.crt"), "--server-key", os.path.join(cls.pki, "server.key"),
             "--heartbeat-interval", "200ms", "--heartbeat-timeout", "2s", "--shutdown-timeout", "5s",
             "--startup-grace", "0s", "--internal-port", "0",
             "--internal-client-ca-cert", os.path.join(cls.pki, "internal-ca.crt")])
        cls.agent_port, cls.health_port = started["agentPort"], started["healthPort"]
        cls.status_file = os.path.join(cls.planes, "status", "ClusterWorkflowPlane._cluster.py.json")

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait()
        cls.tmp.cleanup()

    def ssl_ctx(self, cert, key):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki, cert), os.path.join(self.pki, key))
        return ctx

    def status(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def raw_get(self, target, cert, key):
        data = raw_upgrade(self.agent_port, self.ssl_ctx(cert, key), target)
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body.decode()

    def test_1_health_and_ready(self):
        for path in ("/health", "/ready"):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                self.assertEqual(r.status, 200)
                self.assertEqual(r.read(), b"OK")

    def test_2_rejections_have_upstream_bodies(self):
        status, body = self.raw_get("/ws?planeID=py-plane&planeType=workflowplane", "rogue-agent.crt", "rogue-agent.key")
        self.assertEqual(status, 401)
        self.assertEqual(body, "client certificate verification failed: certificate not valid for any CR with planeID 'py-plane'\n")
        status, body = self.raw_get("/ws?planeID=py-plane", "agent-a.crt", "agent-a.key")
        self.assertEqual((status, body), (400, "missing planeType parameter\n"))

    def raw_request(self, request, cert="agent-a.crt", key="agent-a.key"):
        """Sends `request` (bytes) to the agent port over TLS and returns (status, headers, body)."""
        import socket
        with socket.create_connection(("127.0.0.1", self.agent_port), timeout=10) as s:
            with self.ssl_ctx(cert, key).wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(request)
                data = b""
                while True:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split(" ")[1]), headers, body.decode()

    def test_2b_a_verified_agent_without_an_upgrade_gets_gorillas_answers(self):
        # Upstream's /ws handler hands verified requests to gorilla's Upgrader, which answers with the
        # status text and Sec-Websocket-Version: 13 (checks in its order: tokens, method, version, key).
        target = "/ws?planeID=py-plane&planeType=workflowplane"
        upgrade = ("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
        cases = {
            "plain GET": (f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "Bad Request\n"),
            "POST upgrade": (f"POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n{upgrade}\r\n", 405,
                             "Method Not Allowed\n"),
            "version 8": (f"GET {target} HTTP/1.1\r\nHost: localhost\r\n" + upgrade.replace("Version: 13", "Version: 8") + "\r\n",
                          400, "Bad Request\n"),
            "short key": (f"GET {target} HTTP/1.1\r\nHost: localhost\r\n" + upgrade.replace("dGhlIHNhbXBsZSBub25jZQ==", "abc") +
                          "\r\n", 400, "Bad Request\n"),
        }
        for name, (req, want_status, want_body) in cases.items():
            with self.subTest(name):
                status, headers, body = self.raw_request(req.encode())
                self.assertEqual((status, body), (want_status, want_body))
                self.assertEqual(headers.get("sec-websocket-version"), "13")
                self.assertEqual(headers.get("content-type"), "text/plain; charset=utf-8")

    def test_3_websockets_agent_connects_heartbeats_and_disconnects(self):
        async def run():
            url = f"wss://localhost:{self.agent_port}/ws?planeID=py-plane&planeType=workflowplane"
            async with websockets.connect(url, ssl=self.ssl_ctx("agent-a.crt", "agent-a.key"),
                                          ping_interval=None) as ws:
                st = await asyncio.to_thread(wait_for, lambda: (self.status() or {}).get("agentConnection", {}).get("connected"))
                self.assertTrue(st, "status never showed connected")
                s = self.status()
                self.assertEqual(s["agentConnection"]["connectedAgents"], 1)
                self.assertEqual(s["agentConnection"]["message"], "1 agent connected")
                # Stay connected for longer than the heartbeat timeout: websockets answers the pings.
                await asyncio.sleep(3.0)
                self.assertTrue(ws.open)
                self.assertTrue(self.status()["agentConnection"]["connected"])
                # A reply for a request the gateway never sent, and a frame that is not JSON, are
                # dropped (counted); the session survives them.
                dropped0 = {r: self.value(self.metrics(), "cluster_gateway_agent_frames_dropped_total", reason=r)
                            for r in ("unknown_request", "invalid")}
                await ws.send(json.dumps({"requestID": "unknown", "statusCode": 200}))
                await ws.send("not json")
                for r in ("unknown_request", "invalid"):
                    moved = await asyncio.to_thread(wait_for, lambda r=r: self.value(
                        self.metrics(), "cluster_gateway_agent_frames_dropped_total", reason=r) == dropped0[r] + 1)
                    self.assertTrue(moved, f"frames_dropped_total{{reason={r}}} did not move by 1")
                self.assertTrue(ws.open)
            done = await asyncio.to_thread(
                wait_for, lambda: (self.status() or {}).get("agentConnection", {}).get("connected") is False)
            self.assertTrue(done, "status never showed disconnected")
            self.assertIn("lastDisconnectedTime", self.status()["agentConnection"])
        asyncio.run(run())

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return r.read().decode()

    @staticmethod
    def value(text, name, **labels):
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, val = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(val)
        return 0.0

    def test_3b_metrics_pass_promtool_and_move_with_events(self):
        before = self.metrics()
        promtool = "/opt/cluster-gateway-tools/promtool"
        if os.path.exists(promtool):
            p = subprocess.run([promtool, "check", "metrics"], input=before, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        else:
            self.fail("promtool missing: scripts/bootstrap unpacks it to " + promtool)
        rejected0 = self.value(before, "cluster_gateway_agent_handshakes_total", result="rejected", reason="not_authorized")
        self.raw_get("/ws?planeID=py-plane&planeType=workflowplane", "rogue-agent.crt", "rogue-agent.key")
        after = self.metrics()
        self.assertEqual(self.value(after, "cluster_gateway_agent_handshakes_total", result="rejected",
                                    reason="not_authorized"), rejected0 + 1)
        self.assertGreater(self.value(after, "cluster_gateway_cr_verification_failures_total",
                                      plane_type="workflowplane", reason="unknown_authority"),
                           self.value(before, "cluster_gateway_cr_verification_failures_total",
                                      plane_type="workflowplane", reason="unknown_authority"))
        self.assertEqual(self.value(after, "cluster_gateway_build_info"), 1)

        # A session: its status is written (connected) and its pongs are timed (pings every 200 ms).
        writes0 = self.value(after, "cluster_gateway_status_writes_total", result="ok")
        rtt0 = self.value(after, "cluster_gateway_heartbeat_rtt_seconds_count")

        def moved(m):
            return (self.value(m, "cluster_gateway_status_writes_total", result="ok") > writes0 and
                    self.value(m, "cluster_gateway_heartbeat_rtt_seconds_count") > rtt0)

        async def connected_view():
            url = f"wss://localhost:{self.agent_port}/ws?planeID=py-plane&planeType=workflowplane"
            async with websockets.connect(url, ssl=self.ssl_ctx("agent-a.crt", "agent-a.key"), ping_interval=None):
                ok = await asyncio.to_thread(wait_for, lambda: moved(self.metrics()))
                return ok, self.metrics()
        ok, during = asyncio.run(connected_view())
        self.assertTrue(ok, "no status write or no heartbeat round trip while the agent was connected")
        self.assertEqual(self.value(during, "cluster_gateway_agent_sessions", plane_type="workflowplane",
                                    plane_id="py-plane"), 1)
        self.assertGreater(self.value(during, "cluster_gateway_agent_certificate_expiry_seconds"), 86400)
        self.assertTrue(wait_for(lambda: self.value(self.metrics(), "cluster_gateway_agent_sessions",
                                                    plane_type="workflowplane", plane_id="py-plane") == 0))

    def test_4_sigterm_exits_cleanly_and_writes_disconnected(self):
        async def connect_then_term():
            url = f"wss://localhost:{self.agent_port}/ws?planeID=py-plane&planeType=workflowplane"
            ws = await websockets.connect(url, ssl=self.ssl_ctx("agent-a.crt", "agent-a.key"), ping_interval=None)
            # Registered (not just upgraded) before the signal: the status file may still be stale.
            await asyncio.to_thread(wait_for, lambda: self.value(self.metrics(), "cluster_gateway_agent_sessions",
                                                                 plane_type="workflowplane", plane_id="py-plane") == 1)
            self.proc.send_signal(signal.SIGTERM)
            first = await asyncio.wait_for(ws.recv(), 10)
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            except asyncio.TimeoutError:
                pass
            return json.loads(first), ws.close_code
        goaway, code = asyncio.run(connect_then_term())
        self.assertEqual(goaway, {"type": "goaway", "reason": "gateway draining"})
        self.assertEqual(code, 1001)
        self.assertEqual(self.proc.wait(timeout=10), 0)
        self.assertFalse(self.status()["agentConnection"]["connected"])


if __name__ == "__main__":
    unittest.main()
