"""Against the real binary and a simulated agent: the proxy deny-list default (upstream's current
one), the canonical path checks, and --proxy-policy-file with the strict example shipped in
deploy/examples/proxy-policy/ (caller identity from the internal client certificate, refusals
logged and counted, a changed file applied, a malformed one refused while the last good policy
stays)."""
import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
SIM = os.environ.get("CG_SIM_BIN", os.path.join(ROOT, "build", "bin", "cluster-agent-sim"))
STRICT = os.path.join(ROOT, "deploy", "examples", "proxy-policy", "proxy-policy-strict.yaml")
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import LogLines, dev_pki_and_planes, gateway_cmd, metric_sum, start_gateway  # noqa: E402

PROXY = "/api/proxy/dataplane/p1/_cluster/p1/k8s"


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def issue_internal_client(pki, name, cn):
    """A client certificate with subject CN `cn` from the dev PKI's internal CA (as cert-manager
    issues openchoreo-api's); returns the path without extension."""
    base = os.path.join(pki, name)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/O=OpenChoreo/CN={cn}",
            "-keyout", base + ".key", "-out", base + ".csr")
    with open(base + ".ext", "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", base + ".csr", "-CA", os.path.join(pki, "internal-ca.crt"),
            "-CAkey", os.path.join(pki, "internal-ca.key"), "-CAcreateserial", "-days", "30",
            "-extfile", base + ".ext", "-out", base + ".crt")
    return base


