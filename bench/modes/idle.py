"""b. Idle sessions: the gateway's RSS per authenticated idle agent session, and its CPU for heartbeats
at the largest count (cluster-agent-sim agents that only answer pings)."""
import os
import resource
import time

from harness import (Gateway, GoPeer, ModeFailed, count_lines, go_peer_missing, log, metric_sum, perf_start, perf_stop,
                     proc_cpu_seconds, start_agents)
from report import Table, fmt, goal_text, setup

NAME = "idle"
TITLE = "b. Idle sessions"
# CG_TINY_IDLE / CG_TINY_HBW: idle session count and heartbeat window of the tiny size, for by-hand profiling
# runs (the heap breakdown in docs/benchmarks.md); unset in scripts/test.
SIZES = {
    "full": dict(targets=[10000, 50000], planes=100, rate=300, settle=5.0, baseline=5.0, hb_interval="30s",
                 hb_window=60.0),
    "tiny": dict(targets=[int(os.environ.get("CG_TINY_IDLE", "50"))], planes=5, rate=0, settle=1.0, baseline=1.0,
                 hb_interval="1s", hb_window=float(os.environ.get("CG_TINY_HBW", "3"))),
}
AGENTS_PER_SIM = 10000
RSS_GOAL_KIB = 16
HB_GOAL_PERCENT = 5


def run(env):
    z = env.sizes[NAME]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # One gateway process holds one descriptor per session; keep room for its own files.
    cap = soft - 1000 if soft > 2000 else soft // 2
    targets = sorted(set(min(t, cap) for t in z["targets"]))
    planes = env.write_planes(NAME, [("ClusterDataPlane", f"idle-{i}", f"idle-{i}", env.agent_ca())
                                     for i in range(z["planes"])])
    res = measure(env, z, targets, planes, "gateway")
    res.update({"requested": z["targets"], "fdLimit": [soft, hard]})
    why = go_peer_missing(env)
    if why:
        log(f"idle: the Go reference is skipped: {why}")
        res["goPeerSkipped"] = why
    else:
        # The same agents against the Go reference peer (bench/peer), for the side-by-side ratio.
        res["go"] = measure(env, z, targets, planes, "go")
    return res


def measure(env, z, targets, planes, which):
    """Connects `targets` idle sessions in steps to the gateway or the Go peer; RSS at each step and the
    heartbeat CPU at the largest."""
    if which == "gateway":
        gw = Gateway(env, NAME, planes, extra=["--heartbeat-interval", z["hb_interval"]], expect_crs=z["planes"] + 1)
    else:
        gw = GoPeer(env, NAME, planes, extra=["--heartbeat-interval", z["hb_interval"]])
    res = {"server": which, "planes": z["planes"], "heartbeatInterval": z["hb_interval"], "points": []}
    sims = []
    try:
        time.sleep(z["baseline"] / 2)
        c0, t0 = gw.cpu_seconds(), time.time()
        time.sleep(z["baseline"] / 2)
        res["baselineCpuPercent"] = 100 * (gw.cpu_seconds() - c0) / (time.time() - t0)
        res["rss0KiB"] = gw.rss_kib()
        have = 0
        for n in targets:
            add = n - have
            while add > 0:
                k = min(add, AGENTS_PER_SIM)
                sims.append(start_agents(env, gw, f"{NAME}:sim-{which}-{len(sims)}", k, "idle", spread=z["planes"],
                                         rate=z["rate"], source_ips=env.source_ips(2)))
                add -= k
            log(f"idle: {which}: connecting up to {n} agents" + (f" at {z['rate']}/s" if z["rate"] else ""))
            t_start = time.time()
            timeout = 60 + (3 * (n - have) / z["rate"] if z["rate"] else 60)
            # /metrics with thousands of sessions is not free: poll it once a second then.
            gw.wait(lambda: gw.sessions() >= n, timeout, f"{n} idle sessions", interval=1.0 if n > 1000 else 0.1)
            connect_s = time.time() - t_start
            for s in sims:
                if not s.alive():
                    raise ModeFailed(f"agent simulator exited; see {s.logfile}")
            time.sleep(z["settle"])
            got = gw.sessions()
            rss = gw.rss_kib()
            failures = sum(count_lines(s.logfile, '"connection failed"') for s in sims)
            point = {"sessions": got, "rssKiB": rss, "perSessionKiB": (rss - res["rss0KiB"]) / got,
                     "connectSeconds": connect_s, "connectionFailuresSoFar": failures}
            if res["points"]:
                prev = res["points"][-1]
                point["marginalPerSessionKiB"] = (rss - prev["rssKiB"]) / max(1, got - prev["sessions"])
            res["points"].append(point)
            have = n
            log(f"idle: {which}: {got} sessions, RSS {rss / 1024:.1f} MiB, {point['perSessionKiB']:.1f} KiB per session")
        # Heartbeat CPU at the largest count: nothing else happens in the window (no scrapes).
        m0 = gw.metrics()
        pings0 = metric_sum(m0, "cluster_gateway_heartbeat_rtt_seconds_count")
        closed0 = metric_sum(m0, "cluster_gateway_agent_sessions_closed_total")
        h = perf_start(env, gw.pid, "idle-heartbeat" if which == "gateway" else "idle-heartbeat-go")
        c0, t0 = gw.cpu_seconds(), time.time()
        sc0 = sum(proc_cpu_seconds(s.pid) for s in sims)
        time.sleep(z["hb_window"])
        c1, t1 = gw.cpu_seconds(), time.time()
        sc1 = sum(proc_cpu_seconds(s.pid) for s in sims)
        perf_stop(env, h)
        m1 = gw.metrics()
        window = t1 - t0
        sessions = int(metric_sum(m1, "cluster_gateway_agent_sessions"))
        hb = {
            "sessions": sessions, "windowSeconds": window, "cpuPercent": 100 * (c1 - c0) / window,
            "agentSimCpuPercent": 100 * (sc1 - sc0) / window,
            "pongsPerSecond": (metric_sum(m1, "cluster_gateway_heartbeat_rtt_seconds_count") - pings0) / window,
            "sessionsClosed": metric_sum(m1, "cluster_gateway_agent_sessions_closed_total") - closed0,
            "rssKiB": gw.rss_kib(),
        }
        hb["netCpuPercent"] = hb["cpuPercent"] - res["baselineCpuPercent"]
        hb["extrapolated50kPercent"] = hb["cpuPercent"] * 50000 / max(1, sessions)
        res["heartbeat"] = hb
        if hb["pongsPerSecond"] <= 0:
            raise ModeFailed("idle: no heartbeat pongs were observed in the window")
        log(f"idle: {which}: heartbeat window {window:.0f}s: server CPU {hb['cpuPercent']:.2f}% of a core at {sessions} "
            f"sessions, {hb['pongsPerSecond']:.0f} pongs/s")
        res["reached"] = sessions
    finally:
        for s in sims:
            s.stop()
        gw.stop()
    return res


