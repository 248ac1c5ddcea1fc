"""End to end in Kubernetes mode: the cluster-gateway binary (no --planes-dir) against the fake API
server, agents from cluster-agent-sim. Checks that the CR status tells the truth within a bounded
wait, that faults (5xx on status writes, dropped watches, compaction) are survived with nothing lost,
that a rotated CA secret closes the revoked session, that heartbeat-only writes are coalesced, and
that SIGTERM writes the CR disconnected."""
import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from kube_e2e_support import BIN, CWP, SIM, FakeApiServer, read_bytes, start_gateway, wait_for  # noqa: E402


class KubeModeE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-kube-e2e-")
        d = cls.tmp.name
        cls.pki = os.path.join(d, "pki")
        subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), cls.pki], check=True)
        seed = os.path.join(d, "seed")
        os.makedirs(seed)
        ca = read_bytes(os.path.join(cls.pki, "tenant-a-ca.crt"))
        with open(os.path.join(seed, "objects.yaml"), "w") as f:
            f.write(f"""apiVersion: v1
kind: Secret
metadata:
  name: e2e-agent-ca
  namespace: openchoreo-system
data:
  ca.crt: {base64.b64encode(ca).decode()}
---
apiVersion: v1
kind: Secret
metadata:
  name: unrelated
  namespace: openchoreo-system
data:
  password: {base64.b64encode(b"not for the gateway").decode()}
---
apiVersion: openchoreo.dev/v1alpha1
kind: ClusterWorkflowPlane
metadata:
  name: e2e
spec:
  planeID: e2e-plane
  clusterAgent:
    clientCA:
      secretKeyRef: {{name: e2e-agent-ca, namespace: openchoreo-system, key: ca.crt}}
status:
  conditions:
  - type: Created
    status: "True"
    reason: ClusterWorkflowPlaneCreated
    message: Workflowplane is created
    lastTransitionTime: "2026-01-01T00:00:00Z"
""")
        cls.api = FakeApiServer(d, extra_args=["--seed-dir", seed])
        cls.gw_log = open(os.path.join(d, "gateway.log"), "w")
        cls.gw, cls.ports = start_gateway(
            [os.path.join(BIN, "cluster-gateway"), "--kubeconfig", cls.api.kubeconfig, "--bind", "127.0.0.1",
             "--port", "0", "--health-port", "0", "--internal-port", "0",
             "--internal-client-ca-cert", os.path.join(cls.pki, "internal-ca.crt"),
             "--server-cert", os.path.join(cls.pki, "server.crt"), "--server-key", os.path.join(cls.pki, "server.key"),
             "--heartbeat-interval", "200ms", "--heartbeat-timeout", "2s", "--status-heartbeat-interval", "2s",
             "--startup-grace", "0s", "--shutdown-timeout", "8s"], log=cls.gw_log)
        cls.agent = None

    @classmethod
    def tearDownClass(cls):
        cls.stop_agent()
        if cls.gw.poll() is None:
            cls.gw.kill()
        cls.gw.wait()
        cls.api.stop()
        cls.gw_log.close()
        cls.tmp.cleanup()

    @classmethod
    def start_agent(cls):
        cls.stop_agent()
        cls.agent = subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{cls.ports['agentPort']}/ws",
             "--plane-type", "workflowplane", "--plane-id", "e2e-plane",
             "--client-cert", os.path.join(cls.pki, "agent-a.crt"), "--client-key", os.path.join(cls.pki, "agent-a.key"),
             "--server-ca", os.path.join(cls.pki, "gateway-ca.crt"), "--reconnect-delay", "500ms"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @classmethod
    def stop_agent(cls):
        if cls.agent and cls.agent.poll() is None:
            cls.agent.kill()
            cls.agent.wait()
        cls.agent = None

    def cr(self):
        status, _, body = self.api.request("GET", CWP + "/e2e")
        self.assertEqual(status, 200)
        return body

    def connected(self):
        return ((self.cr().get("status") or {}).get("agentConnection") or {}).get("connected")

    def patches(self):
        return self.api.control("GET", "requests?subresource=status&method=PATCH")["count"]

    def test_1_ready_after_sync_and_only_referenced_secrets_read(self):
        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['healthPort']}/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        self.assertTrue(wait_for(ready))
        reqs = self.api.control("GET", "requests?resource=secrets")["items"]
        self.assertTrue(reqs, "the referenced secret was never read")
        for r in reqs:
            self.assertIn("e2e-agent-ca", r["rawQuery"] + r["path"], r)

    def test_2_connect_and_disconnect_reach_the_cr(self):
        self.start_agent()
        self.assertTrue(wait_for(lambda: self.connected() is True), "CR never showed connected")
        st = self.cr()["status"]
        self.assertEqual(st["agentConnection"]["connectedAgents"], 1)
        self.assertEqual(st["agentConnection"]["message"], "1 agent connected")
        types = {c["type"]: c for c in st["conditions"]}
        self.assertIn("Created", types, "a condition owned by another manager was clobbered")
        self.assertEqual(types["Ready"]["status"], "True")
        self.assertEqual(self.cr()["metadata"]["generation"], 1)
        self.stop_agent()
        self.assertTrue(wait_for(lambda: self.connected() is False), "CR never showed disconnected")
        self.assertIn("lastDisconnectedTime", self.cr()["status"]["agentConnection"])

    def e2e_patches(self, since):
        """The status PATCHes of CR e2e since `since` (the fake's arrival times), oldest first."""
        items = self.api.control("GET", f"requests?subresource=status&method=PATCH&name=e2e&since={since!r}")["items"]
        return sorted(items, key=lambda e: e["receivedAt"])

    def test_3_status_converges_after_api_errors(self):
        self.start_agent()
        self.assertTrue(wait_for(lambda: self.connected() is True))
        self.api.control("POST", "errors", {"code": 500, "subresource": "status", "method": "PATCH", "duration": 10})
        t_fault = time.time()  # from here on every status PATCH gets the 500 for 10 s
        self.stop_agent()  # the disconnect is written while every status write fails for 10 s (the window)
        # The writer tried, and the fake answered the injected 500 (its request log says so).
        self.assertTrue(wait_for(lambda: any(e["status"] == 500 for e in self.e2e_patches(t_fault)), timeout=10),
                        "no status PATCH got the injected 500")
        self.assertTrue(self.connected(), "a write got through during the fault window")
        self.assertTrue(wait_for(lambda: self.connected() is False, timeout=20), "status did not converge")
        codes = [e["status"] for e in self.e2e_patches(t_fault)]
        self.assertIn(200, codes, codes)
        first_ok = codes.index(200)
        self.assertGreaterEqual(first_ok, 1, codes)
        self.assertEqual(set(codes[:first_ok]), {500}, codes)  # every attempt before the one that went through

    def test_4_watch_loss_and_compaction_then_secret_rotation_revokes(self):
        self.start_agent()
        self.assertTrue(wait_for(lambda: self.connected() is True))
        self.api.control("POST", "drop-watches", {"mode": "abort"})
        self.api.control("POST", "compact", {})
        # Rotate the CA secret to another CA: the live session must be closed and the CR disconnected.
        rogue = read_bytes(os.path.join(self.pki, "rogue-ca.crt"))
        status, _, body = self.api.request(
            "PATCH", "/api/v1/namespaces/openchoreo-system/secrets/e2e-agent-ca",
            {"data": {"ca.crt": base64.b64encode(rogue).decode()}}, content_type="application/merge-patch+json")
        self.assertEqual(status, 200, body)
        self.assertTrue(wait_for(lambda: self.connected() is False, timeout=20), "revoked session still counted")
        # Rotate back: the agent (reconnecting every 500 ms) gets in again.
        good = read_bytes(os.path.join(self.pki, "tenant-a-ca.crt"))
        self.api.request("PATCH", "/api/v1/namespaces/openchoreo-system/secrets/e2e-agent-ca",
                         {"data": {"ca.crt": base64.b64encode(good).decode()}},
                         content_type="application/merge-patch+json")
        self.assertTrue(wait_for(lambda: self.connected() is True, timeout=20))

    def test_5_heartbeat_writes_are_coalesced(self):
        self.start_agent()
        self.assertTrue(wait_for(lambda: self.connected() is True))
        time.sleep(0.5)
        before = self.patches()
        window = 8.0
        time.sleep(window)  # pings every 200 ms; heartbeat-only status writes at most every 2 s
        writes = self.patches() - before
        self.assertLessEqual(writes, int(window / 2.0) + 1, f"{writes} status patches in {window}s")
        self.assertGreaterEqual(writes, 1, "lastHeartbeatTime was never refreshed")

    def test_6_sigterm_writes_disconnected(self):
        self.start_agent()
        self.assertTrue(wait_for(lambda: self.connected() is True))
        self.gw.send_signal(signal.SIGTERM)
        self.assertEqual(self.gw.wait(timeout=15), 0)
        self.assertIs(self.connected(), False)


if __name__ == "__main__":
    unittest.main()
