"""Against the real binary: the global session cap (--max-agent-sessions), a hot reload of the
internal API's client CA (cert-manager renewing the CA file in place, a broken renewal first), and a
plane file edited through a half-written state. Each checks the refusal or the reload, its log line
and metric, and that the agents already connected keep their very sessions and keep serving."""
import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
SIM = os.environ.get("CG_SIM_BIN", os.path.join(ROOT, "build", "bin", "cluster-agent-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import (LogLines, dev_pki_and_planes, gateway_cmd, metric_sum, raw_upgrade,  # noqa: E402
                          start_gateway, wait_for)
from gateway_proc import plane_yaml as _plane_yaml  # noqa: E402


def plane_yaml(name, plane_id, ca_b64):
    return _plane_yaml("ClusterDataPlane", name, plane_id, ca_b64)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class LimitsAndReloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-limits-")
        d = cls.tmp.name
        cls.pki, cls.planes, cls.ca_b64 = dev_pki_and_planes(ROOT, d, [("p1", "p1"), ("p2", "p2")], "ClusterDataPlane")
        # The internal CA the gateway reads is a copy, so the test can renew it in place.
        cls.internal_ca = os.path.join(d, "internal-ca.crt")
        with open(os.path.join(cls.pki, "internal-ca.crt"), "rb") as f, open(cls.internal_ca, "wb") as g:
            g.write(f.read())
        cls.log = LogLines()
        cls.proc, started = start_gateway(
            gateway_cmd(BIN, cls.pki, cls.planes, "--max-agent-sessions", "2", internal_ca=cls.internal_ca), log=cls.log)
        cls.agent_port, cls.health_port, cls.api_port = started["agentPort"], started["healthPort"], started["internalPort"]
        cls.sims = [cls.sim("p1"), cls.sim("p2")]
        ok = wait_for(lambda: len(cls.log.find("agent connected successfully")) >= 2, 20)
        if not ok:
            cls.tearDownClass()
            raise AssertionError("simulated agents did not connect")
        cls.caller = os.path.join(cls.pki, "controller")
        cls.first = {ev["planeID"]: ev["connectionID"] for ev in cls.log.find("agent connected successfully")}

    @classmethod
    def sim(cls, plane_id):
        return subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{cls.agent_port}/ws", "--plane-type", "dataplane",
             "--plane-id", plane_id, "--client-cert", os.path.join(cls.pki, "agent-a.crt"),
             "--client-key", os.path.join(cls.pki, "agent-a.key"),
             "--server-ca", os.path.join(cls.pki, "gateway-ca.crt"), "--reconnect-delay", "200ms",
             "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        for p in cls.sims:
            p.kill()
            p.wait()
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait()
        cls.tmp.cleanup()

    # ---- helpers ---------------------------------------------------------------------------------
    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return text

    def api_get(self, path, cert, key):
        """GET on the internal API with a client certificate; (status, body), or (None, reason) when
        the TLS handshake or the first read is refused."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(cert, key)
        c = http.client.HTTPSConnection("localhost", self.api_port, context=ctx, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        except (ssl.SSLError, ConnectionError, OSError) as e:
            return None, str(e)
        finally:
            c.close()

    caller = None  # the internal API caller's certificate path without extension (set in setUpClass)

    def pods(self, plane, caller=None):
        caller = caller or self.caller
        return self.api_get(f"/api/proxy/dataplane/{plane}/_cluster/{plane}/k8s/api/v1/namespaces/default/pods",
                            caller + ".crt", caller + ".key")

    def assert_first_sessions_kept(self):
        for plane, cid in self.first.items():
            self.assertFalse(self.log.find("agent disconnected", connectionID=cid), f"session of {plane} was closed")
            status, body = self.pods(plane)
            self.assertEqual(status, 200, body)
            self.assertIn("PodList", body)

    def raw_upgrade(self, plane):
        """A WebSocket upgrade request with the agent certificate; returns the raw HTTP answer."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki, "agent-a.crt"), os.path.join(self.pki, "agent-a.key"))
        return raw_upgrade(self.agent_port, ctx, f"/ws?planeID={plane}&planeType=dataplane").decode(errors="replace")

    # ---- tests -----------------------------------------------------------------------------------
    def test_1_session_cap_refuses_with_503(self):
        before = metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="sessions")
        mark = self.log.mark()
        answer = self.raw_upgrade("p1")
        self.assertTrue(answer.startswith("HTTP/1.1 503"), answer)
        self.assertTrue(answer.endswith("\r\n\r\ntoo many agent sessions on this gateway (limit 2)\n"), answer)
        ev = self.log.wait("agent connection rejected", since=mark, status=503, planeID="p1")
        self.assertTrue(ev)
        self.assertEqual(ev[0]["reason"], "too many agent sessions on this gateway (limit 2)")
        self.assertEqual(metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="sessions"),
                         before + 1)
        self.assert_first_sessions_kept()

    def test_2_internal_ca_reload_keeps_sessions(self):
        d = self.tmp.name
        old_ok = self.pods("p1")
        self.assertEqual(old_ok[0], 200, old_ok)
        # A broken renewal (half-written file) is refused: the previous CA stays in use.
        mark = self.log.mark()
        with open(os.path.join(self.pki, "internal-ca.crt")) as f:
            pem = f.read()
        with open(self.internal_ca, "w") as f:
            f.write(pem[: len(pem) // 2])
        ev = self.log.wait("TLS certificate reload failed; the previous certificates stay in use", since=mark,
                           timeout=15)
        self.assertTrue(ev, "a half-written CA file was not reported")
        self.assertEqual(self.pods("p1")[0], 200)
        # The renewal: a new internal CA and a caller certificate issued by it.
        new_ca, caller = os.path.join(d, "new-internal-ca"), os.path.join(d, "caller2")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
                "-subj", "/CN=renewed internal CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", new_ca + ".key", "-out", new_ca + ".crt")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=caller2",
                "-keyout", caller + ".key", "-out", caller + ".csr")
        with open(caller + ".ext", "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", caller + ".csr", "-CA", new_ca + ".crt", "-CAkey", new_ca + ".key",
                "-CAcreateserial", "-days", "30", "-extfile", caller + ".ext", "-out", caller + ".crt")
        refused_before = self.api_get("/api/v1/planes/status", caller + ".crt", caller + ".key")
        self.assertIsNone(refused_before[0], refused_before)
        reloads = metric_sum(self.metrics(), "cluster_gateway_tls_reloads_total", result="ok")
        mark = self.log.mark()
        with open(new_ca + ".crt", "rb") as f, open(self.internal_ca + ".tmp", "wb") as g:
            g.write(f.read())
        os.replace(self.internal_ca + ".tmp", self.internal_ca)
        self.assertTrue(self.log.wait("TLS certificates reloaded", since=mark, timeout=15))
        self.assertGreaterEqual(metric_sum(self.metrics(), "cluster_gateway_tls_reloads_total", result="ok"),
                                reloads + 1)
        status, body = self.pods("p1", caller)
        self.assertEqual(status, 200, body)
        self.assertIsNone(self.pods("p1", os.path.join(self.pki, "controller"))[0],
                          "a caller of the replaced CA is still accepted")
        type(self).caller = caller
        # Agents are untouched by an internal CA change.
        for plane, cid in self.first.items():
            self.assertFalse(self.log.find("agent disconnected", connectionID=cid), f"session of {plane} was closed")
        self.assert_first_sessions_kept()

    def test_3_half_written_plane_file_keeps_the_last_good_state(self):
        path = os.path.join(self.planes, "p2.yaml")
        full = plane_yaml("p2", "p2", self.ca_b64)
        mark = self.log.mark()
        # An editor writing in place: parts of the file (cut inside the CA value, which alone would be a
        # loadable CR without a usable CA, then inside the YAML structure), each for 0.2 s, shorter than
        # the file source's settle time (0.5 s): none of them is ever loaded.
        for cut in (full.index("value: ") + 7 + len(self.ca_b64) // 2, full.index("clusterAgent:") + 5, len(full)):
            with open(path, "w") as f:
                f.write(full[:cut])
            time.sleep(0.2)
        time.sleep(1.0)
        self.assertFalse(self.log.find(since=mark, file="p2.yaml"), "a transient state of the file was read")
        self.assertFalse(self.log.find("plane CR loaded without a usable client CA", since=mark))
        # A broken file that stays: rejected with its reason, the last good documents stay in force.
        with open(path, "w") as f:
            f.write(full[: full.index("clusterAgent:")] + "  clusterAgent: [unclosed\n")
        ev = self.log.wait("plane file rejected; its last good documents stay in force", since=mark, file="p2.yaml",
                           timeout=5)
        self.assertTrue(ev)
        self.assertIn("YAML syntax error", ev[0]["reason"])
        with open(path, "w") as f:
            f.write(full)
        time.sleep(1.0)
        self.assertFalse(self.log.find("plane file removed", since=mark))
        self.assertFalse(self.log.find("agent disconnected", since=mark), "a half-written plane file closed a session")
        self.assert_first_sessions_kept()
        status_file = os.path.join(self.planes, "status", "ClusterDataPlane._cluster.p2.json")
        with open(status_file) as f:
            st = json.load(f)
        self.assertTrue(st["agentConnection"]["connected"], st)

    def test_4_pipelined_requests_are_both_answered(self):
        """Two proxy requests sent back to back on one keep-alive connection (HTTP/1.1 pipelining): both
        are answered in order, without waiting for the caller to send anything more."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(self.caller + ".crt", self.caller + ".key")
        path = "/api/proxy/dataplane/p1/_cluster/p1/k8s/api/v1/namespaces/default/pods"
        req = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: pipe-%d\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.api_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(((req % 1) + (req % 2)).encode())
                data, answers = b"", []
                while len(answers) < 2:
                    head_end = data.find(b"\r\n\r\n")
                    if head_end >= 0:
                        head = data[:head_end].decode()
                        length = int(next(l.split(":", 1)[1] for l in head.split("\r\n")
                                          if l.lower().startswith("content-length:")))
                        if len(data) >= head_end + 4 + length:
                            answers.append((head.split("\r\n")[0], data[head_end + 4:head_end + 4 + length]))
                            data = data[head_end + 4 + length:]
                            continue
                    chunk = s.recv(65536)  # socket.timeout (10 s) fails the test if an answer never comes
                    self.assertTrue(chunk, f"connection closed after {len(answers)} answers")
                    data += chunk
        self.assertEqual([a[0] for a in answers], ["HTTP/1.1 200 OK"] * 2)
        self.assertTrue(all(b"PodList" in a[1] for a in answers))


class HandshakeAdmissionTest(unittest.TestCase):
    """--max-concurrent-handshakes 1: peers that start a TLS handshake and stall (slowloris) hold the
    only slot for at most a second each, so an honest agent behind them still gets its session."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-admission-")
        cls.pki, planes, _ = dev_pki_and_planes(ROOT, cls.tmp.name, [("p1", "p1")], "ClusterDataPlane")
        cls.log = LogLines()
        cls.proc, started = start_gateway(
            gateway_cmd(BIN, cls.pki, planes, "--max-concurrent-handshakes", "1", "--handshake-timeout", "30s",
                        "--log-level", "debug"), log=cls.log)
        cls.agent_port, cls.health_port = started["agentPort"], started["healthPort"]

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait()
        cls.tmp.cleanup()

    def test_stalled_handshakes_do_not_lock_out_an_agent(self):
        stalled = []
        try:
            for _ in range(5):  # each sends the first bytes of a ClientHello and then nothing
                s = socket.create_connection(("127.0.0.1", self.agent_port), timeout=10)
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                stalled.append(s)
            time.sleep(0.3)
            c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            c.close()
            self.assertIn("cluster_gateway_agent_handshakes_waiting", text)
            t0 = time.monotonic()

            async def connect():
                ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
                ctx.load_cert_chain(os.path.join(self.pki, "agent-a.crt"), os.path.join(self.pki, "agent-a.key"))
                ws = await websockets.connect(f"wss://localhost:{self.agent_port}/ws?planeID=p1&planeType=dataplane",
                                              ssl=ctx, open_timeout=25, ping_interval=None)
                await ws.close()
            asyncio.run(connect())
            waited = time.monotonic() - t0
            ev = self.log.wait("agent connected successfully", planeID="p1", timeout=5)
            self.assertTrue(ev, "the agent behind 5 stalled handshakes got no session")
            # The stalled peers are still open: they lost their slot, not their connection.
            for s in stalled:
                s.setblocking(False)
                try:
                    self.assertNotEqual(s.recv(1), b"", "a stalled peer was closed before its handshake timeout")
                except BlockingIOError:
                    pass
            self.assertLess(waited, 30, "the agent waited for the stalled peers' handshake timeout")
        finally:
            for s in stalled:
                s.close()


if __name__ == "__main__":
    unittest.main()
