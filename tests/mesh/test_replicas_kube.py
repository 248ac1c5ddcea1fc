"""Three gateway replicas in Kubernetes mode (no --planes-dir) against ONE fake API server
(tests/fakes/kube_apiserver), with --mesh-service: membership from EndpointSlices, a Lease per
replica, the Lease `cluster-gateway-status-writer` electing the one replica that writes status.

  * peers come from the EndpointSlices of the mesh Service (one slice per replica, its port named
    "mesh"): every replica brings its link up to the two others; the fake holds three replica Leases
    (label cluster-gateway.openchoreo.dev/role=replica), each held by its replica, and one writer
    Lease held by one of them;
  * agents reach the replicas through a round-robin TCP balancer (the Service's role); a caller at any
    replica's internal port reaches every agent (X-Cluster-Gateway-Entry-Pod / -Served-By);
  * the CRs' status (read from the fake) is connected with one agent each, and only the holder of
    the writer Lease PATCHes status (the fake's request log ties a connection to a replica through
    the Lease writes it carried, whose bodies name the replica; the replicas' debug log line
    "writing status" counts each replica's writes);
  * `kill -9` of the writer: its agents reconnect to the survivors through the balancer, no status
    PATCH carries connected=false meanwhile, a survivor holds the writer Lease within the lease
    duration plus a few seconds, the dead replica's Lease expires and the survivors drop it;
  * an EndpointSlice endpoint marked terminating keeps that replica a peer while it drains; one that
    leaves its slice (the Pod gone) is removed as a peer ("mesh peer removed");
  * a rolling restart of the three under 200 proxied GETs/s (as a RollingUpdate does it: endpoint
    terminating, out of the Services, SIGTERM, the same Pod name back, ready): every request answered
    200 and no status PATCH with connected=false. Its first runs found three gateway bugs (a restarted
    replica ready only by the lease fallback and answering 502/403; the restarted writer PATCHing
    every CR disconnected; requests in flight to a removed peer cancelled), fixed in the same change.

Real binaries, real TLS (dev PKI: mesh CA and peer certificate, checked against
--mesh-server-name localhost), real HTTP.

The fake refuses loopback IPs in EndpointSlices (as a real server does) and an FQDN needs two labels,
so "localhost" is refused too: the slices have addressType FQDN and the address "127.0.0.1" (four
DNS labels, which a real API server accepts as an FQDN too); the replicas resolve it to loopback."""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timezone

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import ctest_main  # noqa: E402
from balancer import Balancer  # noqa: E402
from gateway_proc import LogLines  # noqa: E402
from mesh_support import MeshReplicas, ProxiedGetLoad, RefusingPort, free_ports, pods_path  # noqa: E402
from kube_e2e_support import (CWP, AgentSim, FakeApiServer, by_name, cwp_doc, dev_pki, gateway_cmd, http_status,  # noqa: E402
                              read_bytes, start_gateway, status_patches, statuses, wait_for, write_seed)

REPLICAS = 3
PLANES = 6
LEASE = 3.0  # --mesh-lease-duration
NS = "openchoreo-control-plane"
SERVICE = "cluster-gateway-mesh"
ROLE_LABEL = "cluster-gateway.openchoreo.dev/role"
WRITER_LEASE = "cluster-gateway-status-writer"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
PRE_STOP = 1.0  # the Deployment's preStop sleep (5 s in deploy/), scaled down: endpoint gone, then SIGTERM
DROPPED = ("mesh replica dropped: not heard from within the lease duration (or its Lease expired); its agents leave "
           "routing and the status sum")


