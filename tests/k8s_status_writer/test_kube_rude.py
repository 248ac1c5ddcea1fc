"""End to end in Kubernetes mode against the fake API server's rude modes (tests/fakes/kube_apiserver,
README "Rude modes"): the cluster-gateway binary, agents from cluster-agent-sim.

1. Status PATCHes that lose the race against the server's idle keep-alive close: the client does not
   send a PATCH twice; the status writer retries it, and the CRs converge.
2. More CRs than a LIST page: the first list goes in pages of 500 (client-go's pager size), following
   the continue token, and a CR from the second page is served.
3. Jittered 500/429/503 on every API request, with watch events split over chunks and several in one
   chunk: the gateway gets ready and the CRs' status converges.

A silently stalled watch is covered by tests/plane_index/kube_source_test.cpp ("restarts a silently
stalled watch"): the binary's bound (timeoutSeconds of 300 to 600 s + 30 s) is too long for this suite.
"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from kube_e2e_support import (  # noqa: E402
    CWP, AgentSim, FakeApiServer, agent_connection, by_name, cwp_doc, dev_pki, gateway_cmd, gateway_events,
    http_status, make_pki, read_bytes, start_gateway, status_patches, statuses, wait_for, write_seed)

_tmp = None
PKI = API_PKI = CA_PEM = None


def setUpModule():
    global _tmp, PKI, API_PKI, CA_PEM
    _tmp = tempfile.mkdtemp(prefix="cg-kube-rude-")
    PKI = dev_pki(os.path.join(_tmp, "pki"))
    os.makedirs(os.path.join(_tmp, "api-pki"))
    API_PKI = make_pki(os.path.join(_tmp, "api-pki"))
    CA_PEM = read_bytes(os.path.join(PKI, "tenant-a-ca.crt"))


def tearDownModule():
    shutil.rmtree(_tmp, ignore_errors=True)


class RudeCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix=f"cg-{self._testMethodName[:20]}-", dir=_tmp)
        self.gateways, self.logs, self.sims, self.apis = [], [], [], []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for gw in self.gateways:
            if gw.poll() is None:
                gw.kill()
            gw.wait()
        for sim in self.sims:
            sim.kill()
        for api in self.apis:
            api.stop()
        for t in threading.enumerate():
            if t.name.endswith("(pump)"):
                t.join(5)
        for gw in self.gateways:
            gw.stdout.close()
        for log in self.logs:
            log.close()

    def start_api(self, docs, faults=()):
        workdir = os.path.join(self.tmp, "api")
        os.makedirs(workdir, exist_ok=True)
        args = ["--seed-dir", write_seed(os.path.join(workdir, "seed"), docs), "--log-bodies"]
        for f in faults:
            args += ["--fault", json.dumps(f)]
        api = FakeApiServer(workdir, pki=API_PKI, extra_args=args)
        self.apis.append(api)
        return api

    def start_gw(self, api, *flags):
        path = os.path.join(self.tmp, f"gateway-{len(self.gateways)}.log")
        log = open(path, "w")
        self.logs.append(log)
        proc, ports = start_gateway(gateway_cmd(api.kubeconfig, PKI, "--heartbeat-interval", "500ms",
                                                "--heartbeat-timeout", "5s", "--startup-grace", "0s", *flags),
                                    log=log)
        self.gateways.append(proc)
        return proc, ports, path

    def agents(self, ports, plane_id, **kw):
        sim = AgentSim(PKI, ports["agentPort"], plane_id, log=os.path.join(self.tmp, f"agents-{plane_id}.log"), **kw)
        self.sims.append(sim)
        return sim

    def wait_ready(self, ports, timeout=60):
        ready = f"http://127.0.0.1:{ports['healthPort']}/ready"
        self.assertTrue(wait_for(lambda: http_status(ready) == 200, timeout=timeout, step=0.2), "never became ready")

    def wait_agents(self, api, want, timeout=40.0):
        def ok():
            st = statuses(api)
            return all(agent_connection(st.get(name, {})).get("connectedAgents") == k and
                       agent_connection(st.get(name, {})).get("connected") is (k > 0) for name, k in want.items())
        if not wait_for(ok, timeout=timeout, step=0.2):
            st = statuses(api)
            self.fail(f"not converged within {timeout}s: "
                      f"{json.dumps({n: agent_connection(st.get(n, {})) for n in want})[:1500]}")


class IdleCloseRace(RudeCase):
    def test_1_status_patches_racing_the_idle_close_are_retried_by_the_writer(self):
        names = [f"ir-{i}" for i in range(3)]
        api = self.start_api([cwp_doc(n, n, CA_PEM) for n in names])
        gw, ports, log = self.start_gw(api, "--status-heartbeat-interval", "60s")
        self.wait_ready(ports)
        # From now on the server gives up on every kept-alive connection as soon as it is idle (its close
        # comes 30 s later): a request on a pooled connection is read and dropped, nothing answered.
        api.control("PUT", "config", {"idleTimeout": 0.001, "idleCloseDelay": 30})
        since = time.time()
        self.agents(ports, "ir", count=3, spread=3)
        self.wait_agents(api, {n: 1 for n in names})
        entries = status_patches(api, since=since)
        dropped = [e for e in entries if e.get("closedIdle")]
        self.assertTrue(dropped, "no status PATCH went out on a connection the server had given up on")
        for d in dropped:
            later = [e for e in entries if e["name"] == d["name"] and e["receivedAt"] > d["receivedAt"]
                     and e["status"] == 200]
            self.assertTrue(later, f"{d['name']}: the dropped PATCH was never written again")
        # Resent by the status writer after a failure, not silently by the client.
        failed = gateway_events(log, "status write failed; will retry")
        self.assertGreaterEqual(len(failed), len(dropped), failed)
        self.assertIsNone(gw.poll())


class PagedFirstList(RudeCase):
    def test_2_more_crs_than_a_page(self):
        n = 510
        api = self.start_api([cwp_doc(f"pg-{i:03d}", f"pg-{i:03d}", CA_PEM) for i in range(n)])
        gw, ports, _ = self.start_gw(api, "--status-heartbeat-interval", "60s")
        self.wait_ready(ports)
        lists = sorted(api.control("GET", "requests?verb=list&resource=clusterworkflowplanes")["items"],
                       key=lambda e: e["receivedAt"])
        self.assertEqual([(e["query"].get("limit"), "continue" in e["query"], e["status"]) for e in lists],
                         [("500", False, 200), ("500", True, 200)])
        # A CR from the second page (keys sort pg-500..pg-509 last) is known: its agent gets in.
        self.agents(ports, "pg-507")
        self.wait_agents(api, {"pg-507": 1})
        self.assertIsNone(gw.poll())


class JitterAndChunks(RudeCase):
    def test_3_jittered_faults_and_split_watch_events_converge(self):
        names = [f"jc-{i}" for i in range(4)]
        # Only the gateway's requests (by its User-Agent), not this test's own.
        jitter = {"fraction": 0.3, "codes": [500, 429, 503], "retryAfter": 1, "seed": 16,
                  "match": {"path": "^/api", "userAgent": "^cluster-gateway/"}}
        api = self.start_api([cwp_doc(n, n, CA_PEM) for n in names], faults=[jitter])
        api.control("POST", "watch-chunking", {"split": 9, "coalesce": 0.05, "gap": 0.001})
        gw, ports, _ = self.start_gw(api, "--status-heartbeat-interval", "60s")
        self.wait_ready(ports)
        sim = self.agents(ports, "jc", count=4, spread=4)
        self.wait_agents(api, {n: 1 for n in names})
        # A CR added now reaches the gateway through a split, jittered watch: its agent gets in.
        status, _, body = api.request("POST", CWP, cwp_doc("jc-late", "jc-late", CA_PEM))
        self.assertEqual(status, 201, body)
        self.agents(ports, "jc-late")
        self.wait_agents(api, {"jc-late": 1})
        sim.kill()
        self.wait_agents(api, {n: 0 for n in names})
        rule = api.control("GET", "faults")["items"]
        self.assertEqual(len(rule), 1)
        self.assertGreaterEqual(rule[0]["hits"], 1, rule)
        faulted = by_name([e for e in status_patches(api) if e["status"] in (500, 429, 503)])
        print(f"[observed] jitter: {rule[0]['hits']} requests failed, {rule[0]['passed']} let through; status "
              f"PATCHes failed per CR: {json.dumps({k: len(v) for k, v in faulted.items()})}",
              file=sys.stderr, flush=True)
        self.assertIsNone(gw.poll())


if __name__ == "__main__":
    unittest.main()