def _ratio(a, b, unit, em=""):
    """a ÷ b as text, "—" when either is not positive (tiny sizes: below a CPU tick or an RSS page)."""
    return f"{em}{fmt(a / b, 2)}{unit}{em}" if a > 0 and b > 0 else "—"


def summary(res, z):
    rows = []
    for pt in res["points"]:
        rows.append((f"b. Idle sessions: RSS per session at {pt['sessions']:,}",
                     f"RSS {fmt(pt['rssKiB'] / 1024, 1)} MiB (baseline {fmt(res['rss0KiB'] / 1024, 1)} MiB)",
                     f"{fmt(pt['perSessionKiB'], 1)} KiB", f"≤ {RSS_GOAL_KIB} KiB",
                     goal_text(pt["perSessionKiB"], RSS_GOAL_KIB, False, " KiB")))
    hb = res["heartbeat"]
    rows.append((f"b. Heartbeat CPU at {hb['sessions']:,} sessions (ping every {res['heartbeatInterval']})",
                 f"{fmt(hb['pongsPerSecond'], 0)} pongs/s over {fmt(hb['windowSeconds'], 0)} s; "
                 f"{fmt(hb['netCpuPercent'], 2)}% above the idle gateway's {fmt(res['baselineCpuPercent'], 2)}%",
                 f"{fmt(hb['cpuPercent'], 2)}% of a core", f"< {HB_GOAL_PERCENT}%",
                 "met" if hb["cpuPercent"] < HB_GOAL_PERCENT else f"missed by {fmt(hb['cpuPercent'] - HB_GOAL_PERCENT, 2)} points"))
    if hb["sessions"] < 50000:
        rows.append(("b. Heartbeat CPU at 50,000 (linear extrapolation)", f"from {hb['sessions']:,} sessions",
                     f"{fmt(hb['extrapolated50kPercent'], 2)}% of a core", f"< {HB_GOAL_PERCENT}%",
                     ("met" if hb["extrapolated50kPercent"] < HB_GOAL_PERCENT else "missed")
                     + " (extrapolated, not measured)"))
    go = res.get("go")
    if go:
        for pt, gp in zip(res["points"], go["points"]):
            rows.append((f"b. RSS per idle session ÷ Go reference at {pt['sessions']:,}",
                         f"gateway {fmt(pt['perSessionKiB'], 1)} KiB, Go {fmt(gp['perSessionKiB'], 1)} KiB "
                         f"at {gp['sessions']:,} sessions", _ratio(pt["perSessionKiB"], gp["perSessionKiB"], "× Go"),
                         "lower is better", "—"))
        ghb = go["heartbeat"]
        rows.append((f"b. Heartbeat CPU ÷ Go reference at {hb['sessions']:,}",
                     f"gateway {fmt(hb['cpuPercent'], 2)}%, Go {fmt(ghb['cpuPercent'], 2)}% of a core",
                     _ratio(hb["cpuPercent"], ghb["cpuPercent"], "× Go"),
                     "lower is better", "—"))
    elif res.get("goPeerSkipped"):
        rows.append(("b. Idle sessions ÷ Go reference", f"skipped: {res['goPeerSkipped']}", "—", "—", "not measured"))
    return rows


