"""Fidelity tests of the fake Kubernetes API server, with the real kubectl and with raw HTTP.

Run: cd tests/fakes/kube_apiserver && /usr/bin/python3 test_fake_apiserver.py (exit 77 when a test was
skipped, e.g. without kubectl; 1 then with CI=true), or /usr/bin/python3 -m unittest -v test_fake_apiserver
Every wait is bounded; the whole file takes well under a minute.
"""
import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

import harness
from harness import FakeApiServer

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
G = "/apis/openchoreo.dev/v1alpha1"
CWP = G + "/clusterworkflowplanes"
MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
SMP = "application/strategic-merge-patch+json"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
SVC_LABEL = "kubernetes.io/service-name"


def cwp(name, plane_id=None, labels=None, **extra):
    o = {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "ClusterWorkflowPlane",
         "metadata": {"name": name}, "spec": {"planeID": plane_id or name, "clusterAgent": {"clientCA": {"value": "pem"}}}}
    if labels:
        o["metadata"]["labels"] = labels
    o.update(extra)
    return o


def lease(name, holder="replica-a", duration=15, **spec):
    s = {"holderIdentity": holder, "leaseDurationSeconds": duration,
         "acquireTime": "2026-12-06T18:00:00.000000Z", "renewTime": "2026-12-06T18:00:00.000000Z", "leaseTransitions": 0}
    s.update(spec)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "default"},
            "spec": s}


def endpoint_slice(name, service, addresses, address_type="IPv4", ready=True, port=8443):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {SVC_LABEL: service}},
            "addressType": address_type,
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready, "serving": ready, "terminating": False},
                           "hostname": f"replica-{i}", "targetRef": {"kind": "Pod", "namespace": "default", "name": f"{service}-{i}"}}
                          for i, a in enumerate(addresses)],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


class ServerCase(unittest.TestCase):
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fake-kube-")
        cls.pki = harness.make_pki(cls.tmp)
        cls.srv = FakeApiServer(cls.tmp, pki=cls.pki, extra_args=cls.server_args)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        with open(cls.srv.stderr_path) as f:
            stderr = f.read()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert rc == 0, f"fake apiserver exited with {rc}"
        assert "Traceback" not in stderr and "Error handling request" not in stderr, stderr

    def setUp(self):
        self.srv.control("DELETE", "faults")
        self.srv.control("DELETE", "requests")
        self.srv.control("DELETE", "watch-chunking")
        self.srv.control("PUT", "config", {"bookmarkInterval": 1.0, "history": 1000, "logBodies": False,
                                           "idleTimeout": 0, "idleCloseDelay": 0})

    # helpers
    def req(self, method, path, body=None, ct=None, **kw):
        return self.srv.request(method, path, body, ct, **kw)

    def create(self, obj, path=CWP):
        st, _, out = self.req("POST", path, obj)
        self.assertEqual(st, 201, out)
        return out

    def assertStatus(self, payload, code, reason):
        self.assertIsInstance(payload, dict, payload)
        self.assertEqual(payload.get("kind"), "Status")
        self.assertEqual(payload.get("apiVersion"), "v1")
        self.assertEqual(payload.get("status"), "Failure")
        self.assertEqual(payload.get("code"), code)
        self.assertEqual(payload.get("reason"), reason)
        self.assertTrue(payload.get("message"))


# ---------------------------------------------------------------------------------------------