class GatewayWithAgent:
    """One gateway (extra flags) with one simulated agent for plane p1, and helpers."""

    def __init__(self, d, *extra):
        self.pki, self.planes, _ = dev_pki_and_planes(ROOT, d, [("p1", "p1")], "ClusterDataPlane")
        self.controller = os.path.join(self.pki, "controller")  # CN openchoreo-controller-manager
        self.api = issue_internal_client(self.pki, "openchoreo-api", "openchoreo-api")
        self.log = LogLines()
        self.proc, started = start_gateway(gateway_cmd(BIN, self.pki, self.planes, *extra), log=self.log)
        self.api_port, self.health_port = started["internalPort"], started["healthPort"]
        self.sim = subprocess.Popen(
            [SIM, "--server-url", f"wss://localhost:{started['agentPort']}/ws", "--plane-type", "dataplane",
             "--plane-id", "p1", "--client-cert", os.path.join(self.pki, "agent-a.crt"),
             "--client-key", os.path.join(self.pki, "agent-a.key"),
             "--server-ca", os.path.join(self.pki, "gateway-ca.crt"), "--reconnect-delay", "200ms",
             "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self.log.wait("agent connected successfully", timeout=20):
            self.close()
            raise AssertionError("the simulated agent did not connect")

    def close(self):
        self.sim.kill()
        self.sim.wait()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def call(self, method, path, caller):
        """(status, body, headers) of `method PROXY+path` with the client certificate `caller`."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(caller + ".crt", caller + ".key")
        c = http.client.HTTPSConnection("localhost", self.api_port, context=ctx, timeout=10)
        try:
            c.request(method, PROXY + path, body=b"{}" if method in ("POST", "PUT") else None)
            r = c.getresponse()
            return r.status, r.read().decode(), dict(r.getheaders())
        finally:
            c.close()

    def metric(self, name, **labels):
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return metric_sum(text, name, **labels)


class DefaultDenyListTest(unittest.TestCase):
    """No policy file: upstream's current deny-list, and paths judged as the agent will request them."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-deny-")
        cls.gw = GatewayWithAgent(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        cls.tmp.cleanup()

    def test_cluster_wide_secrets_and_serviceaccounts_reach_the_agent(self):
        for caller in (self.gw.controller, self.gw.api):
            for path, kind in (("/api/v1/secrets", "SecretList"), ("/api/v1/serviceaccounts", "ServiceAccountList"),
                               ("/api/v1/secrets?labelSelector=openchoreo.dev%2Fowner%3Dx", "SecretList")):
                with self.subTest(caller=os.path.basename(caller), path=path):
                    status, body, headers = self.gw.call("GET", path, caller)
                    self.assertEqual(status, 200, body)
                    self.assertIn(f'"kind":"{kind}"', body)
                    self.assertIn("X-Agent-Index", headers)

    def test_kube_system_secrets_and_token_creation_are_blocked_logged_and_counted(self):
        rows = [("GET", "/api/v1/namespaces/kube-system/secrets", "builtin:kube-system-secrets"),
                ("GET", "/api/v1/watch/namespaces/kube-system/secrets", "builtin:kube-system-secrets"),
                ("GET", "/api/v1/namespaces/kube-system%2Fsecrets/x", "builtin:kube-system-secrets"),
                ("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token", "builtin:serviceaccount-token")]
        for method, path, rule in rows:
            with self.subTest(method=method, path=path):
                before = self.gw.metric("cluster_gateway_proxy_policy_denied_total", rule=rule)
                mark = self.gw.log.mark()
                status, body, _ = self.gw.call(method, path, self.gw.controller)
                self.assertEqual(status, 403, body)
                self.assertTrue(body.startswith("Access to path is blocked: /api/v1/"), body)
                ev = self.gw.log.wait("request validation failed", since=mark, rule=rule)
                self.assertTrue(ev)
                self.assertEqual(ev[0]["method"], method)
                self.assertEqual(ev[0]["caller"]["commonName"], "openchoreo-controller-manager")
                self.assertEqual(self.gw.metric("cluster_gateway_proxy_policy_denied_total", rule=rule), before + 1)

    def test_paths_the_agent_would_reinterpret_are_400(self):
        rows = [("GET", "/api/v1/namespaces/kube-system/secrets%3F", "query", "'?'"),
                ("POST", "/api/v1/namespaces/ns/serviceaccounts/x/token%3F", "query", "'?'"),
                ("GET", "/api/v1/namespaces/kube-system/secrets%23", "fragment", "'#'"),
                ("GET", "/api/v1/namespaces/kube-system/%2573ecrets", "percent", "double encoding"),
                ("GET", "/api/v1/namespaces/kube-system%252Fsecrets", "percent", "double encoding"),
                ("GET", "/api/v1/namespaces/kube-system//secrets", "empty_segment", "empty segment"),
                ("GET", "/api/v1/namespaces/kube-system/./secrets", "dot_segment", "'.' segment")]
        for method, path, reason, text in rows:
            with self.subTest(method=method, path=path):
                before = self.gw.metric("cluster_gateway_proxy_path_rejected_total", reason=reason)
                mark = self.gw.log.mark()
                status, body, headers = self.gw.call(method, path, self.gw.api)
                self.assertEqual(status, 400, body)
                self.assertIn(text, body)
                self.assertTrue(body.endswith("\n"))
                self.assertEqual(headers.get("Content-Type"), "text/plain; charset=utf-8")
                ev = self.gw.log.wait("request validation failed", since=mark, pathForm=reason)
                self.assertTrue(ev)
                self.assertEqual(ev[0]["caller"]["commonName"], "openchoreo-api")
                self.assertEqual(self.gw.metric("cluster_gateway_proxy_path_rejected_total", reason=reason), before + 1)


class StrictPolicyTest(unittest.TestCase):
    """--proxy-policy-file with a copy of the shipped strict example."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-policy-")
        cls.policy = os.path.join(cls.tmp.name, "policy.yaml")
        shutil.copyfile(STRICT, cls.policy)
        cls.gw = GatewayWithAgent(cls.tmp.name, "--proxy-policy-file", cls.policy)

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        cls.tmp.cleanup()

    def write_policy(self, text):
        with open(self.policy + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.policy + ".tmp", self.policy)

    def test_1_controller_manager_lists_secrets_other_callers_get_403(self):
        self.assertTrue(self.gw.log.find("proxy policy loaded", rules=4, defaultAction="allow"))
        status, body, _ = self.gw.call("GET", "/api/v1/secrets", self.gw.controller)
        self.assertEqual(status, 200, body)
        self.assertIn('"kind":"SecretList"', body)
        status, body, _ = self.gw.call("GET", "/api/v1/serviceaccounts", self.gw.controller)
        self.assertEqual(status, 200, body)
        before = self.gw.metric("cluster_gateway_proxy_policy_denied_total", rule="deny-secrets")
        mark = self.gw.log.mark()
        status, body, _ = self.gw.call("GET", "/api/v1/secrets", self.gw.api)
        self.assertEqual(status, 403, body)
        self.assertEqual(body, "Access to path is denied by proxy policy (rule deny-secrets): /api/v1/secrets\n")
        ev = self.gw.log.wait("request validation failed", since=mark, rule="deny-secrets")
        self.assertTrue(ev)
        self.assertEqual(ev[0]["caller"], {"commonName": "openchoreo-api"})
        self.assertEqual((ev[0]["method"], ev[0]["path"], ev[0]["status"]), ("GET", "/api/v1/secrets", 403))
        self.assertEqual(self.gw.metric("cluster_gateway_proxy_policy_denied_total", rule="deny-secrets"), before + 1)
        # The legacy watch path and a namespaced Secret are the same resources.
        self.assertEqual(self.gw.call("GET", "/api/v1/watch/secrets", self.gw.api)[0], 403)
        self.assertEqual(self.gw.call("GET", "/api/v1/namespaces/dp/secrets", self.gw.api)[0], 403)
        self.assertEqual(self.gw.call("GET", "/api/v1/namespaces/dp/secrets", self.gw.controller)[0], 200)
        status, body, _ = self.gw.call("GET", "/api/v1/serviceaccounts", self.gw.api)
        self.assertEqual((status, body), (403, "Access to path is denied by proxy policy (rule "
                                                "deny-cluster-serviceaccounts): /api/v1/serviceaccounts\n"))
        # Everything else is allowed, and the built-in deny-list still applies to the controller-manager.
        status, body, _ = self.gw.call("GET", "/api/v1/namespaces/default/pods", self.gw.api)
        self.assertEqual(status, 200, body)
        status, body, _ = self.gw.call("GET", "/api/v1/namespaces/kube-system/secrets", self.gw.controller)
        self.assertEqual((status, body), (403, "Access to path is blocked: /api/v1/namespaces/kube-system/secrets\n"))

    def test_2_a_changed_file_is_applied(self):
        applied = self.gw.metric("cluster_gateway_proxy_policy_reloads_total", result="ok")
        mark = self.gw.log.mark()
        self.write_policy("defaultAction: allow\nrules:\n"
                          "  - name: api-no-pods\n    action: deny\n    callers: [{commonName: openchoreo-api}]\n"
                          "    paths: [/api/v1/namespaces/*/pods/**]\n")
        self.assertTrue(self.gw.log.wait("proxy policy reloaded", since=mark, rules=1, timeout=10))
        self.assertEqual(self.gw.metric("cluster_gateway_proxy_policy_reloads_total", result="ok"), applied + 1)
        status, body, _ = self.gw.call("GET", "/api/v1/secrets", self.gw.api)
        self.assertEqual(status, 200, body)
        status, body, _ = self.gw.call("GET", "/api/v1/namespaces/default/pods", self.gw.api)
        self.assertEqual((status, body), (403, "Access to path is denied by proxy policy (rule api-no-pods): "
                                               "/api/v1/namespaces/default/pods\n"))
        self.assertEqual(self.gw.call("GET", "/api/v1/namespaces/default/pods", self.gw.controller)[0], 200)

    def test_3_a_malformed_file_keeps_the_last_good_policy(self):
        errors = self.gw.metric("cluster_gateway_proxy_policy_reloads_total", result="error")
        mark = self.gw.log.mark()
        self.write_policy("defaultAction: allow\nrules:\n  - name: typo\n    action: deny\n"
                          "    caller: [{commonName: openchoreo-controller-manager}]\n    paths: [/api/**]\n")
        ev = self.gw.log.wait("proxy policy reload refused; the previous policy stays in force", since=mark, timeout=10)
        self.assertTrue(ev, "the malformed file was not reported")
        self.assertIn("line 5: rules[0] (typo): unknown key 'caller'", ev[0]["reason"])
        self.assertEqual(self.gw.metric("cluster_gateway_proxy_policy_reloads_total", result="error"), errors + 1)
        # Still the policy of test_2: pods denied to openchoreo-api, everything allowed to the controller.
        self.assertEqual(self.gw.call("GET", "/api/v1/namespaces/default/pods", self.gw.api)[0], 403)
        status, body, _ = self.gw.call("GET", "/api/v1/namespaces/default/pods", self.gw.controller)
        self.assertEqual(status, 200, body)
        # Refused once, not again on every poll (an absence: watched over two poll intervals).
        time.sleep(2.5)
        self.assertEqual(len(self.gw.log.find("proxy policy reload refused; the previous policy stays in force",
                                              since=mark)), 1)


class StartupTest(unittest.TestCase):
    def test_a_malformed_policy_file_stops_the_start_with_its_reason(self):
        with tempfile.TemporaryDirectory(prefix="cg-policy-start-") as d:
            pki, planes, _ = dev_pki_and_planes(ROOT, d, [("p1", "p1")], "ClusterDataPlane")
            bad = os.path.join(d, "policy.yaml")
            with open(bad, "w") as f:
                f.write("defaultAction: allow\nrules:\n  - name: x\n    action: block\n    paths: [/x]\n")
            r = subprocess.run(gateway_cmd(BIN, pki, planes, "--proxy-policy-file", bad), capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(f"cluster-gateway: --proxy-policy-file: proxy policy file {bad}: line 4: rules[0] (x).action: "
                          "'block' is not allow or deny", r.stderr)
            # The environment variable sets the same flag.
            env = dict(os.environ, PROXY_POLICY_FILE=bad)
            r = subprocess.run(gateway_cmd(BIN, pki, planes), capture_output=True, text=True, timeout=30, env=env)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("'block' is not allow or deny", r.stderr)


if __name__ == "__main__":
    unittest.main()
