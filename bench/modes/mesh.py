"""g. Replicas (--mesh): two replicas A (gw-1) and B (gw-2) on loopback with static peers, one simulated
agent connected straight to B's agent port. Measures:
  1. forwarding overhead: latency at a fixed rate of 1 KiB POSTs (echoed) sent to A, which forwards them one
     hop to B, against the same sent to B (served from its local session), bench-tunnel-load as in mode c;
  2. 1 MiB throughput through a hop: MiB/s via A against via B;
  3. a cut link: SIGSTOP of B (its sockets stay open, nothing answers), then a POST sent to A at once:
     time until A answers 502 (it stopped hearing B's directory updates), against the goal of a second;
     a few rounds, SIGCONT in between;
  4. status-writer failover: kill -9 of A (the smallest live --replica-id writes status) until B logs
     "this replica writes status now", against --mesh-lease-duration;
  5. agents re-homed per second: N agents through a round-robin TCP balancer over both agent ports (the
     Service's role), SIGTERM of A, until B holds every agent that A held (B's log: "agent connected
     successfully" minus "agent disconnected" events since the signal); with the defaults and with the
     rebalancer off, each on a fresh pair."""
import datetime
import http.client
import json
import os
import signal
import ssl
import subprocess
import time

from harness import (ROOT, Gateway, ModeFailed, Proc, free_port, gateway_cmd, http_get, log, metric_sum, proc_cpu_seconds,
                     run_json, start_agents)
from report import Table, fmt, goal_text, setup

import balancer  # tests/support/balancer.py (harness puts tests/support on sys.path)

NAME = "mesh"
TITLE = "g. Replicas: forwarding, failover, re-homing"
SIZES = {
    "full": dict(rate=500, requests=5000, warmup=250, conns=16, body=1024, rounds=5,
                 big_body=1 << 20, big_conns=4, big_duration=10.0, big_warmup=1.0,
                 lease=3.0, agents=500, agent_rate=250, cut_rounds=5),
    "tiny": dict(rate=200, requests=200, warmup=20, conns=4, body=1024, rounds=1,
                 big_body=1 << 20, big_conns=2, big_duration=1.0, big_warmup=0.3,
                 lease=3.0, agents=50, agent_rate=0, cut_rounds=1),
}
TARGETS = ("local", "forwarded")  # sent to B (its own agent) / sent to A (forwarded one hop to B)
P50_GOAL_MS = 0.3        # forwarding adds at most this much p50 over a local hop (issue 15)
THROUGHPUT_GOAL = 0.7    # 1 MiB throughput through a hop, of local
FAILOVER_SLACK_S = 1.0   # the writer moves within lease + this
CUT_GOAL_S = 1.0         # a forwarded request to a replica behind a cut link: 502 (or failover) within this
K8S_PATH = "/api/v1/namespaces/default/configmaps"
PROXY_PATH = f"/api/proxy/dataplane/mesh/_cluster/mesh/k8s{K8S_PATH}"
SHUTDOWN_TIMEOUT = "10s"  # as every bench gateway; the drain spreads GOAWAYs over min(this / 4, 2 s)
# Re-homing is measured with the defaults and with the rebalancer off (--mesh-rebalance-margin, default 0.25):
# while A drains, B's rebalancer still counts A among the replicas and may send GOAWAY to some of its own.
REHOME_VARIANTS = (("defaults", ()), ("rebalancer off", ("--mesh-rebalance-margin", "-1")))


# ---- logs ----------------------------------------------------------------------------------------
def _epoch(ts):
    """The gateway's log time ("%Y-%m-%dT%H:%M:%S.%fZ", UTC) as seconds since the epoch."""
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def log_events(path, msg, since=0):
    """[(epoch seconds, event)] of the JSON log lines of `path` with this msg, from line `since` on."""
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i < since or f'"{msg}"' not in line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("msg") == msg:
                out.append((_epoch(ev["time"]), ev))
    return out


def log_mark(path):
    with open(path) as f:
        return sum(1 for _ in f)