@unittest.skipUnless(os.path.exists(KUBECTL), "kubectl is not installed")
class KubectlTest(ServerCase):
    """The real kubectl against the fake: discovery, apply, get, patch, watch, errors."""

    def kubectl(self, *args, check=True, timeout=20, stdin=None):
        env = dict(os.environ, KUBECONFIG=self.srv.kubeconfig, HOME=self.tmp)
        p = subprocess.run([KUBECTL, "--cache-dir", os.path.join(self.tmp, "kcache"), *args], input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
        if check and p.returncode != 0:
            self.fail(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def write(self, name, docs):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        return path

    def test_apply_and_get(self):
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wf-ca", "namespace": "default"},
                  "stringData": {"ca.crt": "PEM"}}
        path = self.write("apply.yaml", [cwp("kc-apply", labels={"suite": "kubectl"}), secret])
        out = self.kubectl("apply", "-f", path).stdout
        self.assertIn("clusterworkflowplane.openchoreo.dev/kc-apply created", out)
        self.assertIn("secret/wf-ca created", out)
        out = self.kubectl("apply", "-f", path).stdout
        self.assertIn("clusterworkflowplane.openchoreo.dev/kc-apply unchanged", out)

        lst = json.loads(self.kubectl("get", "clusterworkflowplanes", "-o", "json").stdout)
        names = [i["metadata"]["name"] for i in lst["items"]]
        self.assertIn("kc-apply", names)
        lst2 = json.loads(self.kubectl("get", "cwp", "-l", "suite=kubectl", "-o", "json").stdout)
        self.assertEqual([i["metadata"]["name"] for i in lst2["items"]], ["kc-apply"])
        obj = lst2["items"][0]
        self.assertEqual(obj["metadata"]["generation"], 1)
        self.assertTrue(obj["metadata"]["uid"])
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration", obj["metadata"]["annotations"])

        s = json.loads(self.kubectl("get", "secret", "wf-ca", "-o", "json").stdout)
        self.assertEqual(s["data"], {"ca.crt": "UEVN"})  # stringData converted to base64 data
        self.assertNotIn("stringData", s)
        self.assertEqual(s["type"], "Opaque")

        table = self.kubectl("get", "cwp", "kc-apply").stdout
        self.assertRegex(table, r"NAME\s+AGE")
        self.assertIn("kc-apply", table)
        self.assertIn("Active", self.kubectl("get", "ns", "default").stdout)
        # Delete via kubectl; the object is gone afterwards.
        self.assertIn("deleted", self.kubectl("delete", "-f", path).stdout)
        p = self.kubectl("get", "cwp", "kc-apply", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('Error from server (NotFound): clusterworkflowplanes.openchoreo.dev "kc-apply" not found', p.stderr)

    def test_typed_creates_use_protobuf(self):
        # `kubectl create namespace/secret` send protobuf bodies, which the fake decodes like a real server.
        self.kubectl("create", "namespace", "kc-team")
        self.kubectl("-n", "kc-team", "create", "secret", "generic", "kc-sec", "--from-literal=ca.crt=PEM")
        s = json.loads(self.kubectl("-n", "kc-team", "get", "secret", "kc-sec", "-o", "json").stdout)
        self.assertEqual((s["data"], s["type"]), ({"ca.crt": "UEVN"}, "Opaque"))
        posts = self.srv.control("GET", "requests?method=POST")["items"]
        self.assertEqual({p["contentType"] for p in posts}, {"application/vnd.kubernetes.protobuf"})
        dp = {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "DataPlane", "metadata": {"name": "kc-dp", "namespace": "kc-team"},
              "spec": {"planeID": "kc-dp"}}
        self.kubectl("apply", "-f", self.write("dp.yaml", [dp]))
        self.assertIn("kc-team", self.kubectl("get", "dp", "-A").stdout)
        p = self.kubectl("-n", "kc-team", "create", "secret", "generic", "kc-sec", "--from-literal=a=b", check=False)
        self.assertIn('secrets "kc-sec" already exists', p.stderr)
        # Deleting the namespace removes its contents (kubectl waits for the namespace to go away).
        self.kubectl("delete", "namespace", "kc-team", "--timeout=10s")
        self.assertNotIn("kc-dp", self.kubectl("get", "dp", "-A").stdout)

    def test_status_patch_keeps_generation_and_spec_patch_bumps_it(self):
        self.create(cwp("kc-status"))
        before = json.loads(self.kubectl("get", "cwp", "kc-status", "-o", "json").stdout)
        self.kubectl("patch", "clusterworkflowplane", "kc-status", "--subresource=status", "--type=merge", "-p",
                     '{"status":{"agentConnection":{"connected":true,"connectedAgents":1}}}')
        after = json.loads(self.kubectl("get", "cwp", "kc-status", "-o", "json").stdout)
        self.assertEqual(after["status"]["agentConnection"], {"connected": True, "connectedAgents": 1})
        self.assertEqual(after["metadata"]["generation"], before["metadata"]["generation"])
        self.assertEqual(after["spec"], before["spec"])
        self.assertGreater(int(after["metadata"]["resourceVersion"]), int(before["metadata"]["resourceVersion"]))
        log = self.srv.control("GET", "requests?subresource=status&method=PATCH")["items"]
        self.assertEqual(len(log), 1)
        self.assertEqual(log[0]["contentType"], MERGE)
        self.assertEqual(log[0]["path"], CWP + "/kc-status/status")
        self.assertEqual(log[0]["status"], 200)

        self.kubectl("patch", "cwp", "kc-status", "--type=merge", "-p", '{"spec":{"planeID":"kc-status-2"}}')
        spec = json.loads(self.kubectl("get", "cwp", "kc-status", "-o", "json").stdout)
        self.assertEqual(spec["metadata"]["generation"], before["metadata"]["generation"] + 1)
        self.assertEqual(spec["status"], after["status"])  # a spec write leaves status alone
        # A status patch through the main resource is ignored (status is a subresource).
        self.kubectl("patch", "cwp", "kc-status", "--type=merge", "-p", '{"status":{"agentConnection":{"connected":false,"connectedAgents":0}}}')
        again = json.loads(self.kubectl("get", "cwp", "kc-status", "-o", "json").stdout)
        self.assertEqual(again["status"], after["status"])
        self.assertEqual(again["metadata"]["generation"], spec["metadata"]["generation"])

    def test_watch_sees_modified(self):
        self.create(cwp("kc-watch"))
        env = dict(os.environ, KUBECONFIG=self.srv.kubeconfig, HOME=self.tmp)
        proc = subprocess.Popen([KUBECTL, "--cache-dir", os.path.join(self.tmp, "kcache"), "get", "cwp", "--watch",
                                 "-o", "json", "--output-watch-events"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            events = KubectlEvents(proc)
            ev = events.until(lambda e: e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "kc-watch", 10)
            self.assertEqual(ev["object"]["kind"], "ClusterWorkflowPlane")
            harness_wait_watchers(self.srv, 1)
            self.kubectl("patch", "cwp", "kc-watch", "--subresource=status", "--type=merge", "-p",
                         '{"status":{"agentConnection":{"connected":true,"connectedAgents":2}}}')
            ev = events.until(lambda e: e["type"] == "MODIFIED" and e["object"]["metadata"]["name"] == "kc-watch", 10)
            self.assertEqual(ev["object"]["status"]["agentConnection"]["connectedAgents"], 2)
            self.kubectl("delete", "cwp", "kc-watch")
            events.until(lambda e: e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "kc-watch", 10)
        finally:
            proc.kill()
            proc.communicate(timeout=5)

    def test_errors_as_kubectl_prints_them(self):
        self.create(cwp("kc-err"))
        p = self.kubectl("patch", "cwp", "kc-err", "--type=merge", "-p", '{"spec":{"planeID":"Not_Valid"}}', check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('The ClusterWorkflowPlane "kc-err" is invalid: spec.planeID: Invalid value: "Not_Valid"', p.stderr)
        # kubectl's default patch type is strategic merge, which CRs do not support (415), like a real server.
        p = self.kubectl("patch", "cwp", "kc-err", "-p", '{"spec":{"planeID":"x"}}', check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("application/strategic-merge-patch+json is not supported", p.stderr)
        p = self.kubectl("create", "-f", "-", stdin=json.dumps(cwp("kc-err")), check=False)
        self.assertIn("Error from server (AlreadyExists)", p.stderr)
        self.assertIn('clusterworkflowplanes.openchoreo.dev "kc-err" already exists', p.stderr)

    def test_server_side_apply(self):
        path = self.write("ssa.yaml", [cwp("kc-ssa", "one")])
        self.assertIn("serverside-applied", self.kubectl("apply", "--server-side", "-f", path).stdout)
        other = self.write("ssa2.yaml", [cwp("kc-ssa", "two")])
        p = self.kubectl("apply", "--server-side", "--field-manager=other", "-f", other, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('conflict with "kubectl"', p.stderr)
        self.assertIn(".spec.planeID", p.stderr)
        self.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", other)
        obj = json.loads(self.kubectl("get", "cwp", "kc-ssa", "-o", "json", "--show-managed-fields").stdout)
        self.assertEqual(obj["spec"]["planeID"], "two")
        self.assertEqual(obj["metadata"]["generation"], 2)
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        self.assertIn(("other", "Apply"), managers)
        applies = [r for r in self.srv.control("GET", "requests?method=PATCH")["items"] if r["contentType"] == APPLY]
        self.assertTrue(applies and all(r["query"].get("fieldManager") for r in applies))

    def test_leases_and_endpointslices(self):
        slices = [endpoint_slice("kc-gw-a", "kc-gw", ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]),
                  endpoint_slice("kc-gw-b", "kc-gw", ["10.1.1.1"]),
                  endpoint_slice("kc-other", "kc-other", ["10.1.2.1"])]
        path = self.write("lease.yaml", [lease("kc-leader"), *slices])
        out = self.kubectl("apply", "-f", path).stdout
        self.assertIn("lease.coordination.k8s.io/kc-leader created", out)
        self.assertIn("endpointslice.discovery.k8s.io/kc-gw-a created", out)
        self.assertIn("lease.coordination.k8s.io/kc-leader unchanged", self.kubectl("apply", "-f", path).stdout)
        # A changed file: kubectl computes a strategic merge patch from last-applied (Lease is a built-in type).
        changed = lease("kc-leader", holder="replica-b", leaseTransitions=1)
        self.assertIn("lease.coordination.k8s.io/kc-leader configured",
                      self.kubectl("apply", "-f", self.write("lease2.yaml", [changed])).stdout)
        patches = self.srv.control("GET", "requests?method=PATCH&resource=leases")["items"]
        self.assertEqual([p["contentType"] for p in patches], [SMP])

        table = self.kubectl("get", "leases").stdout
        self.assertRegex(table, r"NAME\s+HOLDER\s+AGE")
        self.assertRegex(table, r"kc-leader\s+replica-b\s")
        got = json.loads(self.kubectl("get", "lease", "kc-leader", "-o", "json").stdout)
        self.assertEqual((got["spec"]["holderIdentity"], got["spec"]["leaseTransitions"]), ("replica-b", 1))
        sel = json.loads(self.kubectl("get", "endpointslices", "-l", f"{SVC_LABEL}=kc-gw", "-o", "json").stdout)
        self.assertEqual([i["metadata"]["name"] for i in sel["items"]], ["kc-gw-a", "kc-gw-b"])
        table = self.kubectl("get", "endpointslices", "-l", f"{SVC_LABEL}=kc-gw").stdout
        self.assertRegex(table, r"NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE")
        self.assertRegex(table, r"kc-gw-a\s+IPv4\s+8443\s+10\.1\.0\.1,10\.1\.0\.2,10\.1\.0\.3 \+ 1 more\.\.\.")
        self.assertNotIn("kc-other", table)

        # Optimistic concurrency through kubectl: replace with a stale resourceVersion is a Conflict.
        stale = dict(got, spec=dict(got["spec"], holderIdentity="replica-c"))
        self.kubectl("patch", "lease", "kc-leader", "--type=merge", "-p", '{"spec":{"renewTime":"2026-12-06T18:01:00.000000Z"}}')
        p = self.kubectl("replace", "-f", self.write("stale.yaml", [stale]), check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('Error from server (Conflict): error when replacing', p.stderr)
        self.assertIn('Operation cannot be fulfilled on leases.coordination.k8s.io "kc-leader": the object has been modified', p.stderr)
        p = self.kubectl("create", "-f", self.write("zero.yaml", [lease("kc-zero", duration=0)]), check=False)
        self.assertIn('The Lease "kc-zero" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0', p.stderr)
        bad = endpoint_slice("kc-notype", "kc-gw", ["10.1.3.1"])
        del bad["addressType"]
        p = self.kubectl("create", "-f", self.write("notype.yaml", [bad]), check=False)
        self.assertIn('The EndpointSlice "kc-notype" is invalid: addressType: Required value', p.stderr)
        # kubectl's default field validation (Strict) rejects an unknown field; --validate=warn prints the warning.
        odd = lease("kc-odd", bogus=1)
        p = self.kubectl("create", "-f", self.write("odd.yaml", [odd]), check=False)
        self.assertIn('strict decoding error: unknown field "spec.bogus"', p.stderr)
        p = self.kubectl("create", "--validate=warn", "-f", self.write("odd.yaml", [odd]))
        self.assertIn('Warning: unknown field "spec.bogus"', p.stderr)

        # kubectl's watch sees a slice change and go away.
        env = dict(os.environ, KUBECONFIG=self.srv.kubeconfig, HOME=self.tmp)
        proc = subprocess.Popen([KUBECTL, "--cache-dir", os.path.join(self.tmp, "kcache"), "get", "endpointslices", "-l",
                                 f"{SVC_LABEL}=kc-gw", "--watch", "-o", "json", "--output-watch-events"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            events = KubectlEvents(proc)
            events.until(lambda e: e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "kc-gw-b", 10)
            harness_wait_watchers(self.srv, 1)
            self.kubectl("patch", "endpointslice", "kc-gw-b", "--type=json", "-p",
                         '[{"op":"replace","path":"/endpoints/0/conditions/ready","value":false}]')
            ev = events.until(lambda e: e["type"] == "MODIFIED", 10)
            self.assertIs(ev["object"]["endpoints"][0]["conditions"]["ready"], False)
            self.assertEqual(ev["object"]["metadata"]["generation"], 2)
            self.assertIn('endpointslice.discovery.k8s.io "kc-gw-b" deleted', self.kubectl("delete", "endpointslice", "kc-gw-b").stdout)
            events.until(lambda e: e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "kc-gw-b", 10)
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()
            proc.stderr.close()

        self.assertIn('lease.coordination.k8s.io "kc-leader" deleted', self.kubectl("delete", "lease", "kc-leader").stdout)
        p = self.kubectl("get", "lease", "kc-leader", check=False)
        self.assertIn('Error from server (NotFound): leases.coordination.k8s.io "kc-leader" not found', p.stderr)

    # -- the rude modes, seen by the real kubectl (client-go) ------------------------------------------

    def test_watch_with_split_and_coalesced_chunks(self):
        self.create(cwp("kc-chunks"))
        self.srv.control("POST", "watch-chunking", {"split": 5, "coalesce": 0.05, "gap": 0.002})
        env = dict(os.environ, KUBECONFIG=self.srv.kubeconfig, HOME=self.tmp)
        proc = subprocess.Popen([KUBECTL, "--cache-dir", os.path.join(self.tmp, "kcache"), "get", "cwp", "--watch",
                                 "-o", "json", "--output-watch-events"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            events = KubectlEvents(proc)
            events.until(lambda e: e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "kc-chunks", 10)
            harness_wait_watchers(self.srv, 1)
            for n in (1, 2):
                self.req("PATCH", CWP + "/kc-chunks/status",
                         {"status": {"agentConnection": {"connected": True, "connectedAgents": n}}}, MERGE)
            ev = events.until(lambda e: e["type"] == "MODIFIED" and
                              e["object"]["status"]["agentConnection"]["connectedAgents"] == 2, 10)
            self.assertEqual(ev["object"]["metadata"]["name"], "kc-chunks")
        finally:
            proc.kill()
            proc.communicate(timeout=5)

    def test_paged_list(self):
        for i in range(5):
            self.create(cwp(f"kc-page-{i}", labels={"suite": "kc-page"}))
        out = json.loads(self.kubectl("get", "cwp", "-l", "suite=kc-page", "--chunk-size=2", "-o", "json").stdout)
        self.assertEqual([o["metadata"]["name"] for o in out["items"]], [f"kc-page-{i}" for i in range(5)])
        lists = [e for e in self.srv.control("GET", "requests?verb=list&resource=clusterworkflowplanes")["items"]
                 if e["query"].get("labelSelector") == "suite=kc-page"]
        self.assertEqual([e["query"].get("limit") for e in lists], ["2", "2", "2"])
        self.assertEqual([bool(e["query"].get("continue")) for e in lists], [False, True, True])

    def test_jittered_429_and_503_are_retried_by_client_go(self):
        # client-go retries a 429 or 5xx that carries Retry-After (up to 10 times): kubectl gets there.
        self.create(cwp("kc-jitter"))
        self.srv.control("POST", "jitter", {"fraction": 0.5, "codes": [429, 503], "retryAfter": 1, "seed": 11,
                                            "resource": "clusterworkflowplanes"})
        for _ in range(3):
            self.assertIn("kc-jitter", self.kubectl("get", "cwp", "kc-jitter", "-o", "name", timeout=60).stdout)
        log = self.srv.control("GET", "requests?resource=clusterworkflowplanes")["items"]
        self.assertTrue({429, 503} & {e["status"] for e in log}, [e["status"] for e in log])

    def test_idle_close_racing_a_request_is_retried_by_client_go(self):
        # Every request on a kept-alive connection arrives after the server gave up on it: Go's transport
        # retries those (GETs) on a new connection, as it does when a real server's idle close races it.
        self.create(cwp("kc-idle"))
        self.srv.control("PUT", "config", {"idleTimeout": 0.001, "idleCloseDelay": 60})
        self.assertIn("kc-idle", self.kubectl("get", "cwp", "kc-idle", "-o", "name").stdout)
        self.srv.control("PUT", "config", {"idleTimeout": 0})
        log = self.srv.control("GET", "requests")["items"]
        dropped = [e for e in log if e.get("closedIdle")]
        self.assertTrue(dropped, "kubectl never reused a connection")
        for d in dropped:
            self.assertEqual((d["status"], d["connectionRequest"] > 1), (0, True))
            later = [e for e in log if e["path"] == d["path"] and e["receivedAt"] > d["receivedAt"] and e["status"] == 200]
            self.assertTrue(later, f"{d['path']} was not retried")

    def test_validate_false_without_openapi(self):
        # With /openapi/v3 missing too, kubectl's client-side validation cannot run: --validate=false is needed.
        d = tempfile.mkdtemp(dir=self.tmp)
        srv = FakeApiServer(d, pki=self.pki, extra_args=["--no-openapi"])
        try:
            path = self.write("noapi.yaml", [cwp("kc-noapi")])
            env = dict(os.environ, KUBECONFIG=srv.kubeconfig, HOME=d)
            run = lambda *a: subprocess.run([KUBECTL, "--cache-dir", os.path.join(d, "c"), *a], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, timeout=20, env=env)
            p = run("apply", "-f", path)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("--validate=false", p.stderr)
            p = run("apply", "--validate=false", "-f", path)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            self.assertEqual(srv.stop(), 0)


class KubectlEvents:
    """Parses the concatenated (pretty-printed) JSON documents kubectl writes while watching."""

    def __init__(self, proc):
        self.proc, self.buf, self.dec = proc, "", json.JSONDecoder()
        os.set_blocking(proc.stdout.fileno(), False)

    def until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            while True:
                s = self.buf.lstrip()
                if not s:
                    break
                try:
                    obj, end = self.dec.raw_decode(s)
                except ValueError:
                    break
                self.buf = s[end:]
                if pred(obj):
                    return obj
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"kubectl watch: no matching event in {timeout}s; pending={self.buf[:200]!r}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = self.proc.stdout.read()
                if chunk == b"" and self.proc.poll() is not None:
                    raise AssertionError("kubectl watch exited: " + self.proc.stderr.read().decode())
                self.buf += (chunk or b"").decode()


def harness_wait_watchers(srv, n, timeout=5):
    deadline = time.monotonic() + timeout
    while srv.control("GET", "watches")["count"] < n:
        if time.monotonic() > deadline:
            raise AssertionError("watch not established")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------


class HttpTest(ServerCase):
    """Raw HTTP checks of status codes, Status bodies and semantics."""

    def test_auth(self):
        st, _, body = self.req("GET", CWP, token=False)
        self.assertEqual(st, 401)
        self.assertStatus(body, 401, "Unauthorized")
        st, _, body = self.req("GET", CWP, token="wrong")
        self.assertEqual(st, 401)
        st, _, body = self.req("GET", "/version", token=False)
        self.assertEqual((st, body["major"]), (200, "1"))

    def test_discovery(self):
        st, _, body = self.req("GET", G)
        self.assertEqual(st, 200)
        res = {r["name"]: r for r in body["resources"]}
        self.assertEqual(res["clusterworkflowplanes"]["shortNames"][0], "cwp")
        self.assertEqual(res["clusterdataplanes"]["shortNames"][0], "cdp")
        self.assertEqual(res["clusterobservabilityplanes"]["shortNames"][0], "cop")
        self.assertEqual(res["dataplanes"]["shortNames"][0], "dp")
        self.assertTrue(res["dataplanes"]["namespaced"])
        self.assertFalse(res["clusterworkflowplanes"]["namespaced"])
        self.assertEqual(res["clusterworkflowplanes/status"]["verbs"], ["get", "patch", "update"])
        self.assertIn("watch", res["workflowplanes"]["verbs"])
        st, _, body = self.req("GET", "/api/v1")
        self.assertEqual({r["name"] for r in body["resources"]} >= {"secrets", "namespaces"}, True)
        st, _, body = self.req("GET", "/apis")
        # The real server's order: built-in groups first, CRD groups last.
        self.assertEqual([g["preferredVersion"]["groupVersion"] for g in body["groups"]],
                         ["coordination.k8s.io/v1", "discovery.k8s.io/v1", "openchoreo.dev/v1alpha1"])
        st, _, _ = self.req("GET", "/openapi/v2")
        self.assertEqual(st, 404)

    def test_not_found_and_already_exists(self):
        st, _, body = self.req("GET", CWP + "/missing")
        self.assertEqual(st, 404)
        self.assertStatus(body, 404, "NotFound")
        self.assertEqual(body["message"], 'clusterworkflowplanes.openchoreo.dev "missing" not found')
        self.assertEqual(body["details"], {"name": "missing", "group": "openchoreo.dev", "kind": "clusterworkflowplanes"})
        st, _, body = self.req("GET", "/api/v1/namespaces/default/secrets/missing")
        self.assertEqual(body["message"], 'secrets "missing" not found')
        self.assertEqual(body["details"]["group"], "")
        st, _, body = self.req("GET", G + "/nosuchthings")
        self.assertEqual(st, 404)
        self.create(cwp("dup"))
        st, _, body = self.req("POST", CWP, cwp("dup"))
        self.assertEqual(st, 409)
        self.assertStatus(body, 409, "AlreadyExists")
        st, _, body = self.req("POST", G + "/namespaces/nope/dataplanes", {"metadata": {"name": "x"}, "spec": {}})
        self.assertEqual(st, 404)
        self.assertEqual(body["message"], 'namespaces "nope" not found')

    def test_create_sets_metadata(self):
        o = self.create(cwp("meta", status={"agentConnection": {"connected": True, "connectedAgents": 1}}))
        m = o["metadata"]
        self.assertEqual(m["generation"], 1)
        self.assertTrue(m["uid"] and m["creationTimestamp"].endswith("Z"))
        self.assertNotIn("status", o)  # status is reset on create, like a CRD with a status subresource
        rv1 = int(m["resourceVersion"])
        o2 = self.create(cwp("meta-2"))
        self.assertGreater(int(o2["metadata"]["resourceVersion"]), rv1)
        st, _, lst = self.req("GET", CWP)
        self.assertEqual(lst["kind"], "ClusterWorkflowPlaneList")
        self.assertGreaterEqual(int(lst["metadata"]["resourceVersion"]), int(o2["metadata"]["resourceVersion"]))
        st, _, body = self.req("POST", CWP, {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "ClusterWorkflowPlane",
                                             "metadata": {"generateName": "gen-"}, "spec": {}})
        self.assertEqual(st, 201)
        self.assertTrue(body["metadata"]["name"].startswith("gen-"))

    def test_invalid(self):
        st, _, body = self.req("POST", CWP, cwp("bad-id", "Bad_ID"))
        self.assertEqual(st, 422)
        self.assertStatus(body, 422, "Invalid")
        self.assertEqual(body["details"]["kind"], "ClusterWorkflowPlane")
        self.assertEqual(body["details"]["causes"][0]["field"], "spec.planeID")
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueInvalid")
        st, _, body = self.req("POST", CWP, cwp("long-id", "a" * 64))
        self.assertEqual(st, 422)
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueTooLong")
        st, _, body = self.req("POST", CWP, {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "ClusterWorkflowPlane",
                                             "metadata": {}, "spec": {}})
        self.assertEqual(st, 422)
        self.assertIn("metadata.name: Required value", body["message"])
        st, _, body = self.req("POST", CWP, cwp("Upper"))
        self.assertEqual(st, 422)
        # Status is checked against the CRD's status schema.
        self.create(cwp("bad-status"))
        st, _, body = self.req("PATCH", CWP + "/bad-status/status",
                               {"status": {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "",
                                                           "message": "m", "lastTransitionTime": "now"}]}}, MERGE)
        self.assertEqual(st, 422)
        fields = {c["field"] for c in body["details"]["causes"]}
        self.assertEqual(fields, {"status.conditions[0].status", "status.conditions[0].reason",
                                  "status.conditions[0].lastTransitionTime"})

    def test_stale_put_conflicts(self):
        o = self.create(cwp("put"))
        o["spec"]["planeID"] = "put-2"
        st, _, fresh = self.req("PUT", CWP + "/put", o)
        self.assertEqual(st, 200)
        self.assertEqual(fresh["metadata"]["generation"], 2)
        o["spec"]["planeID"] = "put-3"  # still carries the old resourceVersion
        st, _, body = self.req("PUT", CWP + "/put", o)
        self.assertEqual(st, 409)
        self.assertStatus(body, 409, "Conflict")
        self.assertIn("the object has been modified", body["message"])
        del o["metadata"]["resourceVersion"]
        st, _, body = self.req("PUT", CWP + "/put", o)
        self.assertEqual(st, 422)  # CRs do not allow unconditional updates
        st, _, body = self.req("PATCH", CWP + "/put", {"metadata": {"resourceVersion": "1"}, "spec": {"planeID": "x"}}, MERGE)
        self.assertEqual(st, 409)  # a resourceVersion in a patch is a precondition

    def test_status_and_main_resource_are_separate(self):
        o = self.create(cwp("sep"))
        gen = o["metadata"]["generation"]
        # PUT /status with a changed spec and labels: only status is taken.
        o["spec"]["planeID"] = "changed"
        o["metadata"]["labels"] = {"a": "b"}
        o["status"] = {"agentConnection": {"connected": True, "connectedAgents": 1}}
        st, _, s = self.req("PUT", CWP + "/sep/status", o)
        self.assertEqual(st, 200, s)
        self.assertEqual(s["spec"]["planeID"], "sep")
        self.assertNotIn("labels", s["metadata"])
        self.assertEqual(s["metadata"]["generation"], gen)
        self.assertEqual(s["status"]["agentConnection"]["connectedAgents"], 1)
        # PUT main resource with a changed status: status is kept, spec change bumps generation.
        s["status"] = {"agentConnection": {"connected": False, "connectedAgents": 0}}
        s["spec"]["planeID"] = "sep-2"
        st, _, m = self.req("PUT", CWP + "/sep", s)
        self.assertEqual(st, 200, m)
        self.assertEqual(m["status"]["agentConnection"]["connectedAgents"], 1)
        self.assertEqual(m["metadata"]["generation"], gen + 1)
        # Metadata-only change: no generation bump.
        st, _, m2 = self.req("PATCH", CWP + "/sep", {"metadata": {"labels": {"x": "y"}}}, MERGE)
        self.assertEqual(m2["metadata"]["generation"], gen + 1)
        # A no-op patch does not write: same resourceVersion.
        st, _, m3 = self.req("PATCH", CWP + "/sep/status", {"status": {"agentConnection": {"connectedAgents": 1}}}, MERGE)
        self.assertEqual(m3["metadata"]["resourceVersion"], m2["metadata"]["resourceVersion"])
        # Unknown status fields are pruned with a warning, as with a structural schema.
        st, h, m4 = self.req("PATCH", CWP + "/sep/status", {"status": {"bogus": 1}}, MERGE)
        self.assertEqual(st, 200)
        self.assertNotIn("bogus", m4["status"])
        self.assertIn("unknown field", h.get("Warning", ""))

    def test_patch_types(self):
        self.create(cwp("jp", labels={"a": "1"}))
        ops = [{"op": "test", "path": "/spec/planeID", "value": "jp"},
               {"op": "replace", "path": "/spec/planeID", "value": "jp-2"},
               {"op": "add", "path": "/metadata/labels/b", "value": "2"},
               {"op": "remove", "path": "/metadata/labels/a"}]
        st, _, o = self.req("PATCH", CWP + "/jp", ops, JSONPATCH)
        self.assertEqual(st, 200, o)
        self.assertEqual((o["spec"]["planeID"], o["metadata"]["labels"]), ("jp-2", {"b": "2"}))
        self.assertEqual(o["metadata"]["generation"], 2)
        st, _, body = self.req("PATCH", CWP + "/jp", [{"op": "test", "path": "/spec/planeID", "value": "nope"}], JSONPATCH)
        self.assertEqual(st, 422)
        st, _, o = self.req("PATCH", CWP + "/jp/status",
                            [{"op": "add", "path": "/status", "value": {"agentConnection": {"connected": True, "connectedAgents": 3}}}],
                            JSONPATCH)
        self.assertEqual(st, 200)
        self.assertEqual(o["status"]["agentConnection"]["connectedAgents"], 3)
        st, _, body = self.req("PATCH", CWP + "/jp", {"spec": {}}, "application/strategic-merge-patch+json")
        self.assertEqual(st, 415)
        self.assertStatus(body, 415, "UnsupportedMediaType")
        st, _, body = self.req("PATCH", CWP + "/missing", {"spec": {}}, MERGE)
        self.assertEqual(st, 404)
        # Server-side apply on the status subresource merges conditions by type.
        apply = {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "ClusterWorkflowPlane", "metadata": {"name": "jp"},
                 "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ok", "message": "",
                                            "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}
        st, _, o = self.req("PATCH", CWP + "/jp/status?fieldManager=gw&force=true", json.dumps(apply), APPLY)
        self.assertEqual(st, 200, o)
        self.assertEqual(o["status"]["agentConnection"]["connectedAgents"], 3)
        self.assertEqual(o["status"]["conditions"][0]["type"], "Ready")
        st, _, body = self.req("PATCH", CWP + "/jp/status", json.dumps(apply), APPLY)
        self.assertEqual(st, 400)  # fieldManager is required for apply
        # Apply creates a missing object (201).
        st, _, o = self.req("PATCH", CWP + "/ssa-new?fieldManager=gw", json.dumps(cwp("ssa-new")), APPLY)
        self.assertEqual(st, 201)
        # Core types accept strategic merge patch.
        self.create({"metadata": {"name": "smp"}, "data": {"k": "dg=="}}, "/api/v1/namespaces/default/secrets")
        st, _, s = self.req("PATCH", "/api/v1/namespaces/default/secrets/smp", {"stringData": {"k2": "v"}},
                            "application/strategic-merge-patch+json")
        self.assertEqual((st, sorted(s["data"])), (200, ["k", "k2"]))

    def test_secrets(self):
        path = "/api/v1/namespaces/default/secrets"
        st, _, body = self.req("POST", path, {"metadata": {"name": "b64"}, "data": {"k": "not base64!"}})
        self.assertEqual(st, 400)
        self.assertStatus(body, 400, "BadRequest")
        s = self.create({"metadata": {"name": "sec", "labels": {"l": "1"}}, "stringData": {"ca.crt": "x"}}, path)
        self.assertEqual(s["data"], {"ca.crt": "eA=="})
        self.assertNotIn("generation", s["metadata"])
        st, _, lst = self.req("GET", "/api/v1/secrets?labelSelector=l%3D1")
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["sec"])
        self.assertNotIn("kind", lst["items"][0])  # typed lists carry no per-item kind
        st, _, body = self.req("DELETE", path + "/sec")
        self.assertEqual((st, body["kind"], body["status"]), (200, "Status", "Success"))

    def test_finalizers_and_delete(self):
        self.create(cwp("fin", **{"metadata": {"name": "fin", "finalizers": ["example.com/keep"]}}))
        st, _, o = self.req("DELETE", CWP + "/fin")
        self.assertEqual(st, 200)
        self.assertTrue(o["metadata"]["deletionTimestamp"])
        self.assertEqual(o["metadata"]["generation"], 2)
        st, _, _ = self.req("GET", CWP + "/fin")
        self.assertEqual(st, 200)
        w = self.srv.watch(CWP + f"?watch=true&resourceVersion={o['metadata']['resourceVersion']}")
        try:
            st, _, o = self.req("PATCH", CWP + "/fin", {"metadata": {"finalizers": None}}, MERGE)
            self.assertEqual(st, 200)
            ev = w.next(5)
            self.assertEqual(ev["type"], "DELETED")
        finally:
            w.close()
        st, _, _ = self.req("GET", CWP + "/fin")
        self.assertEqual(st, 404)

    def test_namespaced_kinds_and_namespace_deletion(self):
        self.create({"metadata": {"name": "team-a"}}, "/api/v1/namespaces")
        dp = {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "DataPlane", "metadata": {"name": "dp1"},
              "spec": {"planeID": "shared"}}
        o = self.create(dp, G + "/namespaces/team-a/dataplanes")
        self.assertEqual(o["metadata"]["namespace"], "team-a")
        st, _, lst = self.req("GET", G + "/dataplanes")
        self.assertIn(("team-a", "dp1"), [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in lst["items"]])
        st, _, lst = self.req("GET", G + "/namespaces/default/dataplanes")
        self.assertEqual(lst["items"], [])
        st, _, ns = self.req("DELETE", "/api/v1/namespaces/team-a")
        self.assertEqual(ns["status"]["phase"], "Terminating")
        deadline = time.monotonic() + 5
        while self.req("GET", "/api/v1/namespaces/team-a")[0] != 404:
            self.assertLess(time.monotonic(), deadline, "namespace not finalized")
            time.sleep(0.05)
        self.assertEqual(self.req("GET", G + "/namespaces/team-a/dataplanes/dp1")[0], 404)

    def test_dry_run(self):
        st, _, o = self.req("POST", CWP + "?dryRun=All", cwp("dry"))
        self.assertEqual(st, 201)
        self.assertEqual(self.req("GET", CWP + "/dry")[0], 404)


class WatchTest(ServerCase):
    def test_initial_events_then_changes(self):
        self.create(cwp("w-a", labels={"w": "1"}))
        w = self.srv.watch(CWP + "?watch=true&labelSelector=w%3D1")
        try:
            ev = w.next(5)
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w-a"))
            self.assertEqual(w.headers.get("Transfer-Encoding"), "chunked")
            self.req("PATCH", CWP + "/w-a/status", {"status": {"agentConnection": {"connected": True, "connectedAgents": 1}}}, MERGE)
            ev = w.next(5)
            self.assertEqual(ev["type"], "MODIFIED")
            self.assertEqual(ev["object"]["status"]["agentConnection"]["connectedAgents"], 1)
            # Leaving the label selector looks like a deletion to this watcher.
            self.req("PATCH", CWP + "/w-a", {"metadata": {"labels": {"w": "2"}}}, MERGE)
            ev = w.next(5)
            self.assertEqual(ev["type"], "DELETED")
            self.create(cwp("w-b", labels={"w": "1"}))
            self.assertEqual(w.next(5)["type"], "ADDED")
            self.req("DELETE", CWP + "/w-b")
            ev = w.next(5)
            self.assertEqual(ev["type"], "DELETED")
            self.assertEqual(ev["object"]["metadata"]["name"], "w-b")
        finally:
            w.close()

    def test_watch_from_resource_version_replays_history(self):
        o = self.create(cwp("w-rv"))
        rv = o["metadata"]["resourceVersion"]
        self.req("PATCH", CWP + "/w-rv", {"spec": {"planeID": "w-rv-2"}}, MERGE)
        self.req("PATCH", CWP + "/w-rv", {"spec": {"planeID": "w-rv-3"}}, MERGE)
        w = self.srv.watch(CWP + f"?watch=1&resourceVersion={rv}")
        try:
            a, b = w.next(5), w.next(5)
            self.assertEqual([a["type"], b["type"]], ["MODIFIED", "MODIFIED"])
            self.assertEqual(b["object"]["spec"]["planeID"], "w-rv-3")
            self.assertLess(int(a["object"]["metadata"]["resourceVersion"]), int(b["object"]["metadata"]["resourceVersion"]))
        finally:
            w.close()

    def test_expired_resource_version_gives_410(self):
        o = self.create(cwp("w-old"))
        old_rv = o["metadata"]["resourceVersion"]
        self.srv.control("PUT", "config", {"history": 2})
        for i in range(4):
            self.req("PATCH", CWP + "/w-old", {"metadata": {"labels": {"i": str(i)}}}, MERGE)
        w = self.srv.watch(CWP + f"?watch=true&resourceVersion={old_rv}")
        try:
            self.assertEqual(w.status, 200)
            ev = w.next(5)
            self.assertEqual(ev["type"], "ERROR")
            self.assertEqual(ev["object"]["kind"], "Status")
            self.assertEqual(ev["object"]["code"], 410)
            self.assertEqual(ev["object"]["reason"], "Expired")
            self.assertIn("too old resource version", ev["object"]["message"])
            self.assertIsNone(w.next(5))
        finally:
            w.close()
        # Explicit compaction does the same for any RV before it.
        st, _, lst = self.req("GET", CWP)
        rv = lst["metadata"]["resourceVersion"]
        self.req("PATCH", CWP + "/w-old", {"metadata": {"labels": {"i": "x"}}}, MERGE)
        self.srv.control("POST", "compact")
        w = self.srv.watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            self.assertEqual(w.next(5)["object"]["code"], 410)
        finally:
            w.close()

    def test_bookmarks_and_timeout(self):
        self.srv.control("PUT", "config", {"bookmarkInterval": 0.2})
        st, _, lst = self.req("GET", CWP)
        w = self.srv.watch(CWP + f"?watch=true&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion={lst['metadata']['resourceVersion']}")
        try:
            t0 = time.monotonic()
            ev = w.next(3)
            self.assertEqual(ev["type"], "BOOKMARK")
            self.assertEqual(set(ev["object"]), {"kind", "apiVersion", "metadata"})
            self.assertEqual(set(ev["object"]["metadata"]), {"resourceVersion"})
            self.assertEqual(ev["object"]["kind"], "ClusterWorkflowPlane")
            evs = w.until(lambda e: e is None, 4)
            self.assertIsNone(evs[-1])  # timeoutSeconds ends the stream
            self.assertTrue(all(e["type"] == "BOOKMARK" for e in evs[:-1]))
            self.assertLess(time.monotonic() - t0, 3.5)
        finally:
            w.close()
        # Without allowWatchBookmarks there are none.
        w = self.srv.watch(CWP + f"?watch=true&timeoutSeconds=1&resourceVersion={lst['metadata']['resourceVersion']}")
        try:
            self.assertIsNone(w.next(3))
        finally:
            w.close()

    def test_send_initial_events(self):
        self.create(cwp("w-init"))
        w = self.srv.watch(CWP + "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        try:
            evs = w.until(lambda e: e["type"] == "BOOKMARK", 5)
            self.assertIn("w-init", [e["object"]["metadata"]["name"] for e in evs[:-1]])
            self.assertEqual(evs[-1]["object"]["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        finally:
            w.close()

    def test_drop_watches(self):
        w = self.srv.watch(CWP + "?watch=true")
        w2 = self.srv.watch(CWP + "?watch=true")
        try:
            harness_wait_watchers(self.srv, 2)
            self.assertEqual(self.srv.control("POST", "drop-watches")["dropped"], 2)
            self.assertIsNone(w.until(lambda e: e is None, 5)[-1])
            self.assertIsNone(w2.until(lambda e: e is None, 5)[-1])
            w3 = self.srv.watch(CWP + "?watch=true&resourceVersion=0")
            harness_wait_watchers(self.srv, 1)
            self.srv.control("POST", "drop-watches", {"mode": "abort"})
            try:
                self.assertIsNone(w3.until(lambda e: e is None, 5)[-1])
            except OSError:
                pass  # a reset connection is fine too
            w3.close()
        finally:
            w.close()
            w2.close()


class LeaseAndEndpointSliceTest(ServerCase):
    """coordination.k8s.io/v1 Leases and discovery.k8s.io/v1 EndpointSlices over raw HTTP."""

    def test_discovery_lists_both_groups(self):
        st, _, g = self.req("GET", "/apis/coordination.k8s.io")
        self.assertEqual((st, g["kind"], g["preferredVersion"]["groupVersion"]), (200, "APIGroup", "coordination.k8s.io/v1"))
        for gv, plural, kind in (("coordination.k8s.io/v1", "leases", "Lease"),
                                 ("discovery.k8s.io/v1", "endpointslices", "EndpointSlice")):
            st, _, body = self.req("GET", "/apis/" + gv)
            self.assertEqual((st, body["groupVersion"]), (200, gv))
            self.assertEqual([(r["name"], r["kind"], r["namespaced"]) for r in body["resources"]], [(plural, kind, True)])
            self.assertEqual(set(body["resources"][0]["verbs"]),
                             {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})
        st, h, agg = self.req("GET", "/apis", headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"})
        self.assertEqual((st, agg["kind"]), (200, "APIGroupDiscoveryList"))
        by_group = {i["metadata"].get("name"): i["versions"][0] for i in agg["items"]}
        self.assertEqual([r["resource"] for r in by_group["coordination.k8s.io"]["resources"]], ["leases"])
        self.assertEqual(by_group["discovery.k8s.io"]["resources"][0]["responseKind"],
                         {"group": "discovery.k8s.io", "version": "v1", "kind": "EndpointSlice"})
        self.assertEqual(by_group["discovery.k8s.io"]["resources"][0]["scope"], "Namespaced")
        st, _, root = self.req("GET", "/openapi/v3")
        self.assertIn("apis/coordination.k8s.io/v1", root["paths"])
        self.assertIn("apis/discovery.k8s.io/v1", root["paths"])
        self.assertEqual(self.req("GET", "/apis/nosuch.k8s.io")[0], 404)

    def test_lease_create_get_update_conflict_patch_delete(self):
        body = lease("gw-leader", renewTime="2026-12-06T20:00:00.000000+02:00")
        body["spec"]["bogus"] = 1
        st, h, o = self.req("POST", LEASES, body)
        self.assertEqual(st, 201, o)
        self.assertEqual(h.get("Warning"), '299 - "unknown field \\"spec.bogus\\""')  # a quoted-string, escaped
        self.assertEqual(o["spec"], {"holderIdentity": "replica-a", "leaseDurationSeconds": 15,
                                     "acquireTime": "2026-12-06T18:00:00.000000Z",
                                     "renewTime": "2026-12-06T18:00:00.000000Z",  # MicroTime comes back in UTC
                                     "leaseTransitions": 0})
        self.assertEqual(list(o)[:4], ["kind", "apiVersion", "metadata", "spec"])
        self.assertNotIn("generation", o["metadata"])  # Leases have no generation
        rv1 = int(o["metadata"]["resourceVersion"])
        st, _, err = self.req("POST", LEASES, lease("gw-leader"))
        self.assertEqual(st, 409)
        self.assertStatus(err, 409, "AlreadyExists")
        self.assertEqual(err["message"], 'leases.coordination.k8s.io "gw-leader" already exists')
        st, _, got = self.req("GET", LEASES + "/gw-leader")
        self.assertEqual((st, got), (200, o))

        # Take over with the current resourceVersion: OK, and a new resourceVersion.
        takeover = json.loads(json.dumps(o))
        takeover["spec"].update(holderIdentity="replica-b", leaseTransitions=1, renewTime="2026-12-06T18:00:10.000000Z")
        st, _, o2 = self.req("PUT", LEASES + "/gw-leader", takeover)
        self.assertEqual(st, 200, o2)
        self.assertEqual((o2["spec"]["holderIdentity"], o2["spec"]["leaseTransitions"]), ("replica-b", 1))
        self.assertGreater(int(o2["metadata"]["resourceVersion"]), rv1)
        # A competing replica that read the old version loses: 409 Conflict, nothing written.
        stale = json.loads(json.dumps(o))
        stale["spec"]["holderIdentity"] = "replica-c"
        st, _, err = self.req("PUT", LEASES + "/gw-leader", stale)
        self.assertEqual(st, 409)
        self.assertStatus(err, 409, "Conflict")
        self.assertEqual(err["message"], 'Operation cannot be fulfilled on leases.coordination.k8s.io "gw-leader": '
                                         'the object has been modified; please apply your changes to the latest version and try again')
        self.assertEqual(err["details"], {"name": "gw-leader", "group": "coordination.k8s.io", "kind": "leases"})
        self.assertEqual(self.req("GET", LEASES + "/gw-leader")[2]["spec"]["holderIdentity"], "replica-b")
        # Without a resourceVersion, PUT is an unconditional update (Leases allow it, unlike the CRs).
        del stale["metadata"]["resourceVersion"]
        st, _, o3 = self.req("PUT", LEASES + "/gw-leader", stale)
        self.assertEqual((st, o3["spec"]["holderIdentity"]), (200, "replica-c"))

        # Renewals by patch: merge, strategic merge (accepted for built-in kinds), JSON patch.
        st, _, o4 = self.req("PATCH", LEASES + "/gw-leader", {"spec": {"renewTime": "2026-12-06T18:00:20.000000Z"}}, MERGE)
        self.assertEqual((st, o4["spec"]["renewTime"], o4["spec"]["holderIdentity"]), (200, "2026-12-06T18:00:20.000000Z", "replica-c"))
        st, _, o5 = self.req("PATCH", LEASES + "/gw-leader", {"spec": {"leaseDurationSeconds": 30}}, SMP)
        self.assertEqual((st, o5["spec"]["leaseDurationSeconds"]), (200, 30))
        st, _, o6 = self.req("PATCH", LEASES + "/gw-leader", [
            {"op": "test", "path": "/spec/holderIdentity", "value": "replica-c"},
            {"op": "replace", "path": "/spec/renewTime", "value": "2026-12-06T18:00:30.000000Z"}], JSONPATCH)
        self.assertEqual((st, o6["spec"]["renewTime"]), (200, "2026-12-06T18:00:30.000000Z"))
        st, _, err = self.req("PATCH", LEASES + "/gw-leader", [{"op": "test", "path": "/spec/holderIdentity", "value": "replica-a"}],
                              JSONPATCH)
        self.assertEqual(st, 422)
        # A resourceVersion in a patch is a precondition.
        st, _, err = self.req("PATCH", LEASES + "/gw-leader",
                              {"metadata": {"resourceVersion": o2["metadata"]["resourceVersion"]}, "spec": {"holderIdentity": "x"}}, MERGE)
        self.assertEqual(st, 409)
        self.assertStatus(err, 409, "Conflict")
        # A renewal that changes nothing writes nothing.
        st, _, same = self.req("PATCH", LEASES + "/gw-leader", {"spec": {"leaseDurationSeconds": 30}}, MERGE)
        self.assertEqual(same["metadata"]["resourceVersion"], o6["metadata"]["resourceVersion"])

        st, _, gone = self.req("DELETE", LEASES + "/gw-leader")
        self.assertEqual((st, gone["kind"], gone["status"]), (200, "Status", "Success"))
        self.assertEqual(gone["details"], {"name": "gw-leader", "group": "coordination.k8s.io", "kind": "leases",
                                           "uid": o["metadata"]["uid"]})
        st, _, err = self.req("GET", LEASES + "/gw-leader")
        self.assertEqual(st, 404)
        self.assertEqual(err["message"], 'leases.coordination.k8s.io "gw-leader" not found')
        self.assertEqual(self.req("DELETE", LEASES + "/gw-leader")[0], 404)

    def test_lease_validation(self):
        st, _, err = self.req("POST", LEASES, lease("bad-duration", duration=0))
        self.assertEqual(st, 422)
        self.assertStatus(err, 422, "Invalid")
        self.assertEqual(err["message"], 'Lease.coordination.k8s.io "bad-duration" is invalid: '
                                         'spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0')
        self.assertEqual(err["details"]["causes"], [{"reason": "FieldValueInvalid", "message": "Invalid value: 0: must be greater than 0",
                                                     "field": "spec.leaseDurationSeconds"}])
        self.assertEqual(self.req("GET", LEASES + "/bad-duration")[0], 404)
        st, _, err = self.req("POST", LEASES, lease("bad-transitions", leaseTransitions=-1))
        self.assertEqual((st, err["details"]["causes"][0]["field"]), (422, "spec.leaseTransitions"))
        # Updates are validated too; the stored object stays as it was.
        self.create(lease("valid"), LEASES)
        st, _, err = self.req("PATCH", LEASES + "/valid", {"spec": {"leaseDurationSeconds": -5}}, MERGE)
        self.assertEqual((st, err["reason"]), (422, "Invalid"))
        self.assertEqual(self.req("GET", LEASES + "/valid")[2]["spec"]["leaseDurationSeconds"], 15)
        # Typed decoding: wrong JSON types and MicroTimes without microseconds are 400, as from the real decoder.
        st, _, err = self.req("POST", LEASES, lease("bad-type", duration="15"))
        self.assertEqual(st, 400)
        self.assertStatus(err, 400, "BadRequest")
        self.assertIn("cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
                      err["message"])
        st, _, err = self.req("POST", LEASES, lease("bad-time", renewTime="2026-12-06T18:00:00Z"))
        self.assertEqual(st, 400)
        self.assertIn('parsing time "2026-12-06T18:00:00Z" as "2006-01-02T15:04:05.000000Z07:00"', err["message"])
        # Unknown fields: a warning by default, 400 with fieldValidation=Strict.
        st, _, err = self.req("POST", LEASES + "?fieldValidation=Strict", lease("strict", bogus=True))
        self.assertEqual(st, 400)
        self.assertIn('strict decoding error: unknown field "spec.bogus"', err["message"])

    def test_endpointslice_crud_label_selector_and_validation(self):
        a = self.create(endpoint_slice("gw-a", "gw", ["10.0.0.1", "10.0.0.2"]), SLICES)
        self.assertEqual(a["metadata"]["generation"], 1)
        self.assertEqual(a["ports"], [{"name": "https", "protocol": "TCP", "port": 8443}])
        self.assertEqual(a["endpoints"][0]["conditions"], {"ready": True, "serving": True, "terminating": False})
        self.assertEqual(a["endpoints"][1]["targetRef"], {"kind": "Pod", "namespace": "default", "name": "gw-1"})
        self.assertEqual(list(a)[:6], ["kind", "apiVersion", "metadata", "addressType", "endpoints", "ports"])
        # Defaults: a port without name/protocol gets "" and TCP; missing conditions are {}; no endpoints is null.
        b = endpoint_slice("gw-b", "gw", ["10.0.1.1"])
        b["ports"] = [{"port": 9443}]
        del b["endpoints"][0]["conditions"]
        b = self.create(b, SLICES)
        self.assertEqual(b["ports"], [{"name": "", "protocol": "TCP", "port": 9443}])
        self.assertEqual(b["endpoints"][0]["conditions"], {})
        empty = endpoint_slice("other-a", "other", [])
        empty = self.create(empty, SLICES)
        self.assertIsNone(empty["endpoints"])

        st, _, lst = self.req("GET", SLICES + "?labelSelector=" + harness.quote(f"{SVC_LABEL}=gw"))
        self.assertEqual((st, lst["kind"], lst["apiVersion"]), (200, "EndpointSliceList", "discovery.k8s.io/v1"))
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["gw-a", "gw-b"])
        self.assertNotIn("kind", lst["items"][0])  # typed lists carry no per-item kind
        st, _, lst = self.req("GET", "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=" + harness.quote(f"{SVC_LABEL}=other"))
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["other-a"])
        st, _, lst = self.req("GET", SLICES + "?labelSelector=" + harness.quote(f"{SVC_LABEL} in (gw,other),!nope"))
        self.assertEqual(len(lst["items"]), 3)

        # A replica going unready: generation +1; a label-only change leaves generation alone.
        st, _, a2 = self.req("PATCH", SLICES + "/gw-a", [{"op": "replace", "path": "/endpoints/1/conditions/ready", "value": False}],
                             JSONPATCH)
        self.assertEqual((st, a2["endpoints"][1]["conditions"]["ready"], a2["metadata"]["generation"]), (200, False, 2))
        st, _, a3 = self.req("PATCH", SLICES + "/gw-a", {"metadata": {"labels": {"extra": "1"}}}, MERGE)
        self.assertEqual((st, a3["metadata"]["generation"]), (200, 2))
        a3["endpoints"] = a3["endpoints"][:1]
        st, _, a4 = self.req("PUT", SLICES + "/gw-a", a3)
        self.assertEqual((st, len(a4["endpoints"]), a4["metadata"]["generation"]), (200, 1, 3))
        st, _, err = self.req("PUT", SLICES + "/gw-a", a3)  # a3's resourceVersion is stale now
        self.assertEqual(st, 409)
        self.assertStatus(err, 409, "Conflict")
        self.assertIn('endpointslices.discovery.k8s.io "gw-a"', err["message"])

        st, _, err = self.req("POST", SLICES, {"metadata": {"name": "no-type"}, "endpoints": []})
        self.assertEqual(st, 422)
        self.assertStatus(err, 422, "Invalid")
        self.assertEqual(err["message"], 'EndpointSlice.discovery.k8s.io "no-type" is invalid: addressType: Required value')
        self.assertEqual(err["details"]["causes"], [{"reason": "FieldValueRequired", "message": "Required value", "field": "addressType"}])
        st, _, err = self.req("POST", SLICES, endpoint_slice("bad-type", "gw", ["10.0.0.9"], address_type="IPv5"))
        self.assertEqual((st, err["details"]["causes"][0]["reason"]), (422, "FieldValueNotSupported"))
        st, _, err = self.req("POST", SLICES, endpoint_slice("loop", "gw", ["127.0.0.1", "not-an-ip"]))
        self.assertEqual(st, 422)
        self.assertEqual([c["field"] for c in err["details"]["causes"]], ["endpoints[0].addresses[0]", "endpoints[1].addresses[0]"])
        self.assertIn("may not be in the loopback range", err["message"])
        self.assertIn("must be a valid IPv4 address", err["message"])
        fqdn = self.create(endpoint_slice("gw-fqdn", "gw-fqdn", ["replica-0.gw.example.com"], address_type="FQDN"), SLICES)
        self.assertEqual(fqdn["addressType"], "FQDN")
        st, _, err = self.req("PATCH", SLICES + "/gw-b", {"addressType": "IPv6"}, MERGE)
        self.assertEqual(st, 422)
        self.assertIn("addressType: Invalid value: \"IPv6\": field is immutable", err["message"])
        st, _, err = self.req("PATCH", SLICES + "/gw-b", {"ports": [{"port": "https"}]}, MERGE)
        self.assertEqual(st, 400)

        st, _, gone = self.req("DELETE", SLICES + "/gw-b")
        self.assertEqual((st, gone["status"], gone["details"]["group"]), (200, "Success", "discovery.k8s.io"))
        self.assertEqual(self.req("GET", SLICES + "/gw-b")[0], 404)

    def test_endpointslice_watch_added_modified_deleted(self):
        st, _, lst = self.req("GET", SLICES + "?labelSelector=" + harness.quote(f"{SVC_LABEL}=gw-w"))
        self.assertEqual((st, lst["items"]), (200, []))
        rv = lst["metadata"]["resourceVersion"]
        w = self.srv.watch(SLICES + f"?watch=true&resourceVersion={rv}&labelSelector=" + harness.quote(f"{SVC_LABEL}=gw-w"))
        try:
            self.assertEqual(w.status, 200)
            self.create(endpoint_slice("ignored", "not-gw-w", ["10.0.2.1"]), SLICES)  # another service: not seen
            self.create(endpoint_slice("gw-w-1", "gw-w", ["10.0.2.2"]), SLICES)
            ev = w.next(5)
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "gw-w-1"))
            self.assertEqual((ev["object"]["kind"], ev["object"]["apiVersion"]), ("EndpointSlice", "discovery.k8s.io/v1"))
            self.req("PATCH", SLICES + "/gw-w-1", {"endpoints": [{"addresses": ["10.0.2.2"], "conditions": {"ready": False}}]}, MERGE)
            ev2 = w.next(5)
            self.assertEqual((ev2["type"], ev2["object"]["endpoints"][0]["conditions"]), ("MODIFIED", {"ready": False}))
            self.assertGreater(int(ev2["object"]["metadata"]["resourceVersion"]), int(ev["object"]["metadata"]["resourceVersion"]))
            self.req("DELETE", SLICES + "/gw-w-1")
            ev3 = w.next(5)
            self.assertEqual((ev3["type"], ev3["object"]["metadata"]["name"]), ("DELETED", "gw-w-1"))
            self.assertGreater(int(ev3["object"]["metadata"]["resourceVersion"]), int(ev2["object"]["metadata"]["resourceVersion"]))
        finally:
            w.close()
        # The same events again from the list's resourceVersion (history replay), and nothing for the other service.
        w = self.srv.watch(SLICES + f"?watch=1&timeoutSeconds=1&resourceVersion={rv}&labelSelector=" + harness.quote(f"{SVC_LABEL}=gw-w"))
        try:
            evs = w.until(lambda e: e is None, 4)
            self.assertEqual([e["type"] for e in evs[:-1]], ["ADDED", "MODIFIED", "DELETED"])
        finally:
            w.close()

    def test_lease_watch_bookmarks_and_expired_resource_version(self):
        self.srv.control("PUT", "config", {"bookmarkInterval": 0.2})
        o = self.create(lease("gw-w"), LEASES)
        old_rv = o["metadata"]["resourceVersion"]
        w = self.srv.watch(LEASES + f"?watch=true&allowWatchBookmarks=true&resourceVersion={old_rv}")
        try:
            self.req("PATCH", LEASES + "/gw-w", {"spec": {"renewTime": "2026-12-06T18:00:05.000000Z"}}, MERGE)
            evs = w.until(lambda e: e["type"] == "MODIFIED", 5)
            self.assertEqual(evs[-1]["object"]["spec"]["renewTime"], "2026-12-06T18:00:05.000000Z")
            evs = w.until(lambda e: e["type"] == "BOOKMARK", 3)
            self.assertEqual(evs[-1]["object"], {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                                                 "metadata": {"resourceVersion": evs[-1]["object"]["metadata"]["resourceVersion"]}})
        finally:
            w.close()
        # Older than the retained history: 200, one ERROR event with a 410 Expired Status, end of stream.
        self.srv.control("PUT", "config", {"history": 2})
        for i in range(4):
            self.req("PATCH", LEASES + "/gw-w", {"spec": {"leaseTransitions": i + 1}}, MERGE)
        for path in (LEASES, SLICES):
            w = self.srv.watch(path + f"?watch=true&resourceVersion={old_rv}")
            try:
                self.assertEqual(w.status, 200)
                ev = w.next(5)
                self.assertEqual(ev["type"], "ERROR")
                self.assertStatus(ev["object"], 410, "Expired")
                self.assertIn(f"too old resource version: {old_rv}", ev["object"]["message"])
                self.assertIsNone(w.next(5))
            finally:
                w.close()


class FaultTest(ServerCase):
    def test_throttle_429_with_retry_after(self):
        self.srv.control("POST", "throttle", {"retryAfter": 3, "count": 1, "resource": "clusterworkflowplanes"})
        st, h, body = self.req("GET", CWP)
        self.assertEqual(st, 429)
        self.assertEqual(h.get("Retry-After"), "3")
        self.assertStatus(body, 429, "TooManyRequests")
        self.assertEqual(body["details"]["retryAfterSeconds"], 3)
        self.assertEqual(self.req("GET", CWP)[0], 200)

    def test_errors_for_n_requests_and_for_a_duration(self):
        self.srv.control("POST", "errors", {"code": 503, "count": 2})
        self.assertEqual([self.req("GET", CWP)[0] for _ in range(3)], [503, 503, 200])
        self.srv.control("POST", "errors", {"code": 500, "duration": 0.5, "method": "GET"})
        st, _, body = self.req("GET", CWP)
        self.assertEqual(st, 500)
        self.assertStatus(body, 500, "InternalError")
        time.sleep(0.6)
        self.assertEqual(self.req("GET", CWP)[0], 200)

    def test_delay(self):
        self.srv.control("POST", "delay", {"seconds": 0.4, "count": 1, "verb": "list"})
        t = time.monotonic()
        self.assertEqual(self.req("GET", CWP)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.4)
        # count 1: the rule is used up, the next request is not held (no upper time bound: a loaded
        # machine may be slow anyway).
        self.assertEqual(self.srv.control("GET", "faults")["items"], [])
        self.assertEqual(self.req("GET", CWP)[0], 200)
        log = self.srv.control("GET", "requests?verb=list")["items"]
        self.assertGreaterEqual(log[0]["durationMs"], 400)

    def test_conflict_on_next_status_writes_and_request_log(self):
        self.create(cwp("f-status"))
        self.srv.control("POST", "conflict-status", {"count": 2})
        patch = {"status": {"agentConnection": {"connected": True, "connectedAgents": 1}}}
        self.assertEqual(self.req("PATCH", CWP + "/f-status", {"metadata": {"labels": {"a": "b"}}}, MERGE)[0], 200)
        codes = [self.req("PATCH", CWP + "/f-status/status", patch, MERGE)[0] for _ in range(3)]
        self.assertEqual(codes, [409, 409, 200])
        st, _, body = self.req("GET", CWP + "/f-status")
        self.assertEqual(body["status"]["agentConnection"]["connected"], True)
        log = self.srv.control("GET", "requests?subresource=status")["items"]
        self.assertEqual([(e["method"], e["status"], e["contentType"]) for e in log], [("PATCH", 409, MERGE)] * 2 + [("PATCH", 200, MERGE)])
        self.assertEqual(log[0]["verb"], "patch")
        self.srv.control("DELETE", "requests")
        self.assertEqual(self.srv.control("GET", "requests")["count"], 0)

    def test_request_log_arrival_times_since_filter_and_bodies(self):
        self.create(cwp("f-bodies"))
        t0 = time.time()
        patch = {"status": {"agentConnection": {"connected": True, "connectedAgents": 1}}}
        self.srv.control("PUT", "config", {"logBodies": True})
        try:
            self.assertEqual(self.req("PATCH", CWP + "/f-bodies/status", patch, MERGE)[0], 200)
            self.srv.control("POST", "throttle", {"retryAfter": 2, "count": 1, "subresource": "status"})
            self.assertEqual(self.req("PATCH", CWP + "/f-bodies/status", patch, MERGE)[0], 429)  # faulted: body kept too
            self.assertEqual(self.req("GET", CWP + "/f-bodies")[0], 200)
        finally:
            self.srv.control("PUT", "config", {"logBodies": False})
        self.assertEqual(self.req("PATCH", CWP + "/f-bodies/status", patch, MERGE)[0], 200)
        log = self.srv.control("GET", f"requests?since={t0}")["items"]  # the create is older than t0
        self.assertEqual([(e["method"], e["status"]) for e in log], [("PATCH", 200), ("PATCH", 429), ("GET", 200), ("PATCH", 200)])
        self.assertEqual([json.loads(e["body"]) for e in log[:2]], [patch, patch])
        self.assertNotIn("body", log[2])  # no body sent
        self.assertNotIn("body", log[3])  # logging bodies switched off again
        times = [e["receivedAt"] for e in log]
        self.assertEqual(times, sorted(times))
        self.assertGreaterEqual(times[0], t0)
        self.assertLessEqual(times[-1], time.time())
        self.assertEqual(self.srv.control("GET", f"requests?since={time.time() + 60}")["count"], 0)

    def test_watch_error_event_fault_and_reset(self):
        self.srv.control("POST", "faults", {"code": 500, "count": 1, "asWatchEvent": True, "match": {"watch": True}})
        w = self.srv.watch(CWP + "?watch=true")
        try:
            self.assertEqual(w.status, 200)
            ev = w.next(5)
            self.assertEqual((ev["type"], ev["object"]["code"]), ("ERROR", 500))
        finally:
            w.close()
        self.create(cwp("f-reset"))
        self.srv.control("POST", "errors", {"code": 503, "count": 5})
        self.srv.control("POST", "reset")
        self.assertEqual(self.req("GET", CWP + "/f-reset")[0], 404)  # objects back to the seed state (none)
        self.assertEqual(self.srv.control("GET", "faults")["items"], [])


def lines_of(chunks):
    """The complete (newline-terminated) events in the bytes of `chunks`."""
    data = b"".join(chunks)
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


class RudeModesTest(ServerCase):
    """The controls that make the fake as rude as real servers and load balancers: watch events
    split over chunks and several in one chunk, watches that stall silently, idle keep-alive
    connections closed (also racing the client's next request), jittered faults, paged lists."""

    def raw_watch(self, path):
        c = harness.RawConnection(self.srv)
        c.send("GET", path)
        status, headers = c.read_head()
        self.assertEqual((status, headers.get("transfer-encoding")), (200, "chunked"))
        return c

    def rv_now(self):
        return self.req("GET", CWP)[2]["metadata"]["resourceVersion"]

    def test_watch_event_split_over_several_chunks(self):
        rv = self.rv_now()
        self.create(cwp("r-split-a"))
        self.create(cwp("r-split-b"))
        self.srv.control("POST", "watch-chunking", {"split": 7, "gap": 0.001})
        c = self.raw_watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            chunks = []
            while len(lines_of(chunks)) < 2 or not b"".join(chunks).endswith(b"\n"):
                chunks.append(c.read_chunk())
            self.assertTrue(all(len(ch) <= 7 for ch in chunks), [len(ch) for ch in chunks])
            self.assertGreater(len(chunks), 20)  # each event is a few hundred bytes
            evs = lines_of(chunks)
            self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in evs],
                             [("ADDED", "r-split-a"), ("ADDED", "r-split-b")])
        finally:
            c.close()
        # http.client's line reader (like any client that reassembles) sees whole events.
        w = self.srv.watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            self.assertEqual(w.next(5)["object"]["metadata"]["name"], "r-split-a")
            self.assertEqual(w.next(5)["object"]["metadata"]["name"], "r-split-b")
        finally:
            w.close()

    def test_several_events_in_one_chunk(self):
        rv = self.rv_now()
        for n in "abc":
            self.create(cwp(f"r-co-{n}"))
        self.srv.control("POST", "watch-chunking", {"coalesce": 0.05})
        c = self.raw_watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            first = c.read_chunk()
            self.assertEqual([e["object"]["metadata"]["name"] for e in lines_of([first])],
                             ["r-co-a", "r-co-b", "r-co-c"])  # the replayed events, one chunk
        finally:
            c.close()
        # Both at once: pieces of 50 bytes over the events written together, so one chunk ends an
        # event and starts the next.
        self.srv.control("POST", "watch-chunking", {"split": 50, "coalesce": 0.05})
        c = self.raw_watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            chunks = []
            while len(lines_of(chunks)) < 3 or not b"".join(chunks).endswith(b"\n"):
                chunks.append(c.read_chunk())
            self.assertTrue(any(b"\n" in ch[:-1] for ch in chunks), "no chunk holds the end of one event "
                                                                    "and the start of the next")
            self.assertEqual(len(lines_of(chunks)), 3)
        finally:
            c.close()
        self.assertEqual(self.srv.control("DELETE", "watch-chunking"), {"split": 0, "coalesce": 0.0, "gap": 0.0})

    def test_stalled_watch_sends_nothing_until_dropped(self):
        self.srv.control("PUT", "config", {"bookmarkInterval": 0.1})
        o = self.create(cwp("r-stall"))
        rv = o["metadata"]["resourceVersion"]
        c = self.raw_watch(CWP + f"?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={rv}")
        try:
            self.assertEqual(lines_of([c.read_chunk()])[0]["type"], "BOOKMARK")
            self.assertEqual(self.srv.control("POST", "stall-watches", {"resource": "clusterworkflowplanes"})["stalled"], 1)
            self.assertEqual([x["stalled"] for x in self.srv.control("GET", "watches")["items"]], [True])
            st, _, changed = self.req("PATCH", CWP + "/r-stall", {"spec": {"planeID": "r-stall-2"}}, MERGE)
            self.assertEqual(st, 200)
            # Past timeoutSeconds and many bookmark intervals: nothing but what was already on the
            # way before the stall (bookmarks), and the stream does not end.
            late = []
            with self.assertRaises(TimeoutError):
                while True:
                    late.append(c.read_chunk(timeout=2.0))
            self.assertTrue(all(e["type"] == "BOOKMARK" for e in lines_of(late)), late)
            self.assertNotIn(None, late)
            # The change is in the history: a watch from the last resourceVersion seen gets it.
            w2 = self.srv.watch(CWP + f"?watch=true&resourceVersion={rv}")
            try:
                ev = w2.next(5)
                self.assertEqual((ev["type"], ev["object"]["metadata"]["resourceVersion"]),
                                 ("MODIFIED", changed["metadata"]["resourceVersion"]))
            finally:
                w2.close()
            self.srv.control("POST", "drop-watches", {"resource": "clusterworkflowplanes"})
            self.assertIsNone(c.read_chunk())  # the end of the stream, nothing else
        finally:
            c.close()
        # "new": the next watch stalls right after its headers (not even the replayed events come);
        # the one after it is served.
        self.srv.control("POST", "stall-watches", {"new": 1})
        c = self.raw_watch(CWP + f"?watch=true&resourceVersion={rv}")
        try:
            with self.assertRaises(TimeoutError):
                c.read_chunk(timeout=1.0)
            w3 = self.srv.watch(CWP + f"?watch=true&resourceVersion={rv}")
            try:
                self.assertEqual(w3.next(5)["type"], "MODIFIED")
            finally:
                w3.close()
        finally:
            c.close()
        # A client that gives up on a stalled watch frees it on the server.
        deadline = time.monotonic() + 5
        while self.srv.control("GET", "watches")["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.srv.control("GET", "watches")["count"], 0)

    def test_idle_keep_alive_connection_is_closed(self):
        self.srv.control("PUT", "config", {"idleTimeout": 3.0})
        c = harness.RawConnection(self.srv)
        try:
            self.assertEqual(c.request("GET", CWP)[0], 200)
            self.assertEqual(c.request("GET", CWP)[0], 200)  # kept alive while not idle
            log = self.srv.control("GET", "requests")["items"]
            self.assertEqual([e["connectionRequest"] for e in log], [1, 2])
            self.assertEqual(log[0]["connection"], log[1]["connection"])
        finally:
            c.close()
        before = self.srv.control("GET", "state")["idleClosed"]
        self.srv.control("PUT", "config", {"idleTimeout": 0.2})
        c = harness.RawConnection(self.srv)
        try:
            self.assertEqual(c.request("GET", CWP)[0], 200)
            t0 = time.monotonic()
            self.assertTrue(c.closed_by_server(10), "the idle connection was not closed")
            self.assertGreaterEqual(time.monotonic() - t0, 0.15)  # not before the idle timeout
        finally:
            c.close()
        self.assertEqual(self.srv.control("GET", "state")["idleClosed"], before + 1)

    def test_idle_close_races_the_next_request(self):
        # The server times the connection out after 0.1 s but its close is still on the way (30 s) when
        # the next request arrives: that request is read and dropped, and the connection closed.
        self.srv.control("PUT", "config", {"idleTimeout": 0.1, "idleCloseDelay": 30})
        raced = self.srv.control("GET", "state")["idleRaced"]
        c = harness.RawConnection(self.srv)
        try:
            self.assertEqual(c.request("GET", CWP)[0], 200)
            time.sleep(0.3)  # idle for longer than the timeout
            c.send("GET", CWP)
            with self.assertRaises((EOFError, ConnectionResetError, ssl.SSLError)):
                c.read_head()
        finally:
            c.close()
        log = self.srv.control("GET", "requests")["items"]
        self.assertEqual([(e["status"], e["connectionRequest"], e.get("closedIdle", False)) for e in log],
                         [(200, 1, False), (0, 2, True)])
        self.assertEqual(self.srv.control("GET", "state")["idleRaced"], raced + 1)
        self.assertEqual(self.req("GET", CWP)[0], 200)  # a new connection is served

    def test_jittered_faults_are_reproducible_with_a_seed(self):
        spec = {"fraction": 0.4, "codes": [500, 429, 503], "retryAfter": 2, "seed": 1234,
                "resource": "clusterworkflowplanes"}

        def run():
            rule = self.srv.control("POST", "jitter", spec)
            out = []
            for _ in range(40):
                st, h, body = self.req("GET", CWP)
                out.append(st)
                if st != 200:
                    self.assertStatus(body, st, {500: "InternalError", 429: "TooManyRequests",
                                                 503: "ServiceUnavailable"}[st])
                    self.assertEqual(h.get("Retry-After"), None if st == 500 else "2", st)
            desc = [r for r in self.srv.control("GET", "faults")["items"] if r["id"] == rule["id"]][0]
            self.srv.control("DELETE", f"faults/{rule['id']}")
            self.assertEqual((desc["hits"], desc["passed"]), (40 - out.count(200), out.count(200)))
            return out

        first = run()
        self.assertEqual(run(), first)  # the same seed, the same sequence
        self.assertTrue(8 <= 40 - first.count(200) <= 24, first)  # about 40 % of 40
        self.assertEqual({s for s in first if s != 200}, {500, 429, 503})
        self.assertEqual(self.req("GET", G + "/clusterdataplanes")[0], 200)  # other resources untouched

    def test_list_pagination_limit_and_continue(self):
        names = [f"r-page-{i}" for i in range(5)]
        for n in names:
            self.create(cwp(n, labels={"suite": "page"}))
        q = "?labelSelector=suite%3Dpage&limit=2"
        st, _, p1 = self.req("GET", CWP + q)
        self.assertEqual(st, 200)
        self.assertEqual([o["metadata"]["name"] for o in p1["items"]], names[:2])
        self.assertNotIn("remainingItemCount", p1["metadata"])  # not with a selector
        rv = p1["metadata"]["resourceVersion"]
        # A later change does not show in the later pages: they are read at the first page's RV.
        self.req("DELETE", CWP + "/r-page-3")
        self.create(cwp("r-page-5", labels={"suite": "page"}))
        st, _, p2 = self.req("GET", CWP + q + "&continue=" + harness.quote(p1["metadata"]["continue"]))
        st3, _, p3 = self.req("GET", CWP + q + "&continue=" + harness.quote(p2["metadata"]["continue"]))
        self.assertEqual((st, st3), (200, 200))
        self.assertEqual([o["metadata"]["name"] for o in p2["items"] + p3["items"]], names[2:])
        self.assertEqual({p2["metadata"]["resourceVersion"], p3["metadata"]["resourceVersion"]}, {rv})
        self.assertNotIn("continue", p3["metadata"])
        # Without selectors: remainingItemCount.
        st, _, whole = self.req("GET", CWP)
        st, _, first = self.req("GET", CWP + "?limit=1")
        self.assertEqual(first["metadata"]["remainingItemCount"], len(whole["items"]) - 1)
        # resourceVersion=0 is served from the watch cache, which ignores limit.
        self.assertNotIn("continue", self.req("GET", CWP + "?limit=1&resourceVersion=0")[2]["metadata"])
        # Bad requests, with the real server's messages.
        st, _, body = self.req("GET", CWP + "?limit=1&resourceVersion=5&continue=" + harness.quote(first["metadata"]["continue"]))
        self.assertEqual((st, body["message"]), (400, "specifying resource version is not allowed when using continue"))
        st, _, body = self.req("GET", CWP + "?limit=1&continue=bm90LWpzb24")
        self.assertEqual(st, 400)
        self.assertStatus(body, 400, "BadRequest")
        self.assertIn("continue key is not valid", body["message"])

    def test_expired_continue_token_gives_410_with_an_inconsistent_token(self):
        for i in range(4):
            self.create(cwp(f"r-exp-{i}", labels={"suite": "exp"}))
        q = "?labelSelector=suite%3Dexp&limit=2"
        st, _, p1 = self.req("GET", CWP + q)
        self.req("DELETE", CWP + "/r-exp-3")
        self.srv.control("POST", "compact")
        st, _, body = self.req("GET", CWP + q + "&continue=" + harness.quote(p1["metadata"]["continue"]))
        self.assertEqual(st, 410)
        self.assertStatus(body, 410, "Expired")
        self.assertTrue(body["message"].startswith("The provided continue parameter is too old to display a "
                                                   "consistent list result."), body["message"])
        # The token in the Status goes on at the current state (inconsistent: the deletion shows).
        st, _, rest = self.req("GET", CWP + q + "&continue=" + harness.quote(body["metadata"]["continue"]))
        self.assertEqual(st, 200)
        self.assertEqual([o["metadata"]["name"] for o in rest["items"]], ["r-exp-2"])
        # A fresh list works as always.
        st, _, again = self.req("GET", CWP + "?labelSelector=suite%3Dexp")
        self.assertEqual([o["metadata"]["name"] for o in again["items"]], ["r-exp-0", "r-exp-1", "r-exp-2"])


class SeedAndLifecycleTest(unittest.TestCase):
    def test_seed_dir_plain_http_and_sigterm(self):
        with tempfile.TemporaryDirectory() as d:
            seed = os.path.join(d, "seed")
            os.mkdir(seed)
            with open(os.path.join(seed, "planes.yaml"), "w") as f:
                f.write("""apiVersion: openchoreo.dev/v1alpha1
kind: DataPlane
metadata:
  name: dp-seeded
  namespace: org-a
  creationTimestamp: 2024-01-01T00:00:00Z
spec:
  planeID: seeded
status:
  agentConnection:
    connected: false
    connectedAgents: 0
---
apiVersion: v1
kind: Secret
metadata:
  name: seeded-ca
  namespace: org-a
stringData:
  ca.crt: PEM
""")
            srv = FakeApiServer(d, token="", plain=True, extra_args=["--seed-dir", seed])
            try:
                self.assertTrue(srv.url.startswith("http://"))
                with open(os.path.join(d, "port")) as f:
                    self.assertEqual(int(f.read()), srv.port)
                st, _, o = srv.request("GET", G + "/namespaces/org-a/dataplanes/dp-seeded")
                self.assertEqual(st, 200, o)
                self.assertEqual(o["status"]["agentConnection"]["connectedAgents"], 0)  # seeds keep status
                self.assertEqual(srv.request("GET", "/api/v1/namespaces/org-a/secrets/seeded-ca")[0], 200)
                w = srv.watch(G + "/dataplanes?watch=true")
                self.assertEqual(w.next(5)["type"], "ADDED")
                t = time.monotonic()
                self.assertEqual(srv.stop(), 0)  # SIGTERM with an open watch: clean and quick exit
                self.assertLess(time.monotonic() - t, 5)
                w.close()
            finally:
                srv.stop()

    def test_fault_rules_from_the_command_line_apply_from_the_first_request(self):
        with tempfile.TemporaryDirectory() as d:
            srv = FakeApiServer(d, token="", plain=True, extra_args=[
                "--fault", json.dumps({"code": 503, "count": 2}),
                "--fault", json.dumps({"code": 429, "retryAfter": 4, "count": 1, "match": {"verb": "list"}})])
            try:
                self.assertEqual(len(srv.control("GET", "faults")["items"]), 2)
                st, _, body = srv.request("GET", CWP)
                self.assertEqual((st, body["reason"]), (503, "ServiceUnavailable"))
                self.assertEqual(srv.request("GET", CWP)[0], 503)
                st, h, _ = srv.request("GET", CWP)
                self.assertEqual((st, h.get("Retry-After")), (429, "4"))
                self.assertEqual(srv.request("GET", CWP)[0], 200)
                self.assertEqual(srv.control("GET", "faults")["items"], [])
            finally:
                self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
    import ctest_main  # noqa: E402
    sys.exit(ctest_main.main())  # a skip exits 77 (ctest: Skipped), or 1 with CI=true