def micro_time(s):
    """A Lease MicroTime ("2026-12-06T18:00:00.123456Z") as Unix seconds."""
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def utc_time(unix):
    """Unix seconds as the gateway's log lines write times."""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def endpoint_slice(i, port, ready=True, terminating=False):
    """Replica gw-i's slice of the mesh Service: one endpoint (its Pod), one port named "mesh". A
    terminating Pod's endpoint is ready=false, terminating=true and still serving (as the endpoint
    controller writes it from the Pod's deletion until it is gone)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{SERVICE}-{i}", "namespace": NS, "labels": {"kubernetes.io/service-name": SERVICE}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["127.0.0.1"],
                           "conditions": {"ready": ready and not terminating, "serving": ready or terminating,
                                          "terminating": terminating},
                           "targetRef": {"kind": "Pod", "namespace": NS, "name": f"gw-{i}"}}],
            "ports": [{"name": "mesh", "port": port, "protocol": "TCP"}]}


class LogFile:
    """A replica's log file (LogLines' echo) that drops what its reader thread still writes after close()."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "w")

    def write(self, text):
        with self.lock:
            if self.f:
                self.f.write(text)

    def flush(self):
        with self.lock:
            if self.f:
                self.f.flush()

    def close(self):
        with self.lock:
            if self.f:
                self.f.close()
                self.f = None


