"""a. Full TLS handshakes with client certificates per gateway CPU-second, against the crypto bound from
`openssl speed`, against `openssl s_server` under the same load generator (bench-handshake-load), and side
by side with the Go reference peer (bench/peer/, upstream's shape; issue 18) in two shapes: the same
connect/upgrade/close loop, and N agents with their own certificates connecting over P planes and staying
connected (cluster-agent-sim), each server pinned to CPU 0 and the load to CPU 1."""
import os
import re
import subprocess
import time

from harness import (Gateway, GoPeer, ModeFailed, Proc, count_lines, free_port, go_peer_missing, log, perf_start,
                     perf_stop, pin, run_json, shown, start_agents, wait_port)
from report import Table, fmt, setup

NAME = "handshake"
TITLE = "a. Handshakes"
SIZES = {
    "full": dict(speed_seconds=2, concurrency=32, warmup=1.0, duration=10.0, count=0, certs=4,
                 held_agents=3000, held_planes=1000, held_rate=1000, held_timeout=180.0),
    "tiny": dict(speed_seconds=1, concurrency=4, warmup=0.0, duration=0.0, count=20, certs=2,
                 held_agents=20, held_planes=10, held_rate=0, held_timeout=60.0),
}
GO_GOAL = 1.5  # gateway ÷ Go reference, handshakes per server CPU-second (issue 18)
# CG_BENCH_HELD=<agents>x<planes>[@rate] (e.g. 3000x1, all on one plane): the held side-by-side shape of this run.
# A rate may follow: 300x100@30 (agents started per second; 0 = all at once), for runs under callgrind.
if os.environ.get("CG_BENCH_HELD"):
    _shape, _, _r = os.environ["CG_BENCH_HELD"].partition("@")
    _a, _, _p = _shape.partition("x")
    for _z in SIZES.values():
        _z.update(held_agents=int(_a), held_planes=int(_p or 1))
        if _r:
            _z.update(held_rate=int(_r))
KINDS = (("ecdsa", "ec", "ECDSA P-256"), ("rsa", "rsa", "RSA-2048"))
# CG_BENCH_HELD_ONLY=1: only the held side-by-side shape (and openssl speed for its bound); no loop, no s_server.
HELD_ONLY = os.environ.get("CG_BENCH_HELD_ONLY", "") not in ("", "0")
GOAL = 0.6  # of the crypto bound


