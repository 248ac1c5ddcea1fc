"""The gateway against agents as rude as real peers (issue 16, "Fakes as rude as real peers"), all of
them cluster-agent-sim processes in one of their rude modes (tests/fakes/agent_sim/README.md):

  - malformed replies (--reply-fault: bad base64, statusCode as a string, a body on 204, CR/LF in a
    header value or name): the caller gets 502 `proxy request failed: malformed response from agent:
    <reason>`, the gateway logs the reason and counts frames_dropped{reason="malformed_response"},
    and the same session goes on answering the paths the fault does not cover;
  - late replies (--reply-delay beyond --request-timeout): 502 `HTTP tunnel request timeout`, then the
    late reply is dropped as `unknown_request`; a caller that leaves first is counted as 499 and the
    late reply is dropped the same way;
  - a stopped reader (--stop-reading after-first-request) with the gateway's writes stuck in full
    socket buffers: the heartbeat timeout ends the session, every waiting caller gets 502 at once;
  - an agent overrunning the stream credit (--stream-overrun): the stream ends with `agent exceeded
    the stream's flow-control window`, the chunk is not delivered, the session lives on;
  - one certificate per simulated agent (--client-ca-cert/--client-ca-key): each one is verified
    (cache misses, no hits), where agents sharing one certificate hit the verification cache;
  - an agent that ignores the close frame and never closes its socket (--close-mode silent; the
    causes themselves are in test_close_causes.py): a request waiting on it fails at once with 502
    when the gateway closes the session, and the agent's next connection serves.

In every case a bystander agent (plane `bystander`, connected before) keeps its session and answers,
and the gateway process is alive."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
SIM = os.environ.get("CG_SIM_BIN", os.path.join(ROOT, "build", "bin", "cluster-agent-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import LogLines, dev_pki_and_planes, gateway_cmd, metric_sum, start_gateway, wait_for  # noqa: E402
from test_close_causes import tcp_socket  # noqa: E402

PODS = "/api/v1/namespaces/default/pods"
REQUEST_TIMEOUT = 8.0    # the gateway's --request-timeout
HB_TIMEOUT = 3.0         # the gateway's --heartbeat-timeout (interval 1 s): shorter than REQUEST_TIMEOUT
LATE = 10.0              # the late agent's --reply-delay: longer than REQUEST_TIMEOUT
DROPPED = "cluster_gateway_agent_frames_dropped_total"
REQUESTS = "cluster_gateway_tunnel_requests_total"
MALFORMED = "proxy request failed: malformed response from agent: "
CLOSED_BEFORE = "proxy request failed: agent connection closed before responding\n"
NO_AGENTS = "proxy request failed: no agents found for plane dataplane/%s\n"
SEND_CLOSING = "proxy request failed: failed to send HTTP tunnel request: agent connection is closing\n"
# --reply-fault mode -> the reason the gateway gives (session/tunnel.cpp decode_tunnel_response).
FAULTS = {
    "bad-base64": "body is not valid base64",
    "wrong-types": "statusCode missing or not an HTTP status",
    "body-on-204": "status 204 must not carry a body",
    "crlf-header": "response header X-Sim has a control character (CR, LF, NUL) in its value",
    "crlf-header-name": "response header name is not an HTTP token",
}
PLANES = ["bystander", "late", "left", "stopped", "overrun", "certs", "certdir", "shared", "silent"] + [f"f-{m}" for m in FAULTS]


class Sim:
    """One cluster-agent-sim process on `plane` with a tenant-A certificate; `extra` flags appended.
    Its JSON log is kept in memory."""

    def __init__(self, case, plane, *extra, count=1, level="info"):
        pki = case.pki
        self.log = LogLines()
        self.proc = subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{case.agent_port}/ws", "--plane-type", "dataplane",
             "--plane-id", plane, "--client-cert", os.path.join(pki, "agent-a.crt"),
             "--client-key", os.path.join(pki, "agent-a.key"), "--server-ca", os.path.join(pki, "gateway-ca.crt"),
             "--reconnect-delay", "2s", "--count", str(count), "--log-level", level, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def pump():
            for line in self.proc.stdout:
                self.log.write(line)
        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.pump.join(10)
        self.proc.stdout.close()


class RudeAgentTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-rude-")
        cls.addClassCleanup(cls.tmp.cleanup)
        d = cls.tmp.name
        cls.pki, cls.planes, _ = dev_pki_and_planes(ROOT, d, [(p, p) for p in PLANES], "ClusterDataPlane")
        cls.log_file = open(os.path.join(d, "gateway.log"), "w")
        cls.addClassCleanup(cls.log_file.close)
        cls.log = LogLines(echo=cls.log_file)
        cmd = gateway_cmd(BIN, cls.pki, cls.planes, "--heartbeat-interval", "1s", "--heartbeat-timeout", f"{HB_TIMEOUT:g}s",
                          "--request-timeout", f"{REQUEST_TIMEOUT:g}s", "--io-threads", "2")
        cls.proc, started = start_gateway(cmd, log=cls.log)
        cls.addClassCleanup(cls._stop_gateway)
        cls.agent_port, cls.health_port, cls.api_port = started["agentPort"], started["healthPort"], started["internalPort"]
        cls.bystander = Sim(cls, "bystander")
        cls.addClassCleanup(cls.bystander.stop)
        ev = cls.log.wait("agent connected successfully", planeID="bystander", timeout=30)
        if not ev or not wait_for(lambda: cls.sessions("bystander") == 1, 20):
            raise AssertionError("the bystander agent did not connect")
        cls.bystander_id = ev[0]["connectionID"]

    @classmethod
    def _stop_gateway(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait()

    def setUp(self):
        self.sims = []

    def tearDown(self):
        for s in self.sims:
            s.stop()

    # ---- helpers -----------------------------------------------------------------------------------
    @classmethod
    def metrics(cls):
        with urllib.request.urlopen(f"http://127.0.0.1:{cls.health_port}/metrics", timeout=30) as r:
            return r.read().decode()

    @classmethod
    def metric(cls, name, **labels):
        return metric_sum(cls.metrics(), name, **labels)

    @classmethod
    def sessions(cls, plane):
        return cls.metric("cluster_gateway_agent_sessions", plane_type="dataplane", plane_id=plane)

    def wait_metric(self, name, value, timeout=20, **labels):
        got = wait_for(lambda: self.metric(name, **labels) == value, timeout, 0.1)
        self.assertTrue(got, f"{name}{labels} is {self.metric(name, **labels)}, expected {value}")

    def ssl_ctx(self):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki, "controller.crt"), os.path.join(self.pki, "controller.key"))
        return ctx

    def call(self, method, path, body=None, headers=None, timeout=40):
        """A request on the internal API as a control-plane caller; returns (status, headers, body)."""
        c = http.client.HTTPSConnection("localhost", self.api_port, context=self.ssl_ctx(), timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def proxy(self, plane, path=PODS, request_id=None, method="GET", body=None):
        headers = {"X-Request-ID": request_id} if request_id else {}
        return self.call(method, f"/api/proxy/dataplane/{plane}/_cluster/{plane}/k8s{path}", body, headers)

    def sim(self, plane, *extra, count=1, level="info"):
        """Starts a rude agent (or `count`) on `plane` and waits until every one is registered; returns
        the Sim with `cids`, the gateway's connectionIDs of its sessions."""
        mark = self.log.mark()
        s = Sim(self, plane, *extra, count=count, level=level)
        self.sims.append(s)
        ev = self.log.wait("agent connected successfully", since=mark, planeID=plane, count=count, timeout=30)
        self.assertEqual(len(ev), count, f"{plane}: {len(ev)} of {count} agents connected")
        self.assertTrue(wait_for(lambda: self.sessions(plane) == count, 20), f"{plane}: sessions {self.sessions(plane)}")
        s.connected = ev
        s.cids = [e["connectionID"] for e in ev]
        return s

    def assert_session_kept(self, plane, cids):
        """The rude agent's sessions were not closed for it."""
        self.assertEqual([e for e in self.log.find("agent disconnected", planeID=plane) if e.get("connectionID") in cids], [])

    def assert_bystander_serves(self):
        self.assertIsNone(self.proc.poll(), "the gateway exited")
        status, _, body = self.proxy("bystander", request_id="bystander-check")
        self.assertEqual(status, 200, body)
        self.assertEqual([p["metadata"]["name"] for p in json.loads(body)["items"]],
                         ["bystander-worker-0", "bystander-worker-1"])
        self.assertEqual(self.log.find("agent disconnected", planeID="bystander"), [], "the bystander session was dropped")
        self.assertEqual([e["connectionID"] for e in self.log.find("agent connected successfully", planeID="bystander")],
                         [self.bystander_id], "the bystander reconnected")

    def assert_version_served(self, plane):
        """A path outside --fault-path is answered normally by the same session."""
        status, _, body = self.proxy(plane, "/version")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["gitVersion"], "v1.31.0-agent-sim")

    # ---- malformed replies -------------------------------------------------------------------------
    def test_malformed_replies_get_502_with_the_reason(self):
        sims = {mode: self.sim(f"f-{mode}", "--reply-fault", mode, "--fault-path", "/pods") for mode in FAULTS}
        for mode, reason in FAULTS.items():
            with self.subTest(mode):
                plane, s = f"f-{mode}", sims[mode]
                m0 = self.metric(DROPPED, reason="malformed_response")
                r0 = self.metric(REQUESTS, plane_type="dataplane", code="502")
                mark, sim_mark = self.log.mark(), s.log.mark()
                status, headers, body = self.proxy(plane, request_id=f"malformed-{mode}")
                self.assertEqual((status, body.decode()), (502, MALFORMED + reason + "\n"))
                self.assertNotIn("set-cookie", headers)
                self.assertNotIn("x-sim", headers)
                # The sim really sent the broken reply, and the gateway said why it refused it.
                self.assertTrue(s.log.wait("sending a malformed reply", since=sim_mark, path=PODS))
                ev = self.log.wait("malformed HTTP tunnel response", since=mark, planeID=plane)
                self.assertEqual([(e["level"], e["reason"], e["connectionID"]) for e in ev],
                                 [("warning", reason, s.cids[0])])
                failed = self.log.wait("HTTP tunnel request failed", since=mark, requestID=f"malformed-{mode}")
                self.assertEqual([(e["reason"], e["hopRequestID"]) for e in failed],
                                 [("malformed response from agent: " + reason, ev[0]["requestID"])])
                self.wait_metric(DROPPED, m0 + 1, reason="malformed_response")
                self.wait_metric(REQUESTS, r0 + 1, plane_type="dataplane", code="502")
                self.assert_version_served(plane)
                self.assert_session_kept(plane, s.cids)
        self.assert_bystander_serves()

    # ---- late replies ------------------------------------------------------------------------------
    def test_late_reply_after_the_timeout_is_dropped_as_unknown(self):
        s = self.sim("late", "--reply-delay", f"{LATE:g}s", "--fault-path", "/pods")
        u0 = self.metric(DROPPED, reason="unknown_request")
        mark, sim_mark = self.log.mark(), s.log.mark()
        status, _, body = self.proxy("late", request_id="late-1")
        self.assertEqual((status, body.decode()), (502, "proxy request failed: HTTP tunnel request timeout\n"))
        delayed = s.log.wait("delaying the reply", since=sim_mark, path=PODS)
        self.assertEqual(len(delayed), 1)
        # The timeout came first: the agent had not answered yet.
        self.assertEqual(s.log.find("sending a late reply", since=sim_mark), [])
        ev = self.log.wait("HTTP tunnel request failed", since=mark, requestID="late-1")
        self.assertEqual([(e["level"], e["reason"], e["connectionID"]) for e in ev],
                         [("warning", "timeout", s.cids[0])])
        hop = ev[0]["hopRequestID"]
        self.assertEqual(delayed[0]["requestID"], hop)
        # Meanwhile the same session answers other paths at once.
        self.assert_version_served("late")
        # The late reply arrives and is dropped: nobody waits for it any more.
        self.assertTrue(s.log.wait("sending a late reply", since=sim_mark, requestID=hop, timeout=LATE + 10))
        drop = self.log.wait("received HTTP tunnel response for unknown request", since=mark, requestID=hop)
        self.assertEqual([e["connectionID"] for e in drop], [s.cids[0]])
        self.wait_metric(DROPPED, u0 + 1, reason="unknown_request")
        self.assert_session_kept("late", s.cids)
        self.assert_version_served("late")
        self.assert_bystander_serves()

    def test_late_reply_after_the_caller_left_is_dropped_as_unknown(self):
        s = self.sim("left", "--reply-delay", "6s", "--fault-path", "/pods")
        u0 = self.metric(DROPPED, reason="unknown_request")
        c0 = self.metric(REQUESTS, plane_type="dataplane", code="499")
        mark, sim_mark = self.log.mark(), s.log.mark()
        raw = socket.create_connection(("127.0.0.1", self.api_port), timeout=30)
        t = self.ssl_ctx().wrap_socket(raw, server_hostname="localhost")
        t.sendall(f"GET /api/proxy/dataplane/left/_cluster/left/k8s{PODS} HTTP/1.1\r\nHost: localhost\r\n"
                  "X-Request-ID: left-1\r\n\r\n".encode())
        # The request reached the agent, which holds its reply back; then the caller leaves.
        delayed = s.log.wait("delaying the reply", since=sim_mark, path=PODS, timeout=20)
        self.assertEqual(len(delayed), 1)
        hop = delayed[0]["requestID"]
        t.close()
        cancelled = self.log.wait("caller went away; request cancelled", since=mark, requestID="left-1")
        self.assertEqual([e["hopRequestID"] for e in cancelled], [hop])
        self.wait_metric(REQUESTS, c0 + 1, plane_type="dataplane", code="499")
        self.assertEqual(s.log.find("sending a late reply", since=sim_mark), [], "the reply came before the caller left")
        self.assertTrue(s.log.wait("sending a late reply", since=sim_mark, requestID=hop, timeout=20))
        drop = self.log.wait("received HTTP tunnel response for unknown request", since=mark, requestID=hop)
        self.assertEqual([e["connectionID"] for e in drop], [s.cids[0]])
        self.wait_metric(DROPPED, u0 + 1, reason="unknown_request")
        self.assert_session_kept("left", s.cids)
        self.assert_version_served("left")
        self.assert_bystander_serves()

    # ---- a stopped reader --------------------------------------------------------------------------
    def test_stopped_reader_is_ended_by_the_heartbeat_and_its_callers_get_502(self):
        s = self.sim("stopped", "--stop-reading", "after-first-request")
        local_port = s.connected[0]["remote"].rsplit(":", 1)[1]
        sim_port = s.log.wait("connected to control plane")[0]["localPort"]
        self.assertEqual(int(local_port), sim_port)
        closed0 = self.metric("cluster_gateway_agent_sessions_closed_total", plane_type="dataplane",
                              reason="heartbeat_timeout")
        mark = self.log.mark()
        # The first request is answered; then the agent reads nothing more (no pongs either).
        status, _, body = self.proxy("stopped")
        self.assertEqual(status, 200, body)
        self.assertTrue(s.log.wait("reader stopped; the socket is no longer read", timeout=10))
        # Requests big enough to fill the socket buffers: the gateway's writes to the agent get stuck.
        answers = {}

        def post(i):
            answers[i] = self.proxy("stopped", f"{PODS}/big-{i}", request_id=f"stuck-{i}", method="PATCH",
                                    body=b"x" * (3 << 20))
        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        # Unread bytes pile up in the agent's receive queue: the reader really stopped.
        self.assertTrue(wait_for(lambda: tcp_socket(sim_port, self.agent_port)[1] > 65536, 10),
                        tcp_socket(sim_port, self.agent_port))
        done = self.log.wait("agent disconnected", since=mark, connectionID=s.cids[0], timeout=HB_TIMEOUT + 15)
        self.assertEqual([e.get("cause") for e in done], ["heartbeat_timeout"])
        for th in threads:
            th.join(REQUEST_TIMEOUT + 20)
        # Every caller got its 502 from the session's end (not from the request timeout, whose text
        # differs), or, arriving late, was refused because the session was closing or gone.
        self.assertEqual(sorted(answers), list(range(8)))
        for i, (status, _, body) in answers.items():
            self.assertEqual(status, 502, body)
            self.assertIn(body.decode(), (CLOSED_BEFORE, SEND_CLOSING, NO_AGENTS % "stopped"), i)
        self.assertIn(CLOSED_BEFORE, [b.decode() for _, _, b in answers.values()])
        self.wait_metric("cluster_gateway_agent_sessions_closed_total", closed0 + 1, plane_type="dataplane",
                         reason="heartbeat_timeout")
        self.assertEqual(self.sessions("stopped"), 0)
        self.assertIsNone(s.proc.poll(), "the agent exited")
        self.assert_bystander_serves()

    # ---- overrunning the stream credit -------------------------------------------------------------
    def test_stream_overrun_ends_the_stream_and_the_session_lives_on(self):
        s = self.sim("overrun", "--stream-overrun", "1", level="debug")
        e0 = self.metric("cluster_gateway_tunnel_streams_ended_total", kind="http", reason="flow_control")
        mark, sim_mark = self.log.mark(), s.log.mark()
        c = http.client.HTTPSConnection("localhost", self.api_port, context=self.ssl_ctx(), timeout=30)
        try:
            c.request("GET", f"/api/proxy/dataplane/overrun/_cluster/overrun/k8s{PODS}?watch=true",
                      headers={"X-Request-ID": "overrun-1"})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            with self.assertRaises(http.client.IncompleteRead) as cm:
                r.read()
            self.assertEqual(cm.exception.partial, b"", "the overrunning chunk was delivered")
        finally:
            c.close()
        sent = s.log.wait("sending more than the stream window", since=sim_mark)
        self.assertEqual([(e["window"], e["bytes"]) for e in sent], [(262144, 262145)])
        hop = sent[0]["requestID"]
        ended = self.log.wait("stream ended", since=mark, reason="agent exceeded the stream's flow-control window")
        self.assertEqual(len(ended), 1, ended)
        self.wait_metric("cluster_gateway_tunnel_streams_ended_total", e0 + 1, kind="http", reason="flow_control")
        # The agent was told: the gateway's close chunk for the stream.
        self.assertTrue(s.log.wait("stream closed by the gateway", since=sim_mark, requestID=hop))
        self.assert_session_kept("overrun", s.cids)
        self.assert_version_served("overrun")
        self.assert_bystander_serves()

    # ---- one certificate per agent -----------------------------------------------------------------
    def test_one_certificate_per_agent_is_verified_each(self):
        cache = "cluster_gateway_cr_verification_cache_total"
        hit0, miss0 = self.metric(cache, result="hit"), self.metric(cache, result="miss")
        s = self.sim("certs", "--client-ca-cert", os.path.join(self.pki, "tenant-a-ca.crt"),
                     "--client-ca-key", os.path.join(self.pki, "tenant-a-ca.key"), count=4)
        subjects = sorted(e["certificateSubject"] for e in s.connected)
        self.assertEqual(len(set(subjects)), 4, subjects)
        for i in range(4):
            self.assertTrue(any(f"certs-agent-{i}" in x for x in subjects), subjects)
        self.assertEqual((self.metric(cache, result="hit") - hit0, self.metric(cache, result="miss") - miss0), (0, 4))
        # Each agent serves (round-robin over the four sessions).
        seen = set()
        for _ in range(8):
            status, headers, body = self.proxy("certs", "/version")
            self.assertEqual(status, 200, body)
            seen.add(headers.get("x-agent-index"))
        self.assertEqual(seen, {"0", "1", "2", "3"})
        # --client-cert-dir: certificates made beforehand (openssl CLI, as scripts/dev-pki does).
        cdir = os.path.join(self.tmp.name, "agent-certs")
        os.makedirs(cdir, exist_ok=True)
        ca = os.path.join(self.pki, "tenant-a-ca")
        for i in range(2):
            base = os.path.join(cdir, f"agent-{i}")
            subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", base + ".key", "-subj", f"/O=OpenChoreo/CN=dir-agent-{i}", "-out", base + ".csr"],
                           check=True, capture_output=True)
            with open(base + ".ext", "w") as f:
                f.write("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
            subprocess.run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                            "-set_serial", str(7000 + i), "-days", "1", "-sha256", "-extfile", base + ".ext",
                            "-out", base + ".crt"], check=True, capture_output=True)
        d = self.sim("certdir", "--client-cert-dir", cdir, count=2)
        got = [e["certificateSubject"] for e in d.connected]
        self.assertEqual(sorted(n for n in ("dir-agent-0", "dir-agent-1") for x in got if n in x),
                         ["dir-agent-0", "dir-agent-1"], got)
        # Contrast: agents sharing one certificate hit the cache after the first verification.
        hit1 = self.metric(cache, result="hit")
        self.sim("shared", count=3)
        self.assertGreaterEqual(self.metric(cache, result="hit") - hit1, 2)
        self.assert_bystander_serves()

    # ---- ignoring the close frame ------------------------------------------------------------------
    def test_agent_ignoring_the_close_frame_fails_its_waiting_request_at_once(self):
        s = self.sim("silent", "--close-mode", "silent")
        sim_port = s.log.wait("connected to control plane")[0]["localPort"]
        mark, sim_mark = self.log.mark(), s.log.mark()
        answer = {}

        def hang():
            answer["r"] = self.proxy("silent", "/sim/hang", request_id="hang-1")
        th = threading.Thread(target=hang)
        th.start()
        self.assertTrue(wait_for(lambda: self.metric("cluster_gateway_tunnel_requests_in_flight") >= 1, 10))
        status, _, body = self.call("POST", "/api/v1/planes/dataplane/silent/reconnect")
        self.assertEqual(status, 200, body)
        th.join(REQUEST_TIMEOUT + 20)
        self.assertEqual((answer["r"][0], answer["r"][2].decode()), (502, CLOSED_BEFORE))
        done = self.log.wait("agent disconnected", since=mark, connectionID=s.cids[0], timeout=10)
        self.assertEqual([e.get("cause") for e in done], ["gateway_closed"])
        # The agent got the close frame, did not answer it and kept its socket (the gateway closed its side).
        got = s.log.wait("close frame received; the socket stays open (upstream agent behaviour)", since=sim_mark)
        self.assertEqual([(e["code"], e["answered"]) for e in got], [(1001, False)])
        self.assertTrue(wait_for(lambda: tcp_socket(sim_port, self.agent_port)[0] == "CLOSE_WAIT", 10),
                        tcp_socket(sim_port, self.agent_port))
        # It comes back on a new socket and serves.
        self.assertTrue(s.log.wait("connected to control plane", since=sim_mark, timeout=20))
        self.assertTrue(wait_for(lambda: self.sessions("silent") == 1, 20))
        self.assert_version_served("silent")
        self.assertEqual(tcp_socket(sim_port, self.agent_port)[0], "CLOSE_WAIT")
        self.assert_bystander_serves()


if __name__ == "__main__":
    unittest.main()