# ---- a replica -----------------------------------------------------------------------------------
class Replica:
    """cluster-gateway with --mesh=true and static peers: like harness.Gateway (same flags, lifted session
    limits, CG_BENCH_GATEWAY_EXTRA), but /ready is waited for separately (a replica is ready once it heard
    its peers, so both are started first) and its mesh port is fixed (the peers list it)."""
    label = "replica"

    def __init__(self, env, rid, planes_dir, mesh_port, peer_ports, lease, mesh_pki, logname, extra=()):
        self.rid = rid
        self.status_dir = os.path.join(os.path.dirname(planes_dir), "status")
        self.logfile = env.path(NAME, logname)
        cmd = [*gateway_cmd(env.binary("cluster-gateway"), env.pki, planes_dir),
               "--status-dir", self.status_dir, "--shutdown-timeout", SHUTDOWN_TIMEOUT,
               "--max-agent-sessions", "1000000", "--max-agents-per-plane", "1000000",
               "--mesh=true", "--mesh-port", str(mesh_port),
               "--mesh-peers", ",".join(f"127.0.0.1:{p}" for p in peer_ports), "--replica-id", rid,
               "--mesh-ca-cert", os.path.join(mesh_pki, "mesh-ca.crt"),
               "--mesh-cert", os.path.join(mesh_pki, "mesh.crt"), "--mesh-key", os.path.join(mesh_pki, "mesh.key"),
               "--mesh-lease-duration", f"{lease:g}s", *extra, *os.environ.get("CG_BENCH_GATEWAY_EXTRA", "").split()]
        self.cmdline = cmd
        self.proc = Proc(f"replica-{rid}", cmd, self.logfile)
        self.ports = self._started_event(30.0)
        self.agent_port = self.ports["agentPort"]
        self.health_port = self.ports["healthPort"]
        self.internal_port = self.ports["internalPort"]

    _started_event = Gateway._started_event
    pid = Gateway.pid
    wait = Gateway.wait
    metrics = Gateway.metrics
    sessions = Gateway.sessions

    def wait_ready(self, timeout=60):
        self.wait(lambda: http_get(f"http://127.0.0.1:{self.health_port}/ready")[0] == 200, timeout,
                  f"{self.rid} /ready (peers' directories)")

    def events(self, msg, since=0):
        return log_events(self.logfile, msg, since)

    def mark(self):
        return log_mark(self.logfile)

    def stop(self):
        return self.proc.stop(timeout=30)


# ---- the Service in front of the agent ports: tests/support/balancer.py -------------------------------
class Balancer(balancer.Balancer):
    """The tests' round-robin TCP balancer (a backend that refuses is skipped, bytes relayed untouched, one
    thread per connection in the driver's process), with the attribute harness.start_agents reads."""

    def __init__(self, backends):
        super().__init__(backends)
        self.agent_port = self.port


# ---- helpers -------------------------------------------------------------------------------------
def mesh_pki(env):
    """Where mesh-ca.crt / mesh.crt / mesh.key are: the run's dev PKI, or (a PKI made before scripts/dev-pki
    issued mesh certificates) a second dev PKI of which only the mesh files are used."""
    if os.path.exists(os.path.join(env.pki, "mesh.crt")):
        return env.pki
    d = env.path("mesh-pki")
    subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), d], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return d


def caller_ctx(env):
    ctx = ssl.create_default_context(cafile=os.path.join(env.pki, "gateway-ca.crt"))
    ctx.load_cert_chain(os.path.join(env.pki, "controller.crt"), os.path.join(env.pki, "controller.key"))
    return ctx


