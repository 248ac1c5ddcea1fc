"""Three gateway replicas in file mode with static peers (--mesh-peers), end to end, loopback only:

  * a watch, an exec session and a POST for an agent of another replica are relayed through it, and
    a reconnect asked at one replica closes the plane's agents held by another;

  * agents reach the replicas through a round-robin TCP balancer (the Service's role), so they spread;
  * a caller at any replica reaches every agent: answers name the entry replica and the one whose
    agent served them (X-Cluster-Gateway-Entry-Pod / X-Cluster-Gateway-Served-By);
  * the plane status endpoint at any replica sums every replica's agents; one replica writes status;
  * `kill -9` of the replica that writes status and holds agents: its agents reconnect to the others
    through the balancer, no CR is ever written disconnected meanwhile, and another replica takes
    over writing status (the directory drops the dead one after the lease duration);
  * a frozen replica (a cut link): a request forwarded to it gets 502 within seconds, not its timeout;
  * the rebalancer brings a restarted replica back to its share of the agents;
  * a rolling restart of all three (SIGTERM, wait, start again) under 200 proxied GETs per second
    through a balancer in front of the internal ports: every request answered 200;
  * a mesh certificate and CA renewed on disk (cert-manager's role) is reloaded by the running
    replicas: a replica restarted with only the new CA and certificate links up with them both ways.

Real binaries, real TLS (dev PKI: mesh CA and peer certificate), real HTTP."""
import asyncio
import http.client
import shutil
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
SIM = os.environ.get("CG_AGENT_SIM_BIN", os.path.join(ROOT, "build", "bin", "cluster-agent-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import ctest_main  # noqa: E402
from balancer import Balancer  # noqa: E402
from gateway_proc import LogLines, dev_pki_and_planes, start_gateway, wait_for  # noqa: E402
from mesh_support import MeshReplicas, ProxiedGetLoad, free_ports, pods_path  # noqa: E402

REPLICAS = 3
PLANES = 6
LEASE = 3.0  # --mesh-lease-duration


class ReplicasTest(MeshReplicas, unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cg-mesh-")
        self.procs, self.sims, self.balancer = {}, [], None
        self.addCleanup(self.cleanup)  # also when setUp fails half-way (no replica is left running)
        d = self.tmp.name
        self.pki, self.planes_dir, _ = dev_pki_and_planes(
            ROOT, d, [(f"wp{i}", f"mesh-{i}") for i in range(PLANES)], "ClusterWorkflowPlane")
        self.status_dir = os.path.join(self.planes_dir, "status")
        # Each replica reads its mesh CA, certificate and key from its own directory (a pod's mounted
        # Secret), so that a renewal can reach some replicas before others.
        self.mesh_dirs = []
        for i in range(REPLICAS):
            md = os.path.join(d, f"mesh-{i}")
            os.makedirs(md)
            for src, dst in (("mesh-ca.crt", "ca.crt"), ("mesh.crt", "tls.crt"), ("mesh.key", "tls.key")):
                shutil.copy(os.path.join(self.pki, src), os.path.join(md, dst))
            self.mesh_dirs.append(md)
        ports = free_ports(REPLICAS * 3)
        self.agent_ports, self.mesh_ports = ports[:REPLICAS], ports[REPLICAS:2 * REPLICAS]
        self.internal_ports = ports[2 * REPLICAS:]
        self.logs, self.internal, self.started = {}, {}, {}
        for i in range(REPLICAS):
            self.start_replica(i)
        self.balancer = Balancer(self.agent_ports)
        self.sims = []

    def cleanup(self):
        for p in self.sims:
            p.kill()
            p.wait()
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.balancer is not None:
            self.balancer.close()
        self.tmp.cleanup()

    def log_tail(self, i, n=30):
        """The last `n` lines of replica i's output (JSON events and raw lines, e.g. a sanitizer's report)."""
        evs = self.logs[i].find()[-n:]
        return "\n".join(e["raw"] if e.get("msg") is None and "raw" in e else json.dumps(e) for e in evs)

    def start_replica(self, i):
        peers = ",".join(f"127.0.0.1:{p}" for j, p in enumerate(self.mesh_ports) if j != i)
        pki = self.pki
        cmd = [BIN, "--port", str(self.agent_ports[i]), "--health-port", "0", "--internal-port", str(self.internal_ports[i]),
               "--bind", "127.0.0.1", "--planes-dir", self.planes_dir,
               "--server-cert", os.path.join(pki, "server.crt"), "--server-key", os.path.join(pki, "server.key"),
               "--internal-client-ca-cert", os.path.join(pki, "internal-ca.crt"), "--startup-grace", "0s",
               "--status-heartbeat-interval", "2s", "--shutdown-timeout", "10s",
               "--mesh=true", "--mesh-port", str(self.mesh_ports[i]), "--mesh-peers", peers,
               "--replica-id", f"gw-{i}", "--mesh-ca-cert", os.path.join(self.mesh_dirs[i], "ca.crt"),
               "--mesh-cert", os.path.join(self.mesh_dirs[i], "tls.crt"),
               "--mesh-key", os.path.join(self.mesh_dirs[i], "tls.key"),
               "--mesh-lease-duration", f"{LEASE:g}s"]
        log = LogLines()
        proc, started = start_gateway(cmd, log=log)
        self.procs[i], self.logs[i], self.internal[i] = proc, log, started["internalPort"]

    def start_agents(self, count, port=None, plane=None):
        """`count` agents over the planes mesh-0.. (or all on mesh-<plane>), through the balancer or to `port`."""
        pki = self.pki
        planes = ["--plane-id", f"mesh-{plane}"] if plane is not None else ["--plane-id", "mesh", "--plane-spread",
                                                                               str(PLANES)]
        p = subprocess.Popen([SIM, "--server-url", f"wss://localhost:{port or self.balancer.port}/ws",
                              "--plane-type", "workflowplane", *planes, "--count", str(count), "--client-cert", os.path.join(pki, "agent-a.crt"),
                              "--client-key", os.path.join(pki, "agent-a.key"),
                              "--server-ca", os.path.join(pki, "gateway-ca.crt"), "--reconnect-delay", "500ms"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sims.append(p)

    def status_files(self):
        out = {}
        for name in os.listdir(self.status_dir) if os.path.isdir(self.status_dir) else []:
            try:
                with open(os.path.join(self.status_dir, name)) as f:
                    out[name] = json.load(f)
            except (OSError, ValueError):
                pass
        return out

    def all_connected(self):
        files = self.status_files()
        return len(files) == PLANES and all(s.get("agentConnection", {}).get("connected") for s in files.values())

    def test_streams_exec_and_posts_reach_an_agent_of_another_replica(self):
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES, port=self.agent_ports[0])  # every agent on gw-0
        self.assertTrue(wait_for(lambda: self.local_sessions(0) == PLANES, 20), "agents did not connect")
        base = "/api/proxy/workflowplane/mesh-1/_cluster/wp1/k8s/api/v1/namespaces/default"
        # The directory reaches gw-2 within a publish interval or two.
        self.assertTrue(wait_for(lambda: self.get(2, base + "/pods")[0] == 200, 10))
        # A watch through gw-2: events as the agent sends them, relayed by gw-2 from gw-0.
        conn = http.client.HTTPSConnection("localhost", self.internal[2], context=self.caller(), timeout=15)
        conn.request("GET", base + "/pods?watch=true")
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("X-Cluster-Gateway-Served-By"), "gw-0")
        self.assertEqual(r.getheader("X-Cluster-Gateway-Entry-Pod"), "gw-2")
        events = [json.loads(r.readline()) for _ in range(3)]
        self.assertEqual([e["type"] for e in events[:2]], ["ADDED", "ADDED"])
        r.close()  # the caller hangs up: the relay ends (and gw-0 cancels the agent's stream)
        conn.close()
        self.assertTrue(self.logs[2].wait("forwarded stream ended", servedBy="gw-0"), "relay did not end with the caller")
        # A POST (not repeatable) forwarded once, with its body.
        ctx = self.caller()
        c2 = http.client.HTTPSConnection("localhost", self.internal[1], context=ctx, timeout=15)
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        c2.request("POST", base + "/configmaps", body=body, headers={"Content-Type": "application/json"})
        r2 = c2.getresponse()
        r2.read()
        self.assertLess(r2.status, 500)
        self.assertEqual(r2.getheader("X-Cluster-Gateway-Served-By"), "gw-0")
        c2.close()
        # exec through gw-1: a WebSocket relayed byte for byte.
        url = (f"wss://localhost:{self.internal[1]}/api/exec/workflowplane/mesh-2/_cluster/wp2"
               "?podNamespace=default&podName=web-1&stdin=true&tty=false")

        async def exec_round_trip():
            async with websockets.connect(url, ssl=self.caller()) as ws:
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01")
                await ws.send(b"\x00hello\n")
                self.assertEqual(await asyncio.wait_for(ws.recv(), 10), b"\x01hello\n")
                await ws.send(b"\x00")
                with self.assertRaises(websockets.exceptions.ConnectionClosedOK) as cm:
                    await asyncio.wait_for(ws.recv(), 10)
                self.assertEqual(cm.exception.rcvd.code, 1000)
        asyncio.run(exec_round_trip())
        self.assertTrue(self.logs[1].find("stream forwarded", servedBy="gw-0", target="exec"))
        # Reconnect acts cluster-wide: asked at gw-2, it closes the agent held by gw-0.
        mark = self.logs[0].mark()
        c3 = http.client.HTTPSConnection("localhost", self.internal[2], context=self.caller(), timeout=15)
        c3.request("POST", "/api/v1/planes/workflowplane/mesh-3/reconnect")
        r3 = c3.getresponse()
        self.assertEqual(r3.status, 200)
        self.assertEqual(json.loads(r3.read()), {"success": True, "disconnectedAgents": 1})
        c3.close()
        self.assertTrue(self.logs[0].wait("agent disconnected", since=mark, planeID="mesh-3"))

    def write_mesh_files(self, i, pki_dirs_for_ca, cert_pki):
        """Replica i's mounted mesh files: the CA file the bundle of the mesh CAs of `pki_dirs_for_ca`,
        the certificate and key those of `cert_pki`; each file replaced at once (rename), key first."""
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        md = self.mesh_dirs[i]
        ca = b"".join(read(os.path.join(p, "mesh-ca.crt")) for p in pki_dirs_for_ca)
        for name, data in (("tls.key", read(os.path.join(cert_pki, "mesh.key"))),
                           ("tls.crt", read(os.path.join(cert_pki, "mesh.crt"))), ("ca.crt", ca)):
            tmp = os.path.join(md, "." + name)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(md, name))

    def test_a_renewed_mesh_certificate_and_ca_are_reloaded(self):
        """cert-manager renews the mesh CA and the peer certificate: replicas 0 and 1 get, on disk, a CA
        bundle of the old and the new CA and a certificate of the new CA, and reload them (log and
        metric); replica 2 is then restarted with ONLY the new CA and certificate. Its links to 0 and 1
        come up both ways, which needs 0 and 1's mesh listeners to trust the new CA and their peer
        clients to present the new certificate on new connections (without the reload, 2 refuses
        theirs and they refuse its). Requests forwarded 0 → 2 and 2 → 0 are then served."""
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        new_pki = os.path.join(self.tmp.name, "pki-renewed")
        subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), new_pki], check=True, stdout=subprocess.DEVNULL)
        marks = {i: self.logs[i].mark() for i in (0, 1)}
        for i in (0, 1):
            self.write_mesh_files(i, [self.pki, new_pki], new_pki)
        for i in (0, 1):
            self.assertTrue(self.logs[i].wait("TLS certificates reloaded", since=marks[i], timeout=15),
                            f"gw-{i} did not reload its mesh files")
        # Replica 2: only the new material.
        self.procs[2].send_signal(signal.SIGTERM)
        self.assertEqual(self.procs[2].wait(timeout=30), 0)
        self.write_mesh_files(2, [new_pki], new_pki)
        self.start_replica(2)
        self.assertTrue(wait_for(lambda: len(self.logs[2].find("mesh peer link up")) >= REPLICAS - 1, 15),
                        "the restarted replica's links (new CA and certificate only) did not come up")
        self.start_agents(1, port=self.agent_ports[2], plane=2)
        self.start_agents(1, port=self.agent_ports[0], plane=0)
        self.assertTrue(wait_for(lambda: self.local_sessions(2) == 1 and self.local_sessions(0) == 1, 20))
        for entry, plane, served in ((0, 2, "gw-2"), (2, 0, "gw-0"), (1, 2, "gw-2")):
            self.assertTrue(wait_for(lambda: self.get(entry, pods_path(plane))[0] == 200, 10),
                            f"a request entering gw-{entry} for mesh-{plane} was not served")
            status, headers, body = self.get(entry, pods_path(plane))
            self.assertEqual((status, headers.get("x-cluster-gateway-served-by")), (200, served), body)
        for i in (0, 1):
            self.assertFalse(self.logs[i].find("TLS certificate reload failed; the previous certificates stay in use"))

    def test_a_frozen_replica_gives_502_instead_of_a_hang(self):
        """A cut link: the replica holding the agent is frozen (SIGSTOP: its sockets stay open, nothing
        answers). A request forwarded to it is given up once its updates stop (their absence is noticed
        within a second: bench/ measures it), not after the 30 s request timeout; the bound asserted
        here leaves room for a loaded machine."""
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES, port=self.agent_ports[0])
        self.assertTrue(wait_for(lambda: self.local_sessions(0) == PLANES, 20), "agents did not connect")
        path = "/api/proxy/workflowplane/mesh-1/_cluster/wp1/k8s/api/v1/namespaces/default/pods"
        self.assertTrue(wait_for(lambda: self.get(1, path)[0] == 200, 10))
        self.procs[0].send_signal(signal.SIGSTOP)
        try:
            for method in ("GET", "POST"):
                start = time.monotonic()
                conn = http.client.HTTPSConnection("localhost", self.internal[1], context=self.caller(), timeout=40)
                conn.request(method, path, body=b"{}" if method == "POST" else None)
                r = conn.getresponse()
                body = r.read()
                conn.close()
                took = time.monotonic() - start
                self.assertEqual(r.status, 502, body)
                self.assertIn(b"gw-0", body)
                self.assertLess(took, 4.0, "a request to a frozen replica waited for its timeout")
        finally:
            self.procs[0].send_signal(signal.SIGCONT)
        self.assertTrue(self.logs[1].find("forwarded request given up: the replica stopped sending updates (cut link or "
                                          "frozen process)", servedBy="gw-0"))

    def test_rebalancer_returns_a_restarted_replica_to_its_share(self):
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES)
        self.assertTrue(wait_for(lambda: [self.local_sessions(i) for i in range(REPLICAS)] == [2, 2, 2], 20))
        # gw-0 restarts: its agents move to the others (0/3/3), then it is back with none.
        self.procs[0].send_signal(signal.SIGTERM)
        self.assertEqual(self.procs[0].wait(timeout=15), 0)
        self.assertTrue(wait_for(lambda: self.local_sessions(1) + self.local_sessions(2) == PLANES, 15))
        self.start_replica(0)
        # The others shed what is above their share (3 > 2 x 1.25) and the agents come back through the
        # balancer until every replica is within the margin: 2/2/2.
        self.assertTrue(wait_for(lambda: [self.local_sessions(i) for i in range(REPLICAS)] == [2, 2, 2], 40),
                        [self.local_sessions(i) for i in range(REPLICAS)])
        self.assertTrue(self.logs[1].find("rebalancing: sending GOAWAY to the agents above this replica's fair share") or
                        self.logs[2].find("rebalancing: sending GOAWAY to the agents above this replica's fair share"))
        # And it stays there: no further shedding once balanced.
        time.sleep(2 * LEASE)
        self.assertEqual([self.local_sessions(i) for i in range(REPLICAS)], [2, 2, 2])

    def test_rolling_restart_under_load_fails_no_request(self):
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES)
        self.assertTrue(wait_for(lambda: sum(self.local_sessions(i) for i in range(REPLICAS)) == PLANES, 20),
                        "agents did not connect")
        front = Balancer(self.internal_ports)  # the Service in front of the internal API
        # Every replica must know every agent before the load starts.
        self.assertTrue(wait_for(lambda: all(self.get(i, pods_path(p))[0] == 200
                                             for i in range(REPLICAS) for p in range(PLANES)), 10))
        load = ProxiedGetLoad(front.port, self.caller(), PLANES, workers=8, rate=200.0).start()
        try:
            time.sleep(1.0)
            for i in range(REPLICAS):
                self.procs[i].send_signal(signal.SIGTERM)
                rc = self.procs[i].wait(timeout=15)
                self.assertEqual(rc, 0, f"gw-{i} exited {rc}; its last log lines: {self.log_tail(i)}")
                self.start_replica(i)
                # Back in the mesh (links to both peers) and its agents spread again over time.
                self.assertTrue(wait_for(lambda: len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1, 15))
                time.sleep(1.0)
        finally:
            load.stop()
            front.close()
        self.assertEqual(len(load.failures), 0, f"{len(load.failures)} failed of {load.total()}: {load.failures[:3]}")
        # A sanity bound (about 3,000 at 200/s on an idle machine); zero failures is asserted either way.
        self.assertGreater(load.ok, 500, f"the load ran: {load.ok} OK, p50 {load.percentile(0.5):.3f} s, "
                                         f"p99 {load.percentile(0.99):.3f} s")

    def test_the_last_replica_to_stop_writes_every_cr_disconnected(self):
        """Every replica stopped gracefully, one after the other, while the agents keep running: the
        last one (the writer, gw-0) holds every agent then, and the agents it sends away are reported
        moving; with no replica left to take them, its last write has every CR disconnected."""
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES)
        self.assertTrue(wait_for(lambda: sum(self.local_sessions(i) for i in range(REPLICAS)) == PLANES, 20),
                        "agents did not connect")
        self.assertTrue(wait_for(self.all_connected, 10), self.status_files())
        for i in (2, 1):
            self.procs[i].send_signal(signal.SIGTERM)
            rc = self.procs[i].wait(timeout=15)
            self.assertEqual(rc, 0, f"gw-{i} exited {rc}; its last log lines: {self.log_tail(i)}")
        # Their agents came back through the balancer to gw-0, the one replica left.
        self.assertTrue(wait_for(lambda: self.local_sessions(0) == PLANES, 20), self.local_sessions(0))
        self.assertTrue(wait_for(self.all_connected, 10), self.status_files())
        self.procs[0].send_signal(signal.SIGTERM)
        rc = self.procs[0].wait(timeout=15)
        self.assertEqual(rc, 0, f"gw-0 exited {rc}; its last log lines: {self.log_tail(0)}")
        self.assertTrue(self.logs[0].find("stopped", statusFlushed=True), self.log_tail(0))
        files = self.status_files()
        self.assertEqual(len(files), PLANES, files)
        for name, st in files.items():
            ac = st.get("agentConnection", {})
            self.assertFalse(ac.get("connected"), f"{name}: {ac}")
            self.assertEqual(ac.get("connectedAgents"), 0, f"{name}: {ac}")

    def test_mesh_routes_sums_and_survives_a_killed_writer(self):
        self.assertTrue(wait_for(lambda: all(len(self.logs[i].find("mesh peer link up")) >= REPLICAS - 1
                                             for i in range(REPLICAS)), 15), "peer links did not come up")
        self.start_agents(PLANES)
        self.assertTrue(wait_for(lambda: sum(self.local_sessions(i) for i in range(REPLICAS)) == PLANES, 20),
                        "agents did not connect")
        counts = [self.local_sessions(i) for i in range(REPLICAS)]
        self.assertEqual(counts, [PLANES // REPLICAS] * REPLICAS, "round-robin balancer spreads agents")

        # Every replica reaches every agent; some answers come from another replica.
        def reach_all():
            served = set()
            for i in range(REPLICAS):
                for p in range(PLANES):
                    st, h, body = self.get(i, pods_path(p))
                    if st != 200:
                        return None
                    self.assertEqual(h.get("x-cluster-gateway-entry-pod"), f"gw-{i}")
                    served.add((i, h.get("x-cluster-gateway-served-by")))
            return served
        served = wait_for(reach_all, 10)
        self.assertTrue(served, "a replica could not reach some agent")
        self.assertTrue(any(entry != int(by.split("-")[1]) for entry, by in served), served)
        # The plane status endpoint sums every replica's agents.
        for i in range(REPLICAS):
            st, _, body = self.get(i, "/api/v1/planes/status")
            self.assertEqual(st, 200)
            planes = json.loads(body)
            self.assertEqual(planes["total"], PLANES, body)
            self.assertTrue(all(p["connected"] and p["connectedAgents"] == 1 for p in planes["planes"]), body)
        # One writer: the smallest id; every CR written connected with one agent.
        self.assertTrue(wait_for(lambda: self.writers_by_log() == [0], 10), self.writers_by_log())
        self.assertTrue(wait_for(self.all_connected, 10), self.status_files())
        for s in self.status_files().values():
            self.assertEqual(s["agentConnection"]["connectedAgents"], 1)

        # kill -9 the writer (it holds agents too). Watch the status files meanwhile: never disconnected.
        seen_disconnected = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for name, s in self.status_files().items():
                    if not s.get("agentConnection", {}).get("connected", True):
                        seen_disconnected.append((name, s.get("agentConnection")))
                time.sleep(0.02)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        self.procs[0].send_signal(signal.SIGKILL)
        self.procs[0].wait()
        try:
            # Its agents come back through the balancer to the survivors.
            self.assertTrue(wait_for(lambda: self.local_sessions(1) + self.local_sessions(2) == PLANES, 15),
                            [self.local_sessions(i) for i in (1, 2)])
            # The next smallest id writes status once the dead replica leaves the directory.
            self.assertTrue(wait_for(lambda: self.writers_by_log() == [1], LEASE + 5), self.writers_by_log())
            self.assertTrue(self.logs[1].find("mesh replica dropped: not heard from within the lease duration (or its "
                                              "Lease expired); its agents leave routing and the status sum",
                                              peerReplica="gw-0"))
            # After the dead replica's agents left the sum: exactly one agent per CR again.
            self.assertTrue(wait_for(lambda: all(s["agentConnection"]["connectedAgents"] == 1 and
                                                 s["agentConnection"]["connected"]
                                                 for s in self.status_files().values()), 10), self.status_files())
            # Requests still reach every agent from either survivor.
            for i in (1, 2):
                for p in range(PLANES):
                    st, _, _ = self.get(i, pods_path(p))
                    self.assertEqual(st, 200)
        finally:
            stop.set()
            watcher.join()
        self.assertEqual(seen_disconnected, [], "a CR was written disconnected while its agent moved")


if __name__ == "__main__":
    sys.exit(ctest_main.main())
