"""SIGTERM drain, end to end: /ready turns 503 at once, every agent gets upstream's GOAWAY frame
spread over the drain window and then close 1001, a request in flight when SIGTERM arrives still
gets its answer, every CR is written disconnected, and the process exits within
--shutdown-timeout. Agents are Python `websockets` clients with client certificates."""
import asyncio
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import ssl
import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import LogLines, start_gateway, wait_for  # noqa: E402

AGENTS = 6
SHUTDOWN = 8.0  # --shutdown-timeout; the GOAWAY window is min(timeout/4, 2 s) = 2 s


class DrainTest(unittest.TestCase):
    def test_sigterm_drains(self):
        with tempfile.TemporaryDirectory(prefix="cg-drain-") as d:
            pki = os.path.join(d, "pki")
            subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), pki], check=True)
            planes = os.path.join(d, "planes")
            os.makedirs(planes)
            with open(os.path.join(pki, "tenant-a-ca.crt"), "rb") as f:
                ca_b64 = base64.b64encode(f.read()).decode()
            for i in range(AGENTS):
                with open(os.path.join(planes, f"p{i}.yaml"), "w") as f:
                    f.write("apiVersion: openchoreo.dev/v1alpha1\nkind: ClusterDataPlane\nmetadata:\n"
                            f"  name: p{i}\nspec:\n  planeID: drain-{i}\n  clusterAgent:\n    clientCA:\n"
                            f"      value: {ca_b64}\n")
            log = LogLines()
            proc, started = start_gateway(
                [BIN, "--port", "0", "--health-port", "0", "--internal-port", "0", "--bind", "127.0.0.1",
                 "--planes-dir", planes, "--server-cert", os.path.join(pki, "server.crt"),
                 "--server-key", os.path.join(pki, "server.key"),
                 "--internal-client-ca-cert", os.path.join(pki, "internal-ca.crt"),
                 "--startup-grace", "0s", "--shutdown-timeout", f"{SHUTDOWN:g}s"], log=log)
            try:
                self.run_drain(pki, planes, log, proc, started)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

    def run_drain(self, pki, planes, log, proc, started):
        agent_port, health_port, api_port = started["agentPort"], started["healthPort"], started["internalPort"]
        agent_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(pki, "gateway-ca.crt"))
        agent_ctx.load_cert_chain(os.path.join(pki, "agent-a.crt"), os.path.join(pki, "agent-a.key"))
        caller_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(pki, "gateway-ca.crt"))
        caller_ctx.load_cert_chain(os.path.join(pki, "controller.crt"), os.path.join(pki, "controller.key"))
        seen = {}  # agent index -> (goaway time, close code)
        t_term = {}

        def ready_status():
            c = http.client.HTTPConnection("127.0.0.1", health_port, timeout=2)
            c.request("GET", "/ready")
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            return r.status, body

        async def agent(i, connected):
            url = f"wss://localhost:{agent_port}/ws?planeID=drain-{i}&planeType=dataplane"
            async with websockets.connect(url, ssl=agent_ctx, ping_interval=None) as ws:
                connected.set()
                goaway_at = None
                try:
                    async for text in ws:
                        msg = json.loads(text)
                        if msg.get("type") == "goaway":
                            goaway_at = time.monotonic()
                            continue
                        # A slow backend: the answer comes 1.5 s later (after SIGTERM).
                        await asyncio.sleep(1.5)
                        await ws.send(json.dumps({"requestID": msg["requestID"], "statusCode": 200,
                                                  "body": base64.b64encode(b"late but whole").decode()}))
                except websockets.exceptions.ConnectionClosed:
                    pass
                seen[i] = (goaway_at, ws.close_code)

        def caller(result):
            c = http.client.HTTPSConnection("localhost", api_port, context=caller_ctx, timeout=20)
            c.request("GET", "/api/proxy/dataplane/drain-0/_cluster/p0/k8s/api/v1/pods")
            r = c.getresponse()
            result["answer"] = (r.status, r.read())
            c.close()

        async def main():
            events = [asyncio.Event() for _ in range(AGENTS)]
            tasks = [asyncio.create_task(agent(i, events[i])) for i in range(AGENTS)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 20)
            ok = await asyncio.to_thread(wait_for, lambda: len(log.find("agent registered")) >= AGENTS, 10)
            self.assertTrue(ok)
            self.assertEqual((await asyncio.to_thread(ready_status))[0], 200)
            result = {}
            th = threading.Thread(target=caller, args=(result,))
            th.start()
            received = await asyncio.to_thread(log.wait, "HTTP proxy request received", timeout=10)
            self.assertTrue(received, "the request never reached the gateway")  # else SIGTERM finds nothing in flight
            t_term["t"] = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # /ready turns 503 while the gateway drains.
            st = await asyncio.to_thread(wait_for, lambda: ready_status()[0] == 503, 3, 0.05)
            self.assertTrue(st, "/ready did not turn 503")
            await asyncio.wait_for(asyncio.gather(*tasks), SHUTDOWN + 5)
            await asyncio.to_thread(th.join, 20)
            self.assertFalse(th.is_alive(), "the caller got no answer within 20 s")
            return result
        result = asyncio.run(main())
        rc = proc.wait(timeout=SHUTDOWN + 5)
        elapsed = time.monotonic() - t_term["t"]
        self.assertEqual(rc, 0)
        self.assertLess(elapsed, SHUTDOWN + 1.0)
        # The request in flight at SIGTERM got its answer.
        self.assertEqual(result.get("answer"), (200, b"late but whole"))
        # Every agent got the GOAWAY, then close 1001; the GOAWAYs were spread, not sent at once.
        self.assertEqual(sorted(seen), list(range(AGENTS)))
        for i, (goaway_at, code) in seen.items():
            self.assertIsNotNone(goaway_at, f"agent {i} got no GOAWAY")
            self.assertEqual(code, 1001)
        times = sorted(g for g, _ in seen.values())
        self.assertGreater(times[-1] - times[0], 0.8, f"GOAWAYs not spread: {times}")
        drained = log.find("agent sessions drained")
        self.assertEqual(len(drained), 1, drained)
        self.assertEqual(drained[0]["inFlightLeft"], 0)
        # Every CR written disconnected.
        for i in range(AGENTS):
            with open(os.path.join(planes, "status", f"ClusterDataPlane._cluster.p{i}.json")) as f:
                st = json.load(f)
            if st["agentConnection"]["connected"]:
                with open("/tmp/drain-log.json", "w") as f:
                    json.dump(log.find(), f, indent=0)
            self.assertFalse(st["agentConnection"]["connected"], st)


if __name__ == "__main__":
    unittest.main()