def post_once(env, port):
    """One 1 KiB POST through the internal API at `port`: (status, entry pod, served by)."""
    conn = http.client.HTTPSConnection("localhost", port, context=caller_ctx(env), timeout=10)
    try:
        conn.request("POST", PROXY_PATH, body=json.dumps({"kind": "ConfigMap", "data": {"x": "y" * 1000}}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("X-Cluster-Gateway-Entry-Pod"), r.getheader("X-Cluster-Gateway-Served-By")
    finally:
        conn.close()


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def _load(env, what, logname, args, replicas, agent):
    """bench-tunnel-load, with the CPU seconds of each replica and of the agent simulator over the whole run
    (warm-up and connection set-up included)."""
    c0 = {r.rid: proc_cpu_seconds(r.pid) for r in replicas}
    s0 = proc_cpu_seconds(agent.pid)
    la = loadavg()
    r = run_json([env.binary("bench-tunnel-load"), *args], env.path(NAME, logname))
    if r["_exit"] != 0 or r.get("errors"):
        raise ModeFailed(f"mesh {what}: {r.get('errors')} errors: {r.get('errorKinds')}; see {env.path(NAME, logname)}")
    r["replicaCpuSeconds"] = {x.rid: proc_cpu_seconds(x.pid) - c0[x.rid] for x in replicas}
    r["agentCpuSeconds"] = proc_cpu_seconds(agent.pid) - s0
    r["loadavgAtStart"] = la
    return r


# ---- the mode ------------------------------------------------------------------------------------
def run(env):
    z = env.sizes[NAME]
    lease = z["lease"]
    planes = env.write_planes(NAME, [("ClusterDataPlane", "mesh", "mesh", env.agent_ca()),
                                     ("ClusterDataPlane", "rehome", "rehome", env.agent_ca())])
    mpki = mesh_pki(env)

    def pair(tag, extra=()):
        """A (gw-1) and B (gw-2) on fresh mesh ports, both ready (each has heard the other)."""
        ports = [free_port()]
        while len(ports) < 2:
            p = free_port()
            if p not in ports:
                ports.append(p)
        x = Replica(env, "gw-1", planes, ports[0], [ports[1]], lease, mpki, f"gateway-a{tag}.log", extra)
        try:
            y = Replica(env, "gw-2", planes, ports[1], [ports[0]], lease, mpki, f"gateway-b{tag}.log", extra)
        except BaseException:
            x.stop()
            raise
        x.wait_ready()
        y.wait_ready()
        return x, y

    res = {"lease": lease, "replicas": {"A": "gw-1", "B": "gw-2"}}
    a = b = sim = None
    try:
        a, b = pair("")
        res["commandA"] = a.cmdline
        sim = start_agents(env, b, f"{NAME}:sim-b", 1, "mesh")  # straight to B's agent port
        b.wait(lambda: b.sessions() >= 1, 30, "the agent's session at B")
        # A learns B's agent from B's directory within a publish interval or two.
        a.wait(lambda: post_once(env, a.internal_port)[0] == 201, 30, "a POST via A served by B's agent")
        res["headers"] = {"viaA": post_once(env, a.internal_port), "viaB": post_once(env, b.internal_port)}
        if res["headers"]["viaA"][1:] != ("gw-1", "gw-2") or res["headers"]["viaB"][1:] != ("gw-2", "gw-2"):
            raise ModeFailed(f"unexpected Entry-Pod / Served-By headers: {res['headers']}")
        log(f"mesh: via A: {res['headers']['viaA']}, via B: {res['headers']['viaB']}")

        # 1. Latency at a fixed rate; rounds of local then forwarded, the round with the median added p50.
        common = ["--cert", os.path.join(env.pki, "controller.crt"), "--key", os.path.join(env.pki, "controller.key"),
                  "--ca", os.path.join(env.pki, "gateway-ca.crt"), "--path", PROXY_PATH]
        targets = {"local": ["--port", str(b.internal_port), "--server-pid", str(b.pid)],
                   "forwarded": ["--port", str(a.internal_port), "--server-pid", str(a.pid)]}
        rounds = []
        for k in range(z["rounds"]):
            rnd = {}
            for t in TARGETS:
                log(f"mesh: round {k + 1}/{z['rounds']}: {t}: {z['requests']} requests at {z['rate']}/s, "
                    f"{z['body']}-byte bodies (load {loadavg()})")
                rnd[t] = _load(env, f"rate {t}", f"rate-{t}-{k + 1}.log",
                               ["--mode", "rate", *common, *targets[t], "--rate", str(z["rate"]),
                                "--requests", str(z["requests"]), "--warmup-requests", str(z["warmup"]),
                                "--connections", str(z["conns"]), "--body-size", str(z["body"])], (a, b), sim)
            rounds.append(rnd)

        def added50(rnd):
            return rnd["forwarded"]["latencyMs"]["p50"] - rnd["local"]["latencyMs"]["p50"]
        res["rateRounds"] = [{t: dict(rnd[t]["latencyMs"], loadavg=rnd[t]["loadavgAtStart"]) for t in rnd}
                             for rnd in rounds]
        res["rate"] = sorted(rounds, key=added50)[len(rounds) // 2]
        res["rateRound"] = rounds.index(res["rate"]) + 1
        lo, fw = res["rate"]["local"]["latencyMs"], res["rate"]["forwarded"]["latencyMs"]
        res["addedP50Ms"] = fw["p50"] - lo["p50"]
        res["addedP99Ms"] = fw["p99"] - lo["p99"]

        # 2. 1 MiB throughput; rounds of local then forwarded, the round with the median ratio shown.
        big = []
        for k in range(z["rounds"]):
            rnd = {}
            for t in TARGETS:
                log(f"mesh: throughput round {k + 1}/{z['rounds']}: {t}: 1 MiB bodies, {z['big_conns']} connections, "
                    f"{z['big_duration']}s (load {loadavg()})")
                rnd[t] = _load(env, f"throughput {t}", f"throughput-{t}-{k + 1}.log",
                               ["--mode", "throughput", *common, *targets[t],
                                "--connections", str(z["big_conns"]), "--duration", str(z["big_duration"]),
                                "--warmup", str(z["big_warmup"]), "--body-size", str(z["big_body"])], (a, b), sim)
            big.append(rnd)

        def ratio(rnd):
            return rnd["forwarded"]["bodyMiBPerSecond"] / rnd["local"]["bodyMiBPerSecond"]
        res["throughputRounds"] = [{t: {"MiBps": rnd[t]["bodyMiBPerSecond"], "loadavg": rnd[t]["loadavgAtStart"]}
                                    for t in rnd} for rnd in big]
        res["throughput"] = sorted(big, key=ratio)[len(big) // 2]
        res["throughputRound"] = big.index(res["throughput"]) + 1
        res["throughputRatio"] = ratio(res["throughput"])
        log(f"mesh: forwarding adds p50 {res['addedP50Ms']:.3f} ms, p99 {res['addedP99Ms']:.3f} ms; "
            f"1 MiB through a hop {100 * res['throughputRatio']:.0f}% of local")

        # 3. A cut link: B (holding the agent) is frozen; a POST to A (not repeatable: no failover) must
        # get its 502 within a second of the freeze.
        res["cut"] = []
        for k in range(z["cut_rounds"]):
            a.wait(lambda: post_once(env, a.internal_port)[0] == 201, 30, "a POST via A served by B's agent")
            time.sleep(0.3)
            la = loadavg()
            t_stop = time.monotonic()
            b.proc.p.send_signal(signal.SIGSTOP)
            try:
                status = post_once(env, a.internal_port)[0]
                took = time.monotonic() - t_stop
            finally:
                b.proc.p.send_signal(signal.SIGCONT)
            if status != 502:
                raise ModeFailed(f"mesh cut link: a POST via A while B was frozen answered {status}, not 502")
            res["cut"].append({"seconds": took, "loadavg": la})
            log(f"mesh: cut link round {k + 1}: 502 after {took:.3f} s (load {la})")
        cut = sorted(x["seconds"] for x in res["cut"])
        res["cutMedianSeconds"] = cut[len(cut) // 2]
        res["cutMaxSeconds"] = cut[-1]

        # 4. Writer failover: A (gw-1, the smallest id) writes status; kill -9 it.
        a.wait(lambda: len(a.events("this replica writes status now")) > len(a.events("this replica no longer writes status")),
               lease + 10, "A to write status")
        mb = b.mark()
        res["failoverLoadavg"] = loadavg()
        t_kill = time.time()
        a.proc.p.send_signal(signal.SIGKILL)
        a.proc.p.wait()
        a.stop()
        b.wait(lambda: b.events("this replica writes status now", mb), lease + 15, "B to write status after kill -9 of A")
        t_writer = b.events("this replica writes status now", mb)[0][0]
        dropped = b.events("mesh replica dropped: not heard from within the lease duration (or its Lease expired); its "
                           "agents leave routing and the status sum", mb)
        res["failoverSeconds"] = t_writer - t_kill
        res["droppedAfterSeconds"] = dropped[0][0] - t_kill if dropped else None
        log(f"mesh: kill -9 of the writer: B writes status {res['failoverSeconds']:.2f} s later (lease {lease:g} s)")

        b.stop()
        sim.stop()

        # 5. Re-homing, each variant with a fresh pair.
        res["rehomeVariants"] = []
        for label, extra in REHOME_VARIANTS:
            res["rehomeVariants"].append(rehome(env, z, pair, label, extra))
        res["rehome"] = res["rehomeVariants"][0]
    finally:
        if sim:
            sim.stop()
        for g in (a, b):
            if g:
                g.stop()
    return res


def rehome(env, z, pair, label, extra):
    """N agents through the balancer over A and B; SIGTERM of A; from then until B holds all N (and keeps
    them: B's connected minus disconnected events since the signal reach A's count and stay there)."""
    n = z["agents"]
    tag = "-" + label.replace(" ", "-")
    a, b = pair(tag, extra)
    bal = sims = None
    try:
        bal = Balancer([a.agent_port, b.agent_port])
        ma, mb = a.mark(), b.mark()
        log(f"mesh: re-homing ({label}): {n} agents through a round-robin balancer over A and B")
        sims = start_agents(env, bal, f"{NAME}:sim-rehome{tag}", n, "rehome", rate=z["agent_rate"],
                            source_ips=env.source_ips(1))
        on = {}

        def spread():
            on["A"] = len(a.events("agent connected successfully", ma)) - len(a.events("agent disconnected", ma))
            on["B"] = len(b.events("agent connected successfully", mb)) - len(b.events("agent disconnected", mb))
            return on["A"] + on["B"] >= n
        a.wait(spread, 120, f"{n} agents connected over A and B", interval=0.25)
        if not sims.alive():
            raise ModeFailed(f"agent simulator exited; see {sims.logfile}")
        r = {"variant": label, "flags": list(extra), "agents": n, "onA": on["A"], "onB": on["B"], "loadavg": loadavg()}
        time.sleep(1.0)  # B's directory has A's agents; the connect-time status writes are behind us
        mb = b.mark()
        t_term = time.time()
        a.proc.p.send_signal(signal.SIGTERM)

        def timeline():
            """[(time, +1 / -1)] of B's agent events since the signal."""
            ev = [(t, 1) for t, _ in b.events("agent connected successfully", mb)]
            ev += [(t, -1) for t, _ in b.events("agent disconnected", mb)]
            return sorted(ev)
        deadline = t_term + 60
        settled_since = None
        while True:
            if not b.proc.alive():
                raise ModeFailed(f"B exited; see {b.logfile}")
            if time.time() > deadline:
                raise ModeFailed(f"B did not hold all {n} agents within 60 s of A's SIGTERM "
                                 f"(net {sum(d for _, d in timeline())} of A's {on['A']} arrived)")
            holds = sum(d for _, d in timeline()) >= on["A"] and b.sessions() >= n
            if holds:
                settled_since = settled_since or time.time()
                if time.time() - settled_since >= 1.5 and not a.proc.alive():
                    break  # held for 1.5 s and A is gone (no rebalancing can follow with one replica)
            else:
                settled_since = None
            time.sleep(0.1)
        r["aExit"] = a.stop()
        ev = timeline()
        net, last_short = 0, -1
        for i, (_, d) in enumerate(ev):
            net += d
            if net < on["A"]:
                last_short = i
        t_all = ev[last_short + 1][0]
        arrivals = [t for t, d in ev if d > 0]
        drained = log_events(a.logfile, "agent sessions drained")
        sheds = b.events("rebalancing: sending GOAWAY to the agents above this replica's fair share", mb)
        r.update({"moved": on["A"], "firstSeconds": arrivals[0] - t_term, "allSeconds": t_all - t_term,
                  "connectsAtB": len(arrivals), "disconnectsAtB": len(ev) - len(arrivals),
                  "rebalancerShedAtB": sum(int(e.get("shed", 0)) for _, e in sheds),
                  "bSessions": int(metric_sum(b.metrics(), "cluster_gateway_agent_sessions")),
                  "drainedAtSeconds": drained[0][0] - t_term if drained else None})
        r["agentsPerSecond"] = r["moved"] / r["allSeconds"]
        log(f"mesh: re-homing ({label}): A's {r['moved']} agents all on B {r['allSeconds']:.2f} s after SIGTERM "
            f"({r['agentsPerSecond']:.0f} agents/s; {r['connectsAtB']} connects and {r['disconnectsAtB']} "
            f"disconnects at B, rebalancer GOAWAYs at B: {r['rebalancerShedAtB']})")
        return r
    finally:
        if sims:
            sims.stop()
        if bal:
            bal.close()
        for g in (a, b):
            g.stop()


def summary(res, z):
    lo, fw = res["rate"]["local"]["latencyMs"], res["rate"]["forwarded"]["latencyMs"]
    tl, tf = res["throughput"]["local"], res["throughput"]["forwarded"]
    lease = res["lease"]
    return [
        ("g. Forwarding added latency p50", f"via A {fmt(fw['p50'], 3)} ms vs via B {fmt(lo['p50'], 3)} ms "
         f"({fmt(res['rate']['forwarded']['rate'], 0)} req/s, {z['body']} B)", f"{fmt(res['addedP50Ms'], 3)} ms",
         f"≤ {P50_GOAL_MS} ms", goal_text(res["addedP50Ms"], P50_GOAL_MS, False, " ms")),
        ("g. Forwarding added latency p99", f"via A {fmt(fw['p99'], 3)} ms vs via B {fmt(lo['p99'], 3)} ms",
         f"{fmt(res['addedP99Ms'], 3)} ms", "—", "—"),
        ("g. 1 MiB throughput through a hop", f"via A {fmt(tf['bodyMiBPerSecond'], 1)} MiB/s vs via B "
         f"{fmt(tl['bodyMiBPerSecond'], 1)} MiB/s", f"{fmt(100 * res['throughputRatio'], 0)}% of local",
         f"≥ {fmt(100 * THROUGHPUT_GOAL, 0)}%",
         "met" if res["throughputRatio"] >= THROUGHPUT_GOAL else
         f"missed ({fmt(res['throughputRatio'] / THROUGHPUT_GOAL * 100, 0)}% of goal)"),
        ("g. Cut link: forwarded POST answered", f"502 after SIGSTOP of the serving replica, max of "
         f"{len(res['cut'])}: {fmt(res['cutMaxSeconds'], 3)} s", f"{fmt(res['cutMedianSeconds'], 3)} s (median)",
         f"≤ {fmt(CUT_GOAL_S, 1)} s", goal_text(res["cutMaxSeconds"], CUT_GOAL_S, False, " s")),
        ("g. Status-writer failover (kill -9)", f"--mesh-lease-duration {lease:g}s",
         f"{fmt(res['failoverSeconds'], 2)} s", f"≈ lease (≤ {fmt(lease + FAILOVER_SLACK_S, 1)} s)",
         goal_text(res["failoverSeconds"], lease + FAILOVER_SLACK_S, False, " s")),
    ] + [(f"g. Agents re-homed (SIGTERM), {r['variant']}", f"{r['moved']:,} of {r['agents']:,} agents from A to B in "
          f"{fmt(r['allSeconds'], 2)} s", f"{fmt(r['agentsPerSecond'], 0)} agents/s", "—", "—")
         for r in res["rehomeVariants"]]


def _cpu_us(r, rid, z):
    """CPU of replica `rid` per request over the whole load run (warm-up requests and connection set-up
    included)."""
    return 1e6 * r["replicaCpuSeconds"][rid] / max(1, r["requests"] + z["warmup"])


def tables(res, z):
    lease = res["lease"]
    rh = res["rehome"]
    variants = "; ".join(f"{r['variant']}" + (f" `{' '.join(r['flags'])}`" if r["flags"] else "")
                         for r in res["rehomeVariants"])
    out = [setup("Setup", [
        ("Replicas", "A = `gw-1`, B = `gw-2`: `cluster-gateway --mesh=true --mesh-peers <the other's mesh port> "
                     f"--replica-id gw-N --mesh-ca-cert/--mesh-cert/--mesh-key` (dev-pki mesh-ca, mesh) "
                     f"`--mesh-lease-duration {lease:g}s --shutdown-timeout {SHUTDOWN_TIMEOUT}`, file plane source, "
                     "loopback, no CPU pinning"),
        ("Agent", "one cluster-agent-sim agent connected straight to B's agent port (POST echo, 201)"),
        ("Requests", f"bench-tunnel-load → `POST {PROXY_PATH}` (mTLS, dev-pki controller.crt): sent to B = local "
                     "hop (B's own session), sent to A = forwarded one hop over the mesh port to B; checked: "
                     f"Entry-Pod/Served-By via A {res['headers']['viaA'][1]}/{res['headers']['viaA'][2]}, via B "
                     f"{res['headers']['viaB'][1]}/{res['headers']['viaB'][2]}"),
        ("Latency load", f"open loop, {fmt(z['rate'], 0)} requests/s, {z['body']}-byte bodies echoed, "
                         f"{z['conns']} keep-alive connections, {z['warmup']:,} warm-up then {z['requests']:,} "
                         f"measured; {z['rounds']} round(s) of local then forwarded, the round with the median "
                         "added p50 shown"),
        ("Throughput load", f"closed loop, {z['big_conns']} keep-alive connections, {z['big_body']:,}-byte bodies "
                            f"echoed, {z['big_warmup']} s warm-up, {z['big_duration']} s measured; {z['rounds']} "
                            "round(s) of local then forwarded, the round with the median ratio shown"),
        ("Cut link", f"{z['cut_rounds']} round(s): a POST via A served by B, then SIGSTOP of B and at once a 1 KiB "
                     "POST to A (not repeatable, so no failover): time from the signal to A's 502; SIGCONT after"),
        ("Failover", "A (smallest id) writes status; `kill -9` A; time until B logs `this replica writes status "
                     "now` (log timestamp − kill time)"),
        ("Re-homing", f"a fresh pair per variant ({variants}); {rh['agents']:,} agents (one cluster-agent-sim "
                      f"process, connect rate {z['agent_rate'] or 'unlimited'}) through a round-robin TCP balancer "
                      "(tests/support/balancer.py, in the driver) over both agent ports; SIGTERM A; time until B "
                      "holds them all: from B's log, the first moment after which its `agent connected successfully` "
                      "minus `agent disconnected` events since the signal stay at A's count"),
    ])]
    rows = []
    for t in TARGETS:
        r = res["rate"][t]
        lat = r["latencyMs"]
        rows.append((t + (" (via B)" if t == "local" else " (via A → B)"), f"{r['requests']:,}",
                     f"{fmt(r['achievedRate'], 0)}/s", f"{fmt(lat['p50'], 3)} ms", f"{fmt(lat['p90'], 3)} ms",
                     f"{fmt(lat['p99'], 3)} ms", f"{fmt(lat['max'], 3)} ms",
                     f"A {fmt(_cpu_us(r, 'gw-1', z), 0)} + B {fmt(_cpu_us(r, 'gw-2', z), 0)} µs; agent "
                     f"{fmt(1e6 * r['agentCpuSeconds'] / max(1, r['requests'] + z['warmup']), 0)} µs", r["loadavgAtStart"]))
    lo, fw = res["rate"]["local"]["latencyMs"], res["rate"]["forwarded"]["latencyMs"]
    rows.append(("**added by the hop**", "", "", f"**{fmt(res['addedP50Ms'], 3)} ms**",
                 f"{fmt(fw['p90'] - lo['p90'], 3)} ms", f"**{fmt(res['addedP99Ms'], 3)} ms**", "", "", ""))
    out.append(Table(f"Forwarding latency (round {res['rateRound']} of {len(res['rateRounds'])})",
                     ("Target", "requests", "achieved rate", "p50", "p90", "p99", "max",
                      "CPU per request (warm-up incl.)", "load at start"), rows))
    if len(res["rateRounds"]) > 1:
        out.append(Table("Forwarding latency, every round",
                         ("Round", "local p50 / p99", "forwarded p50 / p99", "added p50", "load"), [
            (str(i + 1), f"{fmt(x['local']['p50'], 3)} / {fmt(x['local']['p99'], 3)} ms",
             f"{fmt(x['forwarded']['p50'], 3)} / {fmt(x['forwarded']['p99'], 3)} ms",
             f"{fmt(x['forwarded']['p50'] - x['local']['p50'], 3)} ms",
             f"{x['local']['loadavg']} / {x['forwarded']['loadavg']}") for i, x in enumerate(res["rateRounds"])]))
    rows = []
    for t in TARGETS:
        r = res["throughput"][t]
        rows.append((t, f"{r['requests']:,}", fmt(r["bodyMiBPerSecond"], 1), fmt(r["requestsPerSecond"], 1),
                     f"A {fmt(r['replicaCpuSeconds']['gw-1'], 1)} s, B {fmt(r['replicaCpuSeconds']['gw-2'], 1)} s, "
                     f"agent {fmt(r['agentCpuSeconds'], 1)} s", r["loadavgAtStart"]))
    rows.append(("**forwarded ÷ local**", "", f"**{fmt(100 * res['throughputRatio'], 0)}%**", "", "", ""))
    out.append(Table(f"1 MiB throughput (round {res['throughputRound']} of {len(res['throughputRounds'])})",
                     ("Target", "requests", "MiB/s (each way)", "requests/s",
                      f"CPU over the run ({fmt(z['big_warmup'] + z['big_duration'], 1)} s + set-up)", "load at start"),
                     rows))
    if len(res["throughputRounds"]) > 1:
        out.append(Table("1 MiB throughput, every round", ("Round", "local MiB/s", "forwarded MiB/s", "forwarded ÷ local",
                                                           "load"), [
            (str(i + 1), fmt(x["local"]["MiBps"], 1), fmt(x["forwarded"]["MiBps"], 1),
             f"{fmt(100 * x['forwarded']['MiBps'] / x['local']['MiBps'], 0)}%",
             f"{x['local']['loadavg']} / {x['forwarded']['loadavg']}") for i, x in enumerate(res["throughputRounds"])]))
    out.append(Table("Cut link (SIGSTOP of the replica serving a forwarded POST)", ("Round", "502 after", "load"),
                     [(str(i + 1), f"{fmt(x['seconds'], 3)} s", x["loadavg"]) for i, x in enumerate(res["cut"])]))
    dropped = res.get("droppedAfterSeconds")
    out.append(Table("Status-writer failover (kill -9 of the writer)",
                     ("Lease", "B drops A after", "B writes status after", "load at kill"),
                     [(f"{lease:g} s", f"{fmt(dropped, 2)} s" if dropped is not None else "?",
                       f"**{fmt(res['failoverSeconds'], 2)} s**", res["failoverLoadavg"])]))
    out.append(Table("Agents re-homed (SIGTERM of A)",
                     ("Variant", "Agents", "on A / on B before", "first on B after", "all on B after",
                      "A drained after", "agents/s (A's agents ÷ all on B after)", "connects / disconnects at B",
                      "rebalancer GOAWAYs at B", "load before"),
                     [(f"{r['variant']}" + (f" (`{' '.join(r['flags'])}`)" if r.get("flags") else ""),
                       f"{r['agents']:,}", f"{r['onA']} / {r['onB']}", f"{fmt(r['firstSeconds'], 2)} s",
                       f"**{fmt(r['allSeconds'], 2)} s**",
                       f"{fmt(r['drainedAtSeconds'], 2)} s" if r.get("drainedAtSeconds") is not None else "?",
                       f"**{fmt(r['agentsPerSecond'], 0)}**", f"{r['connectsAtB']} / {r['disconnectsAtB']}",
                       str(r["rebalancerShedAtB"]), r["loadavg"]) for r in res["rehomeVariants"]]))
    return out