class KubeReplicasTest(MeshReplicas, unittest.TestCase):
    def setUp(self):
        self.tmp = d = tempfile.mkdtemp(prefix="cg-mesh-kube-")
        self.api, self.balancer = None, None
        self.procs, self.logs, self.internal, self.sims, self.log_files = {}, {}, {}, [], []
        self.health, self.all_logs, self.exited = {}, [], []  # all_logs: (name, LogLines) of every replica started
        self.addCleanup(self.cleanup)  # also when setUp fails half-way
        self.pki = dev_pki(os.path.join(d, "pki"))
        ca = read_bytes(os.path.join(self.pki, "tenant-a-ca.crt"))
        seed = write_seed(os.path.join(d, "seed"),
                          [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}] +
                          [cwp_doc(f"wp{p}", f"mesh-{p}", ca) for p in range(PLANES)])
        self.api = FakeApiServer(d, extra_args=["--seed-dir", seed, "--log-bodies"])
        # Fixed ports: a restarted replica keeps its agent, mesh and internal ports (the balancers' backends).
        ports = free_ports(REPLICAS * 3)
        self.agent_ports, self.mesh_ports = ports[:REPLICAS], ports[REPLICAS:2 * REPLICAS]
        self.internal_ports = ports[2 * REPLICAS:]
        # The Service's EndpointSlices, before the replicas start (the watch is tested by step 4).
        for i in range(REPLICAS):
            code, _, body = self.api.request("POST", SLICES, endpoint_slice(i, self.mesh_ports[i]))
            self.assertEqual(code, 201, body)
        for i in range(REPLICAS):
            self.start_replica(i)
        self.balancer = Balancer(list(self.agent_ports))  # a copy: the rolling restart takes backends out

    def cleanup(self):
        for s in self.sims:
            s.kill()
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        for p in self.exited:  # replicas restarted: their output pipes (read to the end by now)
            if p.stdout:
                p.stdout.close()
        if self.balancer:
            self.balancer.close()
        if self.api:
            self.api.stop()
        for f in self.log_files:
            f.close()
        if os.environ.get("CG_KEEP_LOGS"):  # the replicas' logs and the fake's stderr, for a post-mortem
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_replica(self, i):
        pki = self.pki
        cmd = gateway_cmd(self.api.kubeconfig, pki, port=self.agent_ports[i])
        cmd[cmd.index("--internal-port") + 1] = str(self.internal_ports[i])
        cmd += [
            "--startup-grace", "0s", "--status-heartbeat-interval", "2s", "--shutdown-timeout", "4s",
            "--log-level", "debug",
            "--mesh=true", "--mesh-port", str(self.mesh_ports[i]), "--mesh-service", SERVICE, "--pod-namespace", NS,
            "--replica-id", f"gw-{i}", "--mesh-server-name", "localhost",
            "--mesh-ca-cert", os.path.join(pki, "mesh-ca.crt"),
            "--mesh-cert", os.path.join(pki, "mesh.crt"), "--mesh-key", os.path.join(pki, "mesh.key"),
            "--mesh-lease-duration", f"{LEASE:g}s"]
        # gw-i.log, then gw-i.1.log, gw-i.2.log, ... for each restart.
        starts = sum(1 for name, _ in self.all_logs if name.split(".")[0] == f"gw-{i}")
        name = f"gw-{i}" + (f".{starts}" if starts else "")
        self.log_files.append(LogFile(os.path.join(self.tmp, name + ".log")))
        log = LogLines(echo=self.log_files[-1])
        self.all_logs.append((name, log))
        proc, started = start_gateway(cmd, log=log)
        if i in self.procs:
            self.exited.append(self.procs[i])
        self.procs[i], self.logs[i], self.internal[i] = proc, log, started["internalPort"]
        self.health[i] = started["healthPort"]

    # -- readers ---------------------------------------------------------------------------------

    def lease(self, name):
        code, _, body = self.api.request("GET", f"{LEASES}/{name}")
        return body if code == 200 else None

    def holder(self):
        lease = self.lease(WRITER_LEASE)
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    def replica_leases(self):
        code, _, body = self.api.request("GET", f"{LEASES}?labelSelector={ROLE_LABEL}%3Dreplica")
        self.assertEqual(code, 200, body)
        return {o["metadata"]["name"]: o for o in body["items"]}

    def connection_owners(self):
        """{fake connection id: replica id} from the Lease writes in the fake's request log: a
        replica writes its own Lease and the writer Lease only with itself as holderIdentity, and a
        connection belongs to one process."""
        owners = {}
        for e in self.api.control("GET", "requests?resource=leases")["items"]:
            if e["method"] not in ("PUT", "POST", "PATCH") or not e.get("body") or "connection" not in e:
                continue
            try:
                who = (json.loads(e["body"]).get("spec") or {}).get("holderIdentity")
            except ValueError:
                continue
            if who:
                prev = owners.setdefault(e["connection"], who)
                self.assertEqual(prev, who, f"connection {e['connection']} carried Lease writes of two replicas")
        return owners

    def reach_all(self, entries):
        """(entry, served-by) pairs when every replica of `entries` reaches every plane's agent, else None."""
        served = set()
        for i in entries:
            for p in range(PLANES):
                st, h, _ = self.get(i, pods_path(p))
                if st != 200:
                    return None
                self.assertEqual(h.get("x-cluster-gateway-entry-pod"), f"gw-{i}")
                served.add((i, h.get("x-cluster-gateway-served-by")))
        return served

    def all_connected_once(self):
        st = statuses(self.api, CWP)
        return len(st) == PLANES and all((s.get("agentConnection") or {}).get("connected") is True and
                                         s["agentConnection"].get("connectedAgents") == 1 for s in st.values())

    def ready(self, i):
        """Replica i's readiness probe (/ready on its health port) answers 200."""
        return http_status(f"http://127.0.0.1:{self.health[i]}/ready") == 200

    def put_slice(self, i, **conditions):
        code, _, body = self.api.request("PUT", f"{SLICES}/{SERVICE}-{i}",
                                         endpoint_slice(i, self.mesh_ports[i], **conditions))
        self.assertEqual(code, 200, body)

    # Info lines worth seeing beside a failed request: a request waiting for an agent, a shutdown.
    EXCERPT_INFO = ("no agent for the CR right now, one was a moment ago: waiting for it", "shutting down",
                    "mesh replica left (bye)", "mesh peer removed", "mesh peer added")

    def log_excerpt(self, failures, around=1.5, limit=80):
        """For a failure report: the warn/error lines (answers other than 200, requests left at a
        shutdown, EXCERPT_INFO) of every replica process started, within `around` seconds of the first
        failures, each prefixed with its log's name."""
        def ts(text):
            return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        times = [ts(f["time"]) for f in failures[:20]]
        out = []
        for name, log in self.all_logs:
            for ev in log.find():
                if not ev.get("time") or not (ev.get("level") in ("warning", "error") or
                                              ev.get("statusCode", 200) != 200 or
                                              ev.get("msg") in self.EXCERPT_INFO or ev.get("inFlightLeft", 0) > 0):
                    continue
                t = ts(ev["time"])
                if any(abs(t - f) <= around for f in times):
                    out.append((ev["time"], name, json.dumps(ev)))
        return "\n".join(f"{name}: {line}" for _, name, line in sorted(out)[:limit])

    def writer_lines(self):
        """When each replica process said it writes status (or stopped): (time, log name, message)."""
        return sorted((ev["time"], name, ev["msg"]) for name, log in self.all_logs for ev in log.find()
                      if ev.get("msg") in ("this replica writes status now", "this replica no longer writes status"))

    def wait_links_up(self):
        """Every replica's links to the others are up (its log says so for each peer)."""
        for i in range(REPLICAS):
            for j in range(REPLICAS):
                if j != i:
                    self.assertTrue(self.logs[i].wait("mesh peer link up", peerReplica=f"gw-{j}", timeout=15),
                                    f"gw-{i}: no link up to gw-{j}")

    # -- the tests -------------------------------------------------------------------------------

    def test_kube_membership_leases_writer_and_a_killed_writer(self):
        t0 = time.monotonic()
        # 1. Peers from the EndpointSlices: every replica's links to the two others are up.
        self.wait_links_up()
        for i in range(REPLICAS):
            self.assertTrue(self.logs[i].find("mesh peers from EndpointSlices", peers=REPLICAS - 1))
        # Three replica Leases, each held by its replica, and one writer Lease held by one of them.
        self.assertTrue(wait_for(lambda: len(self.replica_leases()) == REPLICAS, 10), self.replica_leases())
        leases = self.replica_leases()
        self.assertEqual(sorted(leases), [f"gw-{i}" for i in range(REPLICAS)])
        for name, lease in leases.items():
            self.assertEqual(lease["spec"]["holderIdentity"], name)
            self.assertEqual(lease["spec"]["leaseDurationSeconds"], int(LEASE))
            self.assertEqual(lease["metadata"]["labels"][ROLE_LABEL], "replica")
        self.assertNotIn(WRITER_LEASE, leases, "the writer Lease is not a replica Lease")
        self.assertTrue(wait_for(lambda: self.holder() in {f"gw-{i}" for i in range(REPLICAS)}, 10), self.lease(WRITER_LEASE))
        writer_id = self.holder()
        w = int(writer_id.split("-")[1])
        self.assertTrue(wait_for(lambda: self.writers_by_log() == [w], 10), (writer_id, self.writers_by_log()))
        # Only that replica ever said it writes status.
        for i in range(REPLICAS):
            if i != w:
                self.assertEqual(self.logs[i].find("this replica writes status now"), [], f"gw-{i} wrote status too")

        # 2. Agents through the balancer spread over the replicas; every replica reaches every agent.
        self.sims.append(AgentSim(self.pki, self.balancer.port, "mesh", count=PLANES, spread=PLANES))
        self.assertTrue(wait_for(lambda: sum(self.local_sessions(i) for i in range(REPLICAS)) == PLANES, 20),
                        [self.local_sessions(i) for i in range(REPLICAS)])
        self.assertEqual([self.local_sessions(i) for i in range(REPLICAS)], [PLANES // REPLICAS] * REPLICAS,
                         "round-robin balancer spreads agents")
        served = wait_for(lambda: self.reach_all(range(REPLICAS)), 10)
        self.assertTrue(served, "a replica could not reach some agent")
        self.assertTrue(any(entry != int(by.split("-")[1]) for entry, by in served), served)
        self.assertEqual({by for _, by in served}, {f"gw-{i}" for i in range(REPLICAS)}, served)
        # The CRs in the fake: connected, one agent each (the writer sums every replica's agents).
        self.assertTrue(wait_for(self.all_connected_once, 10), statuses(self.api, CWP))
        # Only the Lease holder PATCHed status: by the connections the fake saw (tied to replicas by
        # their Lease writes) and by the replicas' own "writing status" lines.
        patches = status_patches(self.api)
        self.assertTrue(patches)
        owners = self.connection_owners()
        attributed = [owners[p["connection"]] for p in patches if p.get("connection") in owners]
        self.assertTrue(attributed, "no status PATCH went over a connection that also carried a Lease write")
        self.assertEqual(set(attributed), {writer_id}, "a replica other than the Lease holder PATCHed status")
        for i in range(REPLICAS):
            if i != w:
                self.assertEqual(self.logs[i].find("writing status"), [], f"gw-{i} (not the holder) wrote status")
        self.assertTrue(wait_for(lambda: len(self.logs[w].find("writing status")) == len(status_patches(self.api)), 5),
                        (len(self.logs[w].find("writing status")), len(status_patches(self.api))))
        self.assertEqual(self.holder(), writer_id, "the writer Lease changed hands without a failure")
        self.assertEqual(self.lease(WRITER_LEASE)["spec"].get("leaseTransitions", 0), 0)
        before = (len(attributed), len(patches))

        # 3. kill -9 the writer (it holds agents too).
        survivors = [i for i in range(REPLICAS) if i != w]
        marks = {i: self.logs[i].mark() for i in survivors}
        self.procs[w].send_signal(signal.SIGKILL)
        self.procs[w].wait()
        killed_at = time.time()  # after the wait: nothing the fake receives from now on is the dead replica's
        # Its agents come back through the balancer to the survivors.
        self.assertTrue(wait_for(lambda: sum(self.local_sessions(i) for i in survivors) == PLANES, 15),
                        [self.local_sessions(i) for i in survivors])
        # A survivor takes the writer Lease within the lease duration plus a few seconds, and says so.
        new_holder = wait_for(lambda: self.holder() if self.holder() in {f"gw-{i}" for i in survivors} else None,
                              LEASE + 4)
        self.assertTrue(new_holder, f"writer Lease not taken over: {self.lease(WRITER_LEASE)}")
        nw = int(new_holder.split("-")[1])
        self.assertEqual(self.lease(WRITER_LEASE)["spec"].get("leaseTransitions"), 1, self.lease(WRITER_LEASE))
        takeover = time.time() - killed_at
        self.assertLess(takeover, LEASE + 6)
        self.assertTrue(wait_for(lambda: self.writers_by_log() == [nw], 5), (new_holder, self.writers_by_log()))
        # The dead replica's Lease expires (no renewal since the kill) and the survivors drop it.
        def expired():
            spec = (self.lease(writer_id) or {}).get("spec") or {}
            return (spec.get("holderIdentity") == writer_id and spec.get("renewTime") and
                    micro_time(spec["renewTime"]) + spec["leaseDurationSeconds"] < time.time())
        self.assertTrue(wait_for(expired, LEASE + 3), self.lease(writer_id))
        self.assertLess(micro_time(self.lease(writer_id)["spec"]["renewTime"]), killed_at + 0.5,
                        "the dead replica's Lease was renewed after the kill")
        for i in survivors:
            self.assertTrue(self.logs[i].wait(DROPPED, since=marks[i], peerReplica=writer_id, timeout=LEASE + 3),
                            f"gw-{i} did not drop {writer_id}")
        # After the dead replica's agents left the sum: one agent per CR again, connected.
        self.assertTrue(wait_for(self.all_connected_once, 10), statuses(self.api, CWP))
        # Survivors still reach every agent.
        self.assertTrue(wait_for(lambda: self.reach_all(survivors), 10), "a survivor could not reach some agent")
        # No CR was ever PATCHed disconnected since the kill; every PATCH since came from the new holder.
        # (The new holder writes every CR at least once a --status-heartbeat-interval, 2 s.)
        after = wait_for(lambda: len(by_name(status_patches(self.api, since=killed_at))) == PLANES and
                         status_patches(self.api, since=killed_at), 6)
        self.assertTrue(after, f"not every CR was PATCHed after the kill: {status_patches(self.api, since=killed_at)}")
        bad = [(p["name"], p["applied"]) for p in after if (p["applied"] or {}).get("connected") is False]
        self.assertEqual(bad, [], "a CR was written disconnected while its agents moved")
        owners = self.connection_owners()
        attributed_after = [owners[p["connection"]] for p in after if p.get("connection") in owners]
        self.assertEqual(set(attributed_after) - {new_holder}, set(),
                         "a replica other than the new Lease holder PATCHed status after the kill")
        other = [i for i in survivors if i != nw][0]
        self.assertEqual(self.logs[other].find("writing status"), [], f"gw-{other} (not the holder) wrote status")

        # 4. An endpoint marked terminating (as the endpoint controller does for a deleted pod) stays a
        # peer: the replica drains, and a request it holds may wait for an agent that moved elsewhere.
        # Once the endpoint leaves the slice (the Pod is gone) it is no peer any more. (One merely not
        # ready stays a peer too: a starting replica waits for its peers' directories to turn ready.)
        for n, (i, targets) in enumerate(((w, survivors), (other, [nw]))):
            m = {j: self.logs[j].mark() for j in targets}
            self.put_slice(i, ready=False, terminating=True)
            # Then a slice with one more (starting) Pod, whose arrival each replica logs: by then it has
            # read the terminating endpoint too, and kept it.
            extra = endpoint_slice(f"extra-{n}", free_ports(1)[0], ready=False)
            code, _, body = self.api.request("POST", SLICES, extra)
            self.assertEqual(code, 201, body)
            for j in targets:
                self.assertTrue(self.logs[j].wait("mesh peer added", since=m[j], peerReplica=f"gw-extra-{n}", timeout=10),
                                f"gw-{j} did not read the slices")
                self.assertEqual(self.logs[j].find("mesh peer removed", since=m[j], peerReplica=f"gw-{i}"), [],
                                 f"gw-{j} dropped gw-{i} as a peer while its endpoint was terminating")
            code, _, body = self.api.request("DELETE", f"{SLICES}/{SERVICE}-extra-{n}")
            self.assertEqual(code, 200, body)
            gone = endpoint_slice(i, self.mesh_ports[i])
            gone["endpoints"] = []
            code, _, body = self.api.request("PUT", f"{SLICES}/{SERVICE}-{i}", gone)
            self.assertEqual(code, 200, body)
            for j in targets:
                self.assertTrue(self.logs[j].wait("mesh peer removed", since=m[j], peerReplica=f"gw-{i}", timeout=10),
                                f"gw-{j} kept gw-{i} as a peer after its endpoint left the slice")
        self.assertTrue(self.logs[nw].find("mesh peers from EndpointSlices", peers=0))
        print(f"\nmesh_replicas_kube: writer {writer_id} then {new_holder} (taken over {takeover:.1f}s after the "
              f"kill); status PATCHes tied to a replica by their connection: {before[0]}/{before[1]} before the kill, "
              f"{len(attributed_after)}/{len(after)} after; scenario {time.monotonic() - t0:.1f}s", file=sys.stderr)

    def test_rolling_restart_under_load_fails_no_request_and_writes_no_disconnect(self):
        """Issue 15: a rolling restart of the three replicas (a RollingUpdate with maxSurge 1 and
        maxUnavailable 0, emulated with the same Pod names) under 200 proxied GETs per second entering
        through a balancer in front of the internal ports, for agents spread over the replicas: every
        request answered 200, and no CR's status PATCHed connected=false meanwhile.

        Per replica, as Kubernetes does it: its endpoint turns terminating (ready=false) in its
        EndpointSlice and it leaves both Services (the balancers); the preStop sleep; SIGTERM; its exit
        (the drain: GOAWAY to its agents, which reconnect to the others through the agent balancer);
        the new Pod starts (same replica id) not ready; once its /ready answers 200 its endpoint is
        ready again and it is back in both Services. The next replica goes once the others' links to
        the new one are up."""
        t0 = time.monotonic()
        self.wait_links_up()
        self.sims.append(AgentSim(self.pki, self.balancer.port, "mesh", count=PLANES, spread=PLANES,
                                  log=os.path.join(self.tmp, "agent-sim.log")))
        self.assertTrue(wait_for(lambda: [self.local_sessions(i) for i in range(REPLICAS)] ==
                                 [PLANES // REPLICAS] * REPLICAS, 20),
                        [self.local_sessions(i) for i in range(REPLICAS)])
        # Every replica reaches every agent, every CR is connected and a replica writes status.
        self.assertTrue(wait_for(lambda: self.reach_all(range(REPLICAS)), 10), "a replica could not reach some agent")
        self.assertTrue(wait_for(self.all_connected_once, 10), statuses(self.api, CWP))
        self.assertTrue(wait_for(lambda: self.holder() in {f"gw-{i}" for i in range(REPLICAS)}, 10),
                        self.lease(WRITER_LEASE))
        writers = [self.holder()]

        refusing = RefusingPort()
        self.addCleanup(refusing.close)
        front = Balancer(list(self.internal_ports))  # the Service in front of the internal API
        self.addCleanup(front.close)

        def in_services(i, yes):
            for balancer, ports in ((self.balancer, self.agent_ports), (front, self.internal_ports)):
                balancer.backends[i] = ports[i] if yes else refusing.port

        began = time.time()
        load = ProxiedGetLoad(front.port, self.caller(), PLANES, workers=8, rate=200.0).start()
        steps = []
        try:
            time.sleep(1.0)
            for i in range(REPLICAS):
                s0 = time.monotonic()
                # The old Pod is deleted: terminating in its slice, out of the Services; preStop; SIGTERM.
                self.put_slice(i, ready=False, terminating=True)
                in_services(i, False)
                time.sleep(PRE_STOP)
                self.procs[i].send_signal(signal.SIGTERM)
                self.assertEqual(self.procs[i].wait(timeout=15), 0, f"gw-{i} did not exit cleanly on SIGTERM")
                stopped = time.monotonic()
                # The new Pod (same name): in its slice, not ready, until its readiness probe passes.
                self.put_slice(i, ready=False)
                marks = {j: self.logs[j].mark() for j in range(REPLICAS) if j != i}
                self.start_replica(i)
                self.assertTrue(wait_for(lambda: self.ready(i), 15), f"gw-{i} did not become ready after its restart")
                ready = time.monotonic()
                self.put_slice(i, ready=True)
                in_services(i, True)
                for j in marks:
                    self.assertTrue(self.logs[j].wait("mesh peer link up", since=marks[j], peerReplica=f"gw-{i}",
                                                      timeout=10), f"gw-{j}: no link up to the restarted gw-{i}")
                steps.append((i, stopped - s0, ready - stopped, time.monotonic() - s0))
                if self.holder() != writers[-1]:
                    writers.append(self.holder())
                time.sleep(1.0)
        finally:
            load.stop()
        ended = time.time()
        took = time.monotonic() - t0
        rate = load.ok / (ended - began)
        # No CR was PATCHed connected=false during the restart, and every CR was PATCHed meanwhile (the
        # writer writes each CR at least once a --status-heartbeat-interval, 2 s; writer changes too).
        patches = [p for p in status_patches(self.api, since=began) if p["receivedAt"] <= ended]
        bad = [(p["name"], utc_time(p["receivedAt"]), p["applied"]) for p in patches
               if (p["applied"] or {}).get("connected") is False]
        problems = []  # both kinds are reported at once: each names its time, replica and log lines
        if load.failures:
            problems.append(f"{len(load.failures)} of {load.total()} proxied GETs failed during the rolling restart:\n"
                            f"{load.failures[:10]}\nthe replicas' log lines around them:\n"
                            f"{self.log_excerpt(load.failures)}")
        if bad:
            problems.append(f"{len(bad)} status PATCHes carried connected=false during the rolling restart: {bad[:6]}\n"
                            f"writers by log line: {self.writer_lines()}")
        self.assertEqual(problems, [], "\n\n".join(problems) + f"\n(CG_KEEP_LOGS=1 keeps the logs: {self.tmp})")
        self.assertGreater(load.ok, 300, "the load ran")  # about 4,000 at 200/s on an idle machine
        self.assertEqual(sorted(by_name(patches)), sorted(f"wp{p}" for p in range(PLANES)),
                         "not every CR was PATCHed during the rolling restart")
        # Afterwards: one agent per CR, connected; every replica reaches every agent.
        self.assertTrue(wait_for(self.all_connected_once, 15), statuses(self.api, CWP))
        self.assertTrue(wait_for(lambda: self.reach_all(range(REPLICAS)), 10), "a replica could not reach some agent")
        print(f"\nmesh_replicas_kube rolling restart: {load.ok} proxied GETs answered 200 ({rate:.0f}/s; p99 "
              f"{load.percentile(0.99) * 1000:.0f} ms, max {load.percentile(1.0) * 1000:.0f} ms), none failed; "
              f"{len(patches)} status PATCHes, none disconnected; writers {' -> '.join(map(str, writers))}; per replica "
              f"(stopped, ready, total s): "
              f"{', '.join(f'gw-{i} {a:.1f}/{b:.1f}/{c:.1f}' for i, a, b, c in steps)}; agents now "
              f"{[self.local_sessions(i) for i in range(REPLICAS)]}; case {took:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(ctest_main.main())