def openssl_speed(seconds):
    cmd = ["openssl", "speed", "-seconds", str(seconds), "ecdsap256", "ecdhp256", "ecdhx25519", "rsa2048"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin(0), timeout=300)
    out = r.stdout.decode()
    res = {"command": " ".join(cmd)}
    m = re.search(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out, re.M)
    if m:
        res["rsa2048_sign"], res["rsa2048_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out)
    if m:
        res["ecdsap256_sign"], res["ecdsap256_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"256 bits ecdh \(nistp256\)\s+\S+s\s+([\d.]+)", out)
    if m:
        res["ecdhp256"] = float(m.group(1))
    m = re.search(r"253 bits ecdh \(X25519\)\s+\S+s\s+([\d.]+)", out)
    if m:
        res["ecdhx25519"] = float(m.group(1))
    missing = [k for k in ("rsa2048_sign", "rsa2048_verify", "ecdsap256_sign", "ecdsap256_verify", "ecdhp256",
                           "ecdhx25519") if k not in res]
    if missing:
        raise ModeFailed(f"could not parse `openssl speed` output for {missing}")
    return res


def crypto_bound(speed, agent_kind, group):
    """Handshakes per second per core if the gateway did nothing but the public-key operations of one
    full handshake: its own signature (ECDSA P-256), one key exchange, the verification of the agent's
    CertificateVerify and of the agent certificate by the CR's CA (same key type as the agent)."""
    kx = speed["ecdhx25519"] if group.upper() == "X25519" else speed["ecdhp256"]
    verify = speed["ecdsap256_verify"] if agent_kind == "ecdsa" else speed["rsa2048_verify"]
    t = 1 / speed["ecdsap256_sign"] + 1 / kx + 1 / verify + 1 / verify
    return 1 / t, {"serverSignUs": 1e6 / speed["ecdsap256_sign"], "keyExchangeUs": 1e6 / kx,
                   "clientVerifyUs": 1e6 / verify, "chainVerifyUs": 1e6 / verify, "totalUs": t * 1e6}


def _load_cmd(env, z, short, port, pid, extra):
    cmd = [env.binary("bench-handshake-load"), *extra, "--port", str(port), "--concurrency", str(z["concurrency"]),
           "--gateway-pid", str(pid)]
    for i in range(z["certs"]):
        cert, key = env.agent_cert(short, i)
        cmd += ["--cert", cert, "--key", key]
    cmd += ["--count", str(z["count"])] if z["count"] else ["--warmup", str(z["warmup"]), "--duration", str(z["duration"])]
    return cmd


def _check(what, r):
    if r["handshakes"] <= 0 or r["errors"] > max(1, 0.01 * r["handshakes"]):
        raise ModeFailed(f"{what}: {r['handshakes']} handshakes, {r['errors']} errors: {r['errorKinds']}")


def run(env):
    z = env.sizes[NAME]
    # One CR per agent key type, each pinning its own CA.
    planes = env.write_planes(NAME, [("ClusterDataPlane", f"hs-{kind}", f"hs-{kind}", env.agent_ca(short))
                                     for kind, short, _ in KINDS])
    log("handshake: openssl speed (crypto reference, pinned to CPU 0)")
    speed = openssl_speed(z["speed_seconds"])
    if HELD_ONLY:
        log("handshake: CG_BENCH_HELD_ONLY: the held shape only")
        return {"speed": speed, "kinds": {}, "heldOnly": True, "gatewayArgs": "--io-threads 1", "gatewayCpu": 0,
                "held": run_held(env, z, speed)}
    gw = Gateway(env, NAME, planes, extra=["--io-threads", "1"], cpu=0, expect_crs=3)
    res = {"speed": speed, "gatewayArgs": "--io-threads 1", "gatewayCpu": 0, "kinds": {}}
    try:
        for kind, short, _ in KINDS:
            cmd = _load_cmd(env, z, short, gw.agent_port, gw.pid, ["--plane-id", f"hs-{kind}"])
            log(f"handshake: {kind} agents, {z['concurrency']} concurrent clients (loader pinned to CPU 1)")
            h = perf_start(env, gw.pid, f"handshake-{kind}")
            r = run_json(cmd, env.path(NAME, f"load-{kind}.log"), cpu=1)
            perf_stop(env, h)
            _check(f"handshake {kind}", r)
            if r["sessionsResumed"]:
                raise ModeFailed(f"handshake {kind}: {r['sessionsResumed']} sessions were resumed (not full handshakes)")
            bound, parts = crypto_bound(speed, kind, r["tls"].get("group", ""))
            r.update(boundPerCore=bound, boundParts=parts, ratio=r["handshakesPerGatewayCpuSecond"] / bound,
                     command=shown(cmd))
            res["kinds"][kind] = r
            log(f"handshake: {kind}: {r['handshakesPerSecond']:.0f}/s, {r['handshakesPerGatewayCpuSecond']:.0f} per "
                f"gateway CPU-second = {100 * r['ratio']:.1f}% of the crypto bound {bound:.0f}/s")
    finally:
        gw.stop()
    # Reference: OpenSSL's own server (same library, keys, client-certificate verification against the same
    # CA; TLS only) under the same load generator.
    for kind, short, _ in KINDS:
        port = free_port()
        ss = Proc(f"s_server-{kind}", ["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                       "-cert", os.path.join(env.pki, "server.crt"),
                                       "-key", os.path.join(env.pki, "server.key"),
                                       "-Verify", "1", "-CAfile", env.agent_ca(short), "-quiet"], os.devnull, cpu=0)
        try:
            wait_port(port, ss)
            cmd = _load_cmd(env, z, short, port, ss.pid, ["--tls-only"])
            log(f"handshake: reference `openssl s_server -Verify 1` with {kind} agents (TLS only)")
            r = run_json(cmd, env.path(NAME, f"s_server-{kind}.log"), cpu=1)
            _check(f"s_server {kind}", r)
            g = res["kinds"][kind]
            r["ratio"] = r["handshakesPerGatewayCpuSecond"] / g["boundPerCore"]
            g["reference"] = r
            g["vsReference"] = g["handshakesPerGatewayCpuSecond"] / r["handshakesPerGatewayCpuSecond"]
            log(f"handshake: s_server {kind}: {r['handshakesPerGatewayCpuSecond']:.0f} per CPU-second = "
                f"{100 * r['ratio']:.1f}% of the bound; the gateway does {100 * g['vsReference']:.0f}% of that")
        finally:
            ss.stop()
    why = go_peer_missing(env)
    if why:
        log(f"handshake: the Go reference is skipped: {why}")
        res["goPeerSkipped"] = why
        return res
    # The Go reference under the same loop (same planes, certificates, load generator and pinning).
    peer = GoPeer(env, NAME, planes, cpu=0)
    try:
        for kind, short, _ in KINDS:
            cmd = _load_cmd(env, z, short, peer.agent_port, peer.pid, ["--plane-id", f"hs-{kind}"])
            log(f"handshake: Go reference peer with {kind} agents (same loop)")
            r = run_json(cmd, env.path(NAME, f"go-peer-{kind}.log"), cpu=1)
            _check(f"go peer {kind}", r)
            g = res["kinds"][kind]
            r["ratio"] = r["handshakesPerGatewayCpuSecond"] / g["boundPerCore"]
            g["goPeer"] = r
            a, b = g["handshakesPerGatewayCpuSecond"], r["handshakesPerGatewayCpuSecond"]
            g["vsGo"] = a / b if a > 0 and b > 0 else None  # None: CPU below one clock tick (tiny size)
            log(f"handshake: Go peer {kind}: {b:.0f} per CPU-second; gateway ÷ Go = "
                + (f"{g['vsGo']:.2f}" if g["vsGo"] else "—"))
    finally:
        peer.stop()
    res["held"] = run_held(env, z, speed)
    return res


def _held_once(env, z, which, planes):
    """N agents (own certificates) over P planes connect once and stay; the server's CPU from the start
    of the agents until all N are registered."""
    n, p = z["held_agents"], z["held_planes"]
    name = f"{NAME}-held"
    if which == "gateway":
        srv = Gateway(env, name, planes, extra=["--io-threads", "1"], cpu=0, expect_crs=p + 1)
    else:
        srv = GoPeer(env, name, planes, cpu=0)
    sim = None
    try:
        # The server's own CPU with nothing connected (timers, the status writer), for the record.
        b0, tb = srv.cpu_seconds(), time.time()
        time.sleep(2.0)
        baseline = (srv.cpu_seconds() - b0) / (time.time() - tb)
        c0, t0 = srv.cpu_seconds(), time.time()
        rss0 = srv.rss_kib()
        log(f"handshake: {n:,} agents over {p:,} planes connect to the {which} and stay "
            f"({'at ' + str(z['held_rate']) + '/s' if z['held_rate'] else 'all at once'}; agents pinned to CPU 1)")
        h = perf_start(env, srv.pid, f"held-{which}")
        sim = start_agents(env, srv, f"{name}:sim-{which}", n, "hsp", spread=p, rate=z["held_rate"],
                           source_ips=env.source_ips(2), cpu=1, log_level="info",
                           extra=["--client-ca-cert", env.agent_ca("ec"),
                                  "--client-ca-key", env.agent_ca("ec")[:-len(".crt")] + ".key"])

        # Completion is read from the simulator's log (one line per upgraded agent), not from the server's
        # /metrics: no scrape runs on the measured server inside the window.
        def all_in():
            if not sim.alive():
                raise ModeFailed(f"agent simulator exited; see {sim.logfile}")
            return count_lines(sim.logfile, '"connected to control plane"') >= n
        srv.wait(all_in, z["held_timeout"], f"{n} agents connected", interval=0.1)
        c1, t1 = srv.cpu_seconds(), time.time()
        perf_stop(env, h)
        got = srv.sessions(timeout=10.0)
        if got < n:
            raise ModeFailed(f"{which}: the agents report {n} connections but the server counts {got} sessions")
        r = {"server": which, "agents": n, "planes": p, "cpuSeconds": c1 - c0, "wallSeconds": t1 - t0,
             "perCpuSecond": n / (c1 - c0) if c1 > c0 else 0.0, "rssKiB": srv.rss_kib(), "rss0KiB": rss0,
             "idleCpuPercent": 100 * baseline,
             "connectionFailures": count_lines(sim.logfile, '"connection failed"'), "command": shown(sim.cmd)}
        log(f"handshake: {which}: {n:,} sessions in {r['wallSeconds']:.1f} s wall, {r['cpuSeconds']:.2f} s CPU = "
            f"{r['perCpuSecond']:.0f} handshakes+upgrades per CPU-second ({r['connectionFailures']} failed attempts)")
        return r
    finally:
        if sim:
            sim.stop()
        srv.stop()


def run_held(env, z, speed):
    p = z["held_planes"]
    planes = env.write_planes(f"{NAME}-held", [("ClusterDataPlane", f"hsp-{i}", f"hsp-{i}", env.agent_ca("ec"))
                                              for i in range(p)])
    res = {"agents": z["held_agents"], "planes": p, "rate": z["held_rate"]}
    res["gateway"] = _held_once(env, z, "gateway", planes)
    res["go"] = _held_once(env, z, "go", planes)
    res["bound"], _ = crypto_bound(speed, "ecdsa", "X25519")
    # At tiny size the servers' CPU can stay below one clock tick (0 s): no ratio then.
    g, go = res["gateway"]["perCpuSecond"], res["go"]["perCpuSecond"]
    res["vsGo"] = g / go if g > 0 and go > 0 else None
    return res


def summary(res, z):
    rows = []
    for kind, _, label in KINDS:
        if kind not in res["kinds"]:
            continue  # CG_BENCH_HELD_ONLY
        r = res["kinds"][kind]
        ref = r.get("reference")
        rows.append((f"a. Handshakes, {label} agents",
                     f"{fmt(r['handshakesPerGatewayCpuSecond'], 0)}/s per gateway core "
                     f"({fmt(r['handshakesPerSecond'], 0)}/s at {fmt(100 * r['gatewayCpuUtilization'], 0)}% of a core); "
                     f"crypto bound {fmt(r['boundPerCore'], 0)}/s"
                     + (f"; openssl s_server {fmt(ref['handshakesPerGatewayCpuSecond'], 0)}/s per core "
                        f"({fmt(100 * ref['ratio'], 1)}% of bound)" if ref else ""),
                     f"{fmt(100 * r['ratio'], 1)}% of bound", f"≥ {fmt(100 * GOAL, 0)}%",
                     "met" if r["ratio"] >= GOAL else f"missed ({fmt(100 * r['ratio'] / GOAL, 0)}% of goal)"))
        if "goPeer" in r:
            rows.append((f"a. Handshakes ÷ Go reference, {label} agents, connect/upgrade/close loop",
                         f"gateway {fmt(r['handshakesPerGatewayCpuSecond'], 0)}, Go {fmt(r['goPeer']['handshakesPerGatewayCpuSecond'], 0)} "
                         "per server CPU-second", f"{fmt(r['vsGo'], 2)}×" if r["vsGo"] else "—", f"≥ {fmt(GO_GOAL, 1)}×",
                         _verdict(r["vsGo"]) if r["vsGo"] else "not measured"))
    h = res.get("held")
    if h:
        g, go = h["gateway"], h["go"]
        rows.append((f"a. Handshakes+upgrades per server CPU-second, {h['agents']:,} agents (own certificates) over "
                     f"{h['planes']:,} planes, staying connected",
                     f"gateway {fmt(g['perCpuSecond'], 0)} ({fmt(g['perCpuSecond'] / h['bound'] * 100, 1)}% of the crypto "
                     f"bound {fmt(h['bound'], 0)}), Go {fmt(go['perCpuSecond'], 0)} "
                     f"({fmt(go['perCpuSecond'] / h['bound'] * 100, 1)}%)",
                     f"{fmt(h['vsGo'], 2)}× Go" if h["vsGo"] else "— (below one CPU tick)", f"≥ {fmt(GO_GOAL, 1)}×",
                     _verdict(h["vsGo"]) if h["vsGo"] else "not measured"))
    elif res.get("goPeerSkipped"):
        rows.append(("a. Handshakes ÷ Go reference", f"skipped: {res['goPeerSkipped']}", "—", f"≥ {fmt(GO_GOAL, 1)}×",
                     "not measured"))
    return rows


def _verdict(ratio):
    return "met" if ratio >= GO_GOAL else f"missed ({fmt(100 * ratio / GO_GOAL, 0)}% of goal)"


def tables(res, z):
    sp = res["speed"]
    out = [setup("Setup", [
        ("Gateway", f"`{res['gatewayArgs']}`, pinned to CPU {res['gatewayCpu']}; one ClusterDataPlane CR per agent "
                    "key type, each pinning that type's agent CA"),
        ("Load generator", f"bench-handshake-load pinned to CPU 1: {z['concurrency']} concurrent clients, "
                           f"{z['certs']} agent certificates per key type round-robin, "
                           + (f"{z['count']} handshakes" if z["count"] else
                              f"{z['warmup']} s warm-up, {z['duration']} s measured")),
        ("Crypto bound", f"`{sp['command']}` pinned to CPU 0; "
                         "1 / (1/sign_P256 + 1/kx_group + 1/verify_agent + 1/verify_CA)"),
        ("Reference", "`openssl s_server -Verify 1 -CAfile <agent CA> -quiet` pinned to CPU 0, "
                      "same load generator with `--tls-only`"),
    ] + [(f"Command ({kind})", f"`{res['kinds'][kind]['command']}`") for kind, _, _ in KINDS if kind in res["kinds"]])]
    out.append(Table("openssl speed (ops/s, one core)", ("Operation", "ops/s"), [
        (label, fmt(sp[k], 1)) for k, label in (
            ("ecdsap256_sign", "ECDSA P-256 sign"), ("ecdsap256_verify", "ECDSA P-256 verify"),
            ("ecdhp256", "ECDH P-256"), ("ecdhx25519", "ECDH X25519"),
            ("rsa2048_sign", "RSA-2048 sign"), ("rsa2048_verify", "RSA-2048 verify"))]))
    rows = []
    for kind, _, label in KINDS:
        if kind not in res["kinds"]:
            continue  # CG_BENCH_HELD_ONLY
        r = res["kinds"][kind]
        bp = r["boundParts"]
        rows.append((label, f"{r['tls'].get('version')} {r['tls'].get('cipher')}", str(r["tls"].get("group")),
                     f"{fmt(bp['serverSignUs'], 1)} + {fmt(bp['keyExchangeUs'], 1)} + {fmt(bp['clientVerifyUs'], 1)} + "
                     f"{fmt(bp['chainVerifyUs'], 1)} = {fmt(bp['totalUs'], 1)}", fmt(r["boundPerCore"], 0),
                     f"{r['handshakes']:,}", f"{fmt(r['windowSeconds'], 2)} s",
                     f"{fmt(r['gatewayCpuSeconds'], 2)} s ({fmt(100 * r['gatewayCpuUtilization'], 0)}%)",
                     fmt(r["handshakesPerSecond"], 0),
                     f"{fmt(r['handshakesPerGatewayCpuSecond'], 0)} ({fmt(1e6 / r['handshakesPerGatewayCpuSecond'], 0)} µs each)",
                     f"**{fmt(100 * r['ratio'], 1)}%**",
                     f"{fmt(r['latencyMs']['p50'], 1)} / {fmt(r['latencyMs']['p99'], 1)} ms",
                     f"{fmt(r['loaderCpuSeconds'], 2)} s"))
    out.append(Table("Gateway", ("Agent key", "TLS", "group", "bound µs (sign + kx + verify + verify)", "bound/s",
                                 "handshakes", "window", "gateway CPU", "handshakes/s", "per gateway CPU-second",
                                 "of bound", "latency p50 / p99", "loader CPU"), rows))
    if all("reference" in res["kinds"].get(k, {}) for k, _, _ in KINDS):
        rows = []
        for kind, _, label in KINDS:
            g = res["kinds"][kind]
            r = g["reference"]
            rows.append((label, f"{r['handshakes']:,}", f"{fmt(r['windowSeconds'], 2)} s",
                         f"{fmt(r['gatewayCpuSeconds'], 2)} s ({fmt(100 * r['gatewayCpuUtilization'], 0)}%)",
                         f"{fmt(r['handshakesPerGatewayCpuSecond'], 0)} ({fmt(1e6 / r['handshakesPerGatewayCpuSecond'], 0)} µs each)",
                         f"{fmt(100 * r['ratio'], 1)}%", f"**{fmt(100 * g['vsReference'], 0)}%**"))
        out.append(Table("Reference: openssl s_server", ("Agent key", "handshakes", "window", "s_server CPU",
                                                         "per CPU-second", "of bound", "gateway ÷ s_server per CPU-second"),
                         rows))
    if all("goPeer" in res["kinds"].get(k, {}) for k, _, _ in KINDS):
        rows = []
        for kind, _, label in KINDS:
            g = res["kinds"][kind]
            r = g["goPeer"]
            rows.append((label, f"{r['handshakes']:,}", f"{fmt(r['windowSeconds'], 2)} s",
                         f"{fmt(r['gatewayCpuSeconds'], 2)} s ({fmt(100 * r['gatewayCpuUtilization'], 0)}%)",
                         f"{fmt(r['handshakesPerGatewayCpuSecond'], 0)}"
                         + (f" ({fmt(1e6 / r['handshakesPerGatewayCpuSecond'], 0)} µs each)"
                            if r['handshakesPerGatewayCpuSecond'] > 0 else ""),
                         f"{fmt(100 * r['ratio'], 1)}%", f"{fmt(r['latencyMs']['p50'], 1)} / {fmt(r['latencyMs']['p99'], 1)} ms",
                         f"**{fmt(g['vsGo'], 2)}×**" if g["vsGo"] else "—"))
        out.append(Table("Go reference peer (bench/peer), same loop and pinning", (
            "Agent key", "handshakes", "window", "Go peer CPU", "per CPU-second", "of bound", "latency p50 / p99",
            "gateway ÷ Go per CPU-second"), rows))
    h = res.get("held")
    if h:
        rows = []
        for r in (h["gateway"], h["go"]):
            rows.append(("cluster-gateway `--io-threads 1`" if r["server"] == "gateway" else "Go reference peer",
                         f"{r['agents']:,} over {r['planes']:,}", f"{fmt(r['wallSeconds'], 1)} s",
                         f"{fmt(r['cpuSeconds'], 2)} s ({fmt(r.get('idleCpuPercent', 0), 2)}% idle)",
                         f"**{fmt(r['perCpuSecond'], 0)}**",
                         f"{fmt(100 * r['perCpuSecond'] / h['bound'], 1)}%", f"{r['connectionFailures']:,}",
                         f"{fmt(r['rss0KiB'] / 1024, 1)} → {fmt(r['rssKiB'] / 1024, 1)} MiB"))
        rows.append(("gateway ÷ Go", "", "", "", f"**{fmt(h['vsGo'], 2)}×**" if h["vsGo"] else "—", "", "", ""))
        out.append(Table(
            f"Side by side: {h['agents']:,} agents with their own certificates over {h['planes']:,} planes connect "
            f"once and stay ({'at ' + str(h['rate']) + '/s' if h['rate'] else 'all at once'}; server pinned to CPU 0, "
            f"cluster-agent-sim to CPU 1; crypto bound {fmt(h['bound'], 0)}/s per core)",
            ("Server", "agents", "wall from simulator start (certificates made first) until all upgraded",
             "server CPU (its CPU with no agent)", "handshakes+upgrades per server CPU-second",
             "of the crypto bound", "failed attempts (retried)", "server RSS before → after"), rows))
        out.append(setup("Side-by-side commands", [("Agents (gateway run)", f"`{h['gateway']['command']}`"),
                                                   ("Agents (Go run)", f"`{h['go']['command']}`")]))
    elif res.get("goPeerSkipped"):
        out.append(setup("Go reference peer", [("Skipped", res["goPeerSkipped"])]))
    return out