def tables(res, z):
    hb = res["heartbeat"]
    capped = res["reached"] < max(res["requested"])
    out = [setup("Setup", [
        ("Gateway", f"default `--io-threads`, `--heartbeat-interval {res['heartbeatInterval']}`, "
                    f"{res['planes']} ClusterDataPlane CRs"),
        ("Agents", f"`cluster-agent-sim --count N --plane-spread {res['planes']} --connect-rate {z['rate'] or 'unlimited'}`, "
                   f"at most {AGENTS_PER_SIM:,} agents per process, two 127.0.0.x source addresses each; ECDSA agents"),
        ("Requested session counts", ", ".join(f"{t:,}" for t in res["requested"])
         + (f" (capped at the open-files limit {res['fdLimit'][0]:,} minus 1,000; hard limit {res['fdLimit'][1]:,})"
            if capped else "")),
        ("RSS", f"VmRSS of the gateway, {fmt(z['settle'], 0)} s after the last session registered; baseline after "
                f"start-up with the CRs loaded and no session ({fmt(z['baseline'], 0)} s)"),
        ("Heartbeat window", f"{fmt(hb['windowSeconds'], 1)} s at the largest count, no scrapes inside it"),
    ])]
    rows = [("0 (baseline)", "—", "—", f"{fmt(res['rss0KiB'] / 1024, 1)} MiB", "—", "—")]
    for pt in res["points"]:
        rows.append((f"{pt['sessions']:,}", f"{fmt(pt['connectSeconds'], 1)} s", f"{pt.get('connectionFailuresSoFar', 0):,}",
                     f"{fmt(pt['rssKiB'] / 1024, 1)} MiB", f"{fmt(pt['perSessionKiB'], 2)} KiB",
                     f"{fmt(pt['marginalPerSessionKiB'], 2)} KiB" if "marginalPerSessionKiB" in pt else "—"))
    out.append(Table("Memory", ("Sessions", "time to connect", "failed attempts so far (retried)", "gateway RSS",
                                "RSS per session", "marginal per session"), rows))
    out.append(Table("Heartbeat CPU", ("Sessions", "window", "pongs/s", "sessions closed", "gateway CPU",
                                       "idle gateway CPU (no session)", "heartbeat share", "all simulated agents' CPU",
                                       "linear extrapolation to 50,000"),
                     [(f"{hb['sessions']:,}", f"{fmt(hb['windowSeconds'], 1)} s", fmt(hb["pongsPerSecond"], 0),
                       fmt(hb["sessionsClosed"], 0), f"**{fmt(hb['cpuPercent'], 2)}%**",
                       f"{fmt(res['baselineCpuPercent'], 2)}%", f"{fmt(hb['netCpuPercent'], 2)}%",
                       f"{fmt(hb['agentSimCpuPercent'], 2)}%", f"{fmt(hb['extrapolated50kPercent'], 2)}% (not measured)")]))
    go = res.get("go")
    if go:
        ghb = go["heartbeat"]
        rows = [("0 (baseline)", f"{fmt(res['rss0KiB'] / 1024, 1)} MiB", f"{fmt(go['rss0KiB'] / 1024, 1)} MiB", "—", "—",
                 "—")]
        for pt, gp in zip(res["points"], go["points"]):
            rows.append((f"{pt['sessions']:,} / {gp['sessions']:,}", f"{fmt(pt['rssKiB'] / 1024, 1)} MiB",
                         f"{fmt(gp['rssKiB'] / 1024, 1)} MiB", f"{fmt(pt['perSessionKiB'], 2)} KiB",
                         f"{fmt(gp['perSessionKiB'], 2)} KiB", _ratio(pt["perSessionKiB"], gp["perSessionKiB"], "×", "**")))
        rows.append((f"heartbeat CPU at {hb['sessions']:,} / {ghb['sessions']:,}", f"{fmt(hb['cpuPercent'], 2)}%",
                     f"{fmt(ghb['cpuPercent'], 2)}%", f"{fmt(hb['pongsPerSecond'], 0)} pongs/s",
                     f"{fmt(ghb['pongsPerSecond'], 0)} pongs/s",
                     _ratio(hb["cpuPercent"], ghb["cpuPercent"], "×", "**")))
        out.append(Table("Side by side with the Go reference peer (bench/peer; same agents, planes, heartbeat interval; "
                         "neither server pinned)", ("Sessions (gateway / Go)", "gateway RSS", "Go RSS",
                                                    "gateway per session", "Go per session", "gateway ÷ Go"), rows))
    elif res.get("goPeerSkipped"):
        out.append(setup("Go reference peer", [("Skipped", res["goPeerSkipped"])]))
    return out
