"""e. Status write load: agents heartbeating every second over a few CRs; status writes per CR per minute
against at most one per --status-heartbeat-interval."""
import re
import time

from harness import Gateway, ModeFailed, log, metric_sum, start_agents
from report import Table, fmt, setup

NAME = "status"
TITLE = "e. Status write load"
SIZES = {
    "full": dict(agents=1000, planes=100, hb="1s", shb="5s", window=60.0, rate=300),
    "tiny": dict(agents=50, planes=5, hb="1s", shb="2s", window=10.0, rate=0),
}


def go_seconds(d):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", d)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def run(env):
    z = env.sizes[NAME]
    n, p = z["agents"], z["planes"]
    planes = env.write_planes(NAME, [("ClusterDataPlane", f"st-{i}", f"st-{i}", env.agent_ca()) for i in range(p)])
    gw = Gateway(env, NAME, planes, expect_crs=p + 1,
                 extra=["--heartbeat-interval", z["hb"], "--heartbeat-timeout", "30s",
                        "--status-heartbeat-interval", z["shb"]])
    shb = go_seconds(z["shb"])
    res = {"agents": n, "planes": p, "heartbeatInterval": z["hb"], "statusHeartbeatInterval": z["shb"]}
    sim = None
    try:
        sim = start_agents(env, gw, f"{NAME}:sim", n, "st", spread=p, rate=z["rate"], source_ips=env.source_ips(1))
        gw.wait(lambda: gw.sessions() >= n, 120, f"{n} sessions")
        time.sleep(2 * shb)  # connection transitions are written and behind us
        m0 = gw.metrics()
        w0, t0 = metric_sum(m0, "cluster_gateway_status_writes_total", result="ok"), time.time()
        pings0 = metric_sum(m0, "cluster_gateway_heartbeat_rtt_seconds_count")
        log(f"status: {n} agents heartbeating every {z['hb']} over {p} CRs; {z['window']:.0f}s window")
        time.sleep(z["window"])
        m1 = gw.metrics()
        w1, t1 = metric_sum(m1, "cluster_gateway_status_writes_total", result="ok"), time.time()
        window = t1 - t0
        writes = w1 - w0
        res.update({
            "windowSeconds": window, "writes": writes,
            "sessions": int(metric_sum(m1, "cluster_gateway_agent_sessions")),
            "pongsPerSecond": (metric_sum(m1, "cluster_gateway_heartbeat_rtt_seconds_count") - pings0) / window,
            "writesPerCrPerMinute": writes / p / window * 60,
            "goalPerCrPerMinute": 60 / shb,
            "writesPerCrPerInterval": writes / p / (window / shb),
            "writeErrors": metric_sum(m1, "cluster_gateway_status_writes_total", result="error"),
        })
        if res["sessions"] < n:
            raise ModeFailed(f"status: sessions dropped to {res['sessions']} during the window")
        log(f"status: {res['writesPerCrPerMinute']:.2f} writes per CR per minute "
            f"(at most {res['goalPerCrPerMinute']:.0f} allowed)")
    finally:
        if sim:
            sim.stop()
        gw.stop()
    return res


def summary(s, z):
    return [(f"e. Status writes, {s['agents']:,} agents / {s['planes']} CRs (heartbeat {s['heartbeatInterval']})",
             f"{fmt(s['writes'], 0)} writes in {fmt(s['windowSeconds'], 0)} s",
             f"{fmt(s['writesPerCrPerMinute'], 2)} per CR per minute",
             f"≤ {fmt(s['goalPerCrPerMinute'], 0)} (1 per {s['statusHeartbeatInterval']})",
             "met" if s["writesPerCrPerInterval"] <= 1.0 + 1e-9 else
             f"missed ({fmt(s['writesPerCrPerInterval'], 2)} per interval)")]


def tables(s, z):
    return [
        setup("Setup", [
            ("Gateway", f"`--heartbeat-interval {s['heartbeatInterval']} --heartbeat-timeout 30s "
                        f"--status-heartbeat-interval {s['statusHeartbeatInterval']}`"),
            ("Agents", f"{s['agents']:,} over {s['planes']} CRs ({s['agents'] // s['planes']} per CR), "
                       f"connect rate {z['rate'] or 'unlimited'}"),
            ("Window", f"`cluster_gateway_status_writes_total{{result=\"ok\"}}` before and after "
                       f"{fmt(s['windowSeconds'], 1)} s, starting two status-heartbeat intervals after the last session"),
        ]),
        Table("Writes", ("Agents", "CRs", "pongs/s", "writes in window", "per CR per minute",
                         "allowed per CR per minute", "per CR per interval", "write errors"),
              [(f"{s['agents']:,}", str(s["planes"]), fmt(s["pongsPerSecond"], 0), fmt(s["writes"], 0),
                f"**{fmt(s['writesPerCrPerMinute'], 2)}**", fmt(s["goalPerCrPerMinute"], 0),
                fmt(s["writesPerCrPerInterval"], 3), fmt(s["writeErrors"], 0))]),
    ]
