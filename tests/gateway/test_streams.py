"""Streams through the internal API, end to end with independent clients (Python http.client, ssl
sockets and `websockets`, each with a client certificate): watches and logs -f to stream-capable
agents (X-Cluster-Agent-Capabilities: http-stream/v1) with per-stream flow control, 501 for
agents that do not announce it (upstream's agents), exec over WebSocket (1-byte channel prefix,
0x01 started chunk, close), wirelogs as Server-Sent Events, and a stalled watch consumer while
1000 requests pass on the same agent connection."""
import asyncio
import base64
import concurrent.futures
import http.client
import json
import os
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
from gateway_proc import LogLines, dev_pki_and_planes, gateway_cmd, metric_sum, start_gateway, wait_for  # noqa: E402

STREAMING_501 = (
    "Streaming operations (watch, logs -f, exec, port-forward) are not yet supported through the HTTP proxy. "
    "Use the CQRS API (/api/k8s-resources/) for resource operations, or connect directly to the data plane for "
    "streaming operations.\n")


class StreamsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-streams-")
        cls.pki, planes, _ = dev_pki_and_planes(
            ROOT, cls.tmp.name, [("streams", "sp"), ("legacy", "legacy-plane"), ("raw", "raw-plane")],
            "ClusterWorkflowPlane")
        cls.log = LogLines()
        cls.proc, started = start_gateway(
            gateway_cmd(BIN, cls.pki, planes, "--request-timeout", "5s", "--write-timeout", "60s",
                        "--max-agents-per-plane", "1", "--max-streams-per-agent", "3", "--max-pending-per-agent", "8"),
            log=cls.log)
        cls.agent_port, cls.health_port, cls.api_port = started["agentPort"], started["healthPort"], started["internalPort"]
        cls.sims = []

        def sim(plane_id, *extra):
            p = subprocess.Popen(
                [SIM, "--server-url", f"wss://localhost:{cls.agent_port}/ws", "--plane-type", "workflowplane",
                 "--plane-id", plane_id, "--client-cert", os.path.join(cls.pki, "agent-a.crt"),
                 "--client-key", os.path.join(cls.pki, "agent-a.key"),
                 "--server-ca", os.path.join(cls.pki, "gateway-ca.crt"), "--reconnect-delay", "200ms",
                 "--log-level", "warn", "--stream-interval", "100ms", *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cls.sims.append(p)
        sim("sp")                         # announces http-stream/v1 (the simulator's default)
        sim("legacy-plane", "--capabilities", "")  # like upstream's agent
        ok = wait_for(lambda: cls.log.find("agent connected successfully", planeID="sp") and
                      cls.log.find("agent connected successfully", planeID="legacy-plane"), 20)
        if not ok:
            cls.tearDownClass()
            raise AssertionError("simulated agents did not connect")

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
    def ctx(self, cert="controller"):
        c = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(self.pki, "gateway-ca.crt"))
        c.load_cert_chain(os.path.join(self.pki, cert + ".crt"), os.path.join(self.pki, cert + ".key"))
        return c

    def conn(self, timeout=15):
        return http.client.HTTPSConnection("localhost", self.api_port, context=self.ctx(), timeout=timeout)

    def get(self, path, headers=None):
        c = self.conn()
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body, r

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return text

    def open_streams(self, kind):
        return metric_sum(self.metrics(), "cluster_gateway_tunnel_streams", kind=kind)

    proxy = "/api/proxy/workflowplane/sp/_cluster/streams/k8s"

    # ---- HTTP streams --------------------------------------------------------------------------
    def test_watch_streams_events_until_the_backend_ends_it(self):
        c = self.conn()
        c.request("GET", self.proxy + "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Transfer-Encoding"), "chunked")
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        events = [json.loads(line) for line in r.read().decode().splitlines() if line]  # ends: timeoutSeconds
        c.close()
        self.assertGreaterEqual(len(events), 3, events)
        self.assertEqual([e["type"] for e in events[:2]], ["ADDED", "ADDED"])
        self.assertEqual(events[2]["type"], "MODIFIED")
        self.assertEqual(events[0]["object"]["metadata"]["name"], "sp-worker-0")
        self.assertTrue(self.log.wait("stream completed", planeID="sp", target="k8s"))

    def test_logs_follow_streams_and_caller_leaving_closes_the_stream(self):
        gone0 = metric_sum(self.metrics(), "cluster_gateway_tunnel_streams_ended_total", kind="http", reason="caller_gone")
        mark = self.log.mark()
        c = self.conn()
        c.request("GET", self.proxy + "/api/v1/namespaces/default/pods/web-1/log?follow=true",
                  headers={"X-Request-ID": "follow-1"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        lines = [r.readline().decode() for _ in range(3)]
        self.assertEqual(lines, [f"log line {i} from web-1 on sp\n" for i in (1, 2, 3)])
        self.assertEqual(self.open_streams("http"), 1.0)
        r.close()  # the response holds the socket too
        c.close()
        self.assertTrue(self.log.wait("stream caller went away; stream closed", since=mark, requestID="follow-1") or
                        self.log.wait("caller went away; request cancelled", since=mark, requestID="follow-1"))
        self.assertTrue(wait_for(lambda: self.open_streams("http") == 0.0, 10), "stream not released")
        self.assertEqual(metric_sum(self.metrics(), "cluster_gateway_tunnel_streams_ended_total",
                                    kind="http", reason="caller_gone"), gone0 + 1)

    def test_agents_without_the_capability_keep_upstreams_501(self):
        status, body, _ = self.get("/api/proxy/workflowplane/legacy-plane/_cluster/legacy/k8s/api/v1/pods?watch=true")
        self.assertEqual((status, body), (501, STREAMING_501))
        # Plain requests to the same agent still work.
        status, body, _ = self.get("/api/proxy/workflowplane/legacy-plane/_cluster/legacy/k8s/api/v1/namespaces/x/pods")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["kind"], "PodList")

    def test_upgrade_requests_stay_501(self):
        status, body, _ = self.get(self.proxy + "/api/v1/namespaces/default/pods/p/portforward",
                                   headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"})
        self.assertEqual((status, body), (501, STREAMING_501))

    def test_stream_errors_before_the_head(self):
        # A backend answer that is not a stream (404 from the simulated API server) passes through.
        status, body, _ = self.get(self.proxy + "/api/v1/namespaces/default/secrets-ish?watch=true")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["reason"], "NotFound")
        status, body, _ = self.get("/api/proxy/workflowplane/nope/_cluster/streams/k8s/api/v1/pods?watch=true")
        self.assertEqual((status, body), (502, "proxy request failed: no agents found for plane workflowplane/nope\n"))

    def test_stalled_watch_consumer_does_not_delay_1000_requests(self):
        # A caller that opens a fast log stream and then stops reading.
        raw = self.ctx().wrap_socket(__import__("socket").create_connection(("localhost", self.api_port)),
                                     server_hostname="localhost")
        raw.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 64 * 1024)
        raw.sendall((f"GET {self.proxy}/api/v1/namespaces/default/pods/big/log?follow=true&container=flood HTTP/1.1\r\n"
                     "Host: gw\r\nX-Request-ID: stalled-1\r\n\r\n").encode())
        head = raw.recv(4096)
        self.assertIn(b"200 OK", head)
        # Let the stream fill every buffer on the way (socket buffers, then the flow-control window).
        plateau = wait_for(lambda: self._delivered_plateau(), 30, 0.5)
        self.assertTrue(plateau, "the stalled stream kept receiving data: no back-pressure")
        stalled_bytes = metric_sum(self.metrics(), "cluster_gateway_tunnel_stream_bytes_total", direction="to_caller")

        def one(i):
            c = self.conn(timeout=20)
            c.request("GET", self.proxy + f"/api/v1/namespaces/ns{i % 7}/pods")
            r = c.getresponse()
            b = r.read()
            c.close()
            return r.status, json.loads(b)["kind"]

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as ex:  # within --max-pending-per-agent
            results = list(ex.map(one, range(1000)))
        elapsed = time.monotonic() - t0
        self.assertEqual(results.count((200, "PodList")), 1000, f"{elapsed:.1f}s")
        # The stalled stream is still open and still held back.
        self.assertEqual(self.open_streams("http"), 1.0)
        self.assertLessEqual(metric_sum(self.metrics(), "cluster_gateway_tunnel_stream_bytes_total", direction="to_caller"),
                             stalled_bytes + 512 * 1024)
        # Reading again resumes the stream: data keeps coming.
        got = 0
        raw.settimeout(10)
        while got < 4 << 20:
            chunk = raw.recv(1 << 16)
            self.assertTrue(chunk)
            got += len(chunk)
        raw.close()
        self.assertTrue(wait_for(lambda: self.open_streams("http") == 0.0, 10), "stream not released")

    def _delivered_plateau(self):
        a = metric_sum(self.metrics(), "cluster_gateway_tunnel_stream_bytes_total", direction="to_caller")
        time.sleep(1.0)
        b = metric_sum(self.metrics(), "cluster_gateway_tunnel_stream_bytes_total", direction="to_caller")
        return a > 0 and a == b

    # ---- a misbehaving stream-capable agent (Python websockets) -----------------------------------
    def run_raw_agent(self, behaviour, client, received=None):
        """Runs a Python agent on raw-plane that announces http-stream/v1 and answers each request
        with `behaviour(msg)` (a list of frames to send), while `client()` runs in a thread. Returns
        (client result, frames the agent received); `received` (a list) may be passed in, so that
        `client()` can wait on it. `behaviour` runs in the agent's task, which is cancelled when
        `client()` returns: it must not assert (an exception there is lost); assert on the received
        frames afterwards."""
        received = [] if received is None else received

        async def main():
            url = f"wss://localhost:{self.agent_port}/ws?planeID=raw-plane&planeType=workflowplane"
            async with websockets.connect(url, ssl=self.ctx("agent-a"), ping_interval=None, max_size=None,
                                          extra_headers={"X-Cluster-Agent-Capabilities": "http-stream/v1"}) as ws:
                ok = await asyncio.to_thread(self.log.wait, "agent connected successfully", planeID="raw-plane",
                                             count=len(self.log.find("agent connected successfully", planeID="raw-plane")))
                self.assertTrue(ok)

                async def serve():
                    async for text in ws:
                        msg = json.loads(text)
                        received.append(msg)
                        for frame in behaviour(msg):
                            await ws.send(json.dumps(frame))
                server = asyncio.create_task(serve())
                try:
                    return await asyncio.to_thread(client)
                finally:
                    server.cancel()
        result = asyncio.run(main())
        return result, received

    raw = "/api/proxy/workflowplane/raw-plane/_cluster/raw/k8s"

    def test_complete_answer_larger_than_the_window_is_not_cut(self):
        body = b"z" * (600 * 1024)

        def behaviour(msg):
            if msg.get("stream"):
                return [{"requestID": msg["requestID"], "statusCode": 200,
                         "headers": {"Content-Type": ["text/plain"]}, "body": base64.b64encode(body).decode()}]
            return []
        (status, got, _), _ = self.run_raw_agent(behaviour, lambda: self.get(self.raw + "/api/v1/pods?watch=true"))
        self.assertEqual(status, 200)
        self.assertEqual(len(got), len(body))

    def test_agent_exceeding_the_window_has_its_stream_aborted(self):
        ended0 = metric_sum(self.metrics(), "cluster_gateway_tunnel_streams_ended_total", reason="flow_control")
        chunk = base64.b64encode(b"w" * (300 * 1024)).decode()  # more than the whole window at once

        def behaviour(msg):
            if msg.get("stream"):
                rid = msg["requestID"]
                return [{"requestID": rid, "statusCode": 200, "stream": True, "headers": {"Content-Type": ["text/plain"]}},
                        {"requestID": rid, "data": chunk}]
            return []

        received = []

        def client():
            c = self.conn()
            c.request("GET", self.raw + "/api/v1/namespaces/default/pods/x/log?follow=true")
            r = c.getresponse()
            status = r.status
            try:
                r.read()
                complete = True
            except http.client.IncompleteRead:
                complete = False
            c.close()
            # The agent's task stops when this returns: wait until it got the close chunk.
            got_close = wait_for(lambda: any(m.get("isClose") for m in received), 10)
            return status, complete, got_close
        (status, complete, got_close), _ = self.run_raw_agent(behaviour, client, received)
        self.assertEqual(status, 200)
        self.assertFalse(complete, "an aborted stream must not end like a complete one")
        self.assertTrue(got_close, "the agent got no close chunk")
        inits = [m for m in received if m.get("stream")]
        self.assertEqual(len(inits), 1)
        self.assertEqual(inits[0]["window"], 256 * 1024)
        closes = [m for m in received if m.get("isClose")]
        self.assertEqual(len(closes), 1)
        self.assertIsNone(closes[0]["data"])
        self.assertEqual(metric_sum(self.metrics(), "cluster_gateway_tunnel_streams_ended_total", reason="flow_control"),
                         ended0 + 1)

    def test_silent_agent_times_out_streams_exec_and_wirelogs(self):
        def client():
            out = {"watch": self.get(self.raw + "/api/v1/pods?watch=true")[:2],
                   "wirelogs": self.get("/api/wirelogs/workflowplane/raw-plane/_cluster/raw?environment=d&namespace=n")[:2]}

            async def ex():
                url = (f"wss://localhost:{self.api_port}/api/exec/workflowplane/raw-plane/_cluster/raw"
                       "?podNamespace=a&podName=b&command=sh")
                async with websockets.connect(url, ssl=self.ctx()) as ws:
                    with self.assertRaises(websockets.exceptions.ConnectionClosedError) as cm:
                        await asyncio.wait_for(ws.recv(), 30)
                    return cm.exception.rcvd.code, cm.exception.rcvd.reason
            out["exec"] = asyncio.run(ex())
            return out
        out, received = self.run_raw_agent(lambda msg: [], client)
        self.assertEqual(out["watch"], (502, "proxy request failed: HTTP tunnel request timeout\n"))
        self.assertEqual(out["wirelogs"], (504, "timeout waiting for agent\n"))
        self.assertEqual(out["exec"], (1011, "timeout waiting for the agent to start the exec stream"))
        # Each timed-out stream was closed towards the agent.
        inits = {m["requestID"] for m in received if m.get("stream") or m.get("isUpgrade")}
        closed = {m["requestID"] for m in received if m.get("isClose")}
        self.assertEqual(len(inits), 3)
        self.assertEqual(inits, closed)

    # ---- limits ----------------------------------------------------------------------------------
    def test_limit_on_streams_per_agent(self):
        conns = []
        for i in range(3):
            c = self.conn()
            c.request("GET", self.proxy + f"/api/v1/namespaces/default/pods/p{i}/log?follow=true")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.readline()
            conns.append((c, r))
        refused0 = metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="streams_per_session")
        status, body, _ = self.get(self.proxy + "/api/v1/namespaces/default/pods/p9/log?follow=true")
        self.assertEqual((status, body), (503, "proxy request failed: agent connection has 3 open streams (limit 3)\n"))
        self.assertEqual(metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total",
                                    limit="streams_per_session"), refused0 + 1)
        # Plain requests still pass, and closing one stream makes room again.
        self.assertEqual(self.get(self.proxy + "/api/v1/namespaces/default/pods")[0], 200)
        for c, r in conns:
            r.close()
            c.close()
        self.assertTrue(wait_for(lambda: self.open_streams("http") == 0.0, 10))
        c = self.conn()
        c.request("GET", self.proxy + "/api/v1/namespaces/default/pods/p9/log?follow=true")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        r.close()
        c.close()
        # Released before the next test counts caller_gone ends.
        self.assertTrue(wait_for(lambda: self.open_streams("http") == 0.0, 10))

    def test_limit_on_pending_requests_per_agent(self):
        def hang(_):
            return self.get(self.proxy + "/sim/hang")[:2]
        refused0 = metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="pending_per_session")
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            hung = [ex.submit(hang, i) for i in range(8)]
            self.assertTrue(wait_for(lambda: metric_sum(self.metrics(), "cluster_gateway_tunnel_requests_in_flight") >= 8, 10),
                            "the 8 requests are not all pending")
            status, body, _ = self.get(self.proxy + "/api/v1/namespaces/default/pods")
            self.assertEqual((status, body), (503, "proxy request failed: agent connection has 8 requests pending (limit 8)\n"))
            self.assertEqual([f.result() for f in hung], [(502, "proxy request failed: HTTP tunnel request timeout\n")] * 8)
        self.assertEqual(metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total",
                                    limit="pending_per_session"), refused0 + 1)
        self.assertEqual(self.get(self.proxy + "/api/v1/namespaces/default/pods")[0], 200)

    def test_limit_on_agents_per_plane(self):
        refused0 = metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="plane_sessions")
        mark = self.log.mark()
        extra = subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{self.agent_port}/ws", "--plane-type", "workflowplane",
             "--plane-id", "sp", "--client-cert", os.path.join(self.pki, "agent-a.crt"),
             "--client-key", os.path.join(self.pki, "agent-a.key"),
             "--server-ca", os.path.join(self.pki, "gateway-ca.crt"), "--reconnect-delay", "10s", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ev = self.log.wait("agent connection rejected", since=mark, planeID="sp", status=503, timeout=15)
            self.assertTrue(ev)
            self.assertEqual(ev[0]["reason"], "too many agent connections for plane workflowplane/sp (limit 1)")
            # The refused simulator dials again only after 10 s: one refusal so far (or two, on a
            # machine slow enough to let it retry).
            self.assertIn(metric_sum(self.metrics(), "cluster_gateway_limit_refusals_total", limit="plane_sessions") - refused0,
                          (1, 2))
        finally:
            extra.kill()
            extra.wait()
        self.assertEqual(self.get(self.proxy + "/api/v1/namespaces/default/pods")[0], 200)

    # ---- exec ------------------------------------------------------------------------------------
    def exec_url(self, plane="sp", cr="streams", query="podNamespace=default&podName=web-1&stdin=true&tty=false"):
        return f"wss://localhost:{self.api_port}/api/exec/workflowplane/{plane}/_cluster/{cr}?{query}"

    def test_exec_round_trip_with_stdin_stdout_and_resize(self):
        async def run(plane, cr):
            async with websockets.connect(self.exec_url(plane, cr), ssl=self.ctx()) as ws:
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01")  # started
                await ws.send(b"\x00hello\n")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01hello\n")
                await ws.send(b"\x03" + json.dumps({"width": 80, "height": 24}).encode())
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x02resized to 80x24\n")
                await ws.send(b"\x00")  # stdin EOF ends the simulated `cat`
                with self.assertRaises(websockets.exceptions.ConnectionClosedOK) as cm:
                    await asyncio.wait_for(ws.recv(), 10)
                self.assertEqual(cm.exception.rcvd.code, 1000)
        asyncio.run(run("sp", "streams"))
        asyncio.run(run("legacy-plane", "legacy"))  # upstream's protocol: no capability needed
        self.assertTrue(wait_for(lambda: self.open_streams("exec") == 0.0, 10))

    def test_exec_command_output_and_exit_code(self):
        async def run():
            q = "podNamespace=default&podName=web-1&command=echo&command=hi&command=there"
            async with websockets.connect(self.exec_url(query=q), ssl=self.ctx()) as ws:
                frames = [await asyncio.wait_for(ws.recv(), 10), await asyncio.wait_for(ws.recv(), 10)]
                self.assertEqual(frames, [b"\x01", b"\x01hi there\n"])
                with self.assertRaises(websockets.exceptions.ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), 10)
            q = "podNamespace=default&podName=web-1&command=exit&command=3"
            async with websockets.connect(self.exec_url(query=q), ssl=self.ctx()) as ws:
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01")
                with self.assertRaises(websockets.exceptions.ConnectionClosedOK) as cm:
                    await asyncio.wait_for(ws.recv(), 10)
                self.assertEqual(cm.exception.rcvd.code, 1000)
                self.assertEqual(cm.exception.rcvd.reason, "command terminated with non-zero exit code: 3")
        asyncio.run(run())

    def test_exec_caller_leaving_closes_the_agent_stream(self):
        async def run():
            ws = await websockets.connect(self.exec_url(), ssl=self.ctx())
            self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01")
            self.assertEqual(self.open_streams("exec"), 1.0)
            await ws.close()
        asyncio.run(run())
        self.assertTrue(wait_for(lambda: self.open_streams("exec") == 0.0, 10), "exec stream not released")

    def test_exec_refusals_before_the_upgrade(self):
        base = "/api/exec/workflowplane/sp/_cluster/streams"
        self.assertEqual(self.get(base + "?podName=x")[:2],
                         (400, "podNamespace and podName query parameters are required\n"))
        self.assertEqual(self.get("/api/exec/workflowplane/nope/_cluster/streams?podNamespace=a&podName=b")[:2],
                         (503, "no agent available: no agents found for plane workflowplane/nope\n"))
        self.assertEqual(self.get("/api/exec/workflowplane/sp/_cluster/other?podNamespace=a&podName=b")[:2],
                         (503, "no agent available: no agents authorized for CR /other\n"))
        # Not an upgrade: gorilla's Upgrader answers (upstream's exec endpoint).
        status, body, headers = self.get(base + "?podNamespace=a&podName=b")
        self.assertEqual((status, body), (400, "Bad Request\n"))
        self.assertEqual(headers.getheader("Sec-Websocket-Version"), "13")
        self.assertEqual(self.get("/api/exec/workflowplane/sp/_cluster")[:2],
                         (400, "invalid exec URL: expected /api/exec/{planeType}/{planeID}/{crNamespace}/{crName}\n"))
        self.assertEqual(self.get("/api/wirelogs/workflowplane/sp/x")[:2],
                         (400, "invalid wirelogs URL: expected /api/wirelogs/{planeType}/{planeID}/{crNamespace}/{crName}\n"))
        # A POST with every upgrade header: 405, as gorilla checks the method after the tokens.
        c = self.conn()
        c.request("POST", base + "?podNamespace=a&podName=b",
                  headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        r = c.getresponse()
        self.assertEqual((r.status, r.read().decode()), (405, "Method Not Allowed\n"))
        self.assertEqual(r.getheader("Sec-Websocket-Version"), "13")

    def test_exec_and_proxy_refuse_an_agent_certificate(self):
        # Refused in the TLS handshake (TLS 1.3: the alert arrives with the first read) or reset;
        # a timeout is an OSError too, but it would mean the gateway never answered: not accepted.
        c = http.client.HTTPSConnection("localhost", self.api_port, context=self.ctx("agent-a"), timeout=30)
        try:
            c.request("GET", "/api/v1/planes/status")
            c.getresponse().read()
            self.fail("a request with an agent certificate was answered")
        except TimeoutError:
            self.fail("the gateway neither refused nor answered within 30 s")
        except ssl.SSLError as e:
            self.assertIn("unknown ca", str(e).lower())
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            pass  # the refusal's alert lost to the reset
        finally:
            c.close()

    # ---- wirelogs (SSE) --------------------------------------------------------------------------
    def test_wirelogs_sse_framing_of_multiline_chunks(self):
        c = self.conn()
        c.request("GET", "/api/wirelogs/workflowplane/sp/_cluster/streams?environment=dev&namespace=shop&project=multiline")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
        self.assertEqual(r.getheader("Cache-Control"), "no-cache, no-transform")
        self.assertEqual(r.getheader("X-Accel-Buffering"), "no")
        lines = []
        while True:  # one event: "data: " lines up to a blank line
            line = r.readline().decode()
            if line == "\n":
                break
            lines.append(line)
        r.close()
        c.close()
        self.assertGreater(len(lines), 3, "a pretty-printed flow spans several lines")
        self.assertTrue(all(line.startswith("data: ") and line.endswith("\n") for line in lines), lines)
        flow = json.loads("\n".join(line[len("data: "):-1] for line in lines))
        self.assertEqual(flow["flow"]["source"]["namespace"], "shop")
        self.assertTrue(wait_for(lambda: self.open_streams("wirelogs") == 0.0, 10), "wirelogs stream not released")

    def test_wirelogs_errors(self):
        base = "/api/wirelogs/workflowplane/sp/_cluster/streams"
        self.assertEqual(self.get(base + "?namespace=shop")[:2],
                         (400, "environment and namespace query parameters are required\n"))
        self.assertEqual(self.get(base + "?environment=dev&namespace=reject")[:2],
                         (502, "agent rejected stream: hubble relay unavailable\n"))
        self.assertEqual(self.get("/api/wirelogs/workflowplane/nope/_cluster/streams?environment=d&namespace=n")[:2],
                         (503, "no agent available: no agents found for plane workflowplane/nope\n"))


if __name__ == "__main__":
    unittest.main()
