"""f. Micro-benchmarks of the tunnel's per-frame work, in-process (bench-micro, Google Benchmark; see
bench/micro.cpp): the gateway's parse and decode of an agent's response frame, base64 decoding, the
request frame it sends, and the agent simulator's work per request, at 1 KiB and 1 MiB bodies."""
import json
import os
import subprocess

from harness import ModeFailed, log, pin, shown
from report import Table, fmt, setup

NAME = "micro"
TITLE = "f. Micro-benchmarks: the tunnel's per-frame work"
SIZES = {
    "full": dict(min_time=0.5, repetitions=5),
    "tiny": dict(min_time=0.01, repetitions=1),
}
CPU = 1  # pinned like the other load generators, away from CPU 0
WHAT = {
    "agent_response": "gateway: agent response frame → reply (classify_agent_frame + decode_tunnel_response)",
    "classify": "gateway: classify_agent_frame alone",
    "base64_decode": "gateway: base64_decode of the body (bytes: the base64 text)",
    "encode_request": "gateway: encode_tunnel_request (caller's request → frame)",
    "sim_responder": "cluster-agent-sim: parse the request frame, respond(), serialize the reply",
}


def _unit(u):
    return "µs" if u == "us" else u


def _size(n):
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def run(env):
    z = env.sizes[NAME]
    binary = env.binary("bench-micro")
    if not os.path.exists(binary):
        raise ModeFailed("bench-micro was not built: libbenchmark-dev is missing (scripts/bootstrap installs it)")
    os.makedirs(env.path(NAME), exist_ok=True)
    out = env.path(NAME, "benchmark.json")
    cmd = [binary, f"--benchmark_min_time={z['min_time']}", f"--benchmark_repetitions={z['repetitions']}",
           f"--benchmark_out={out}", "--benchmark_out_format=json"]
    if z["repetitions"] > 1:
        cmd.append("--benchmark_report_aggregates_only=true")
    log(f"micro: bench-micro, {z['repetitions']} repetition(s) of at least {z['min_time']} s each (pinned to CPU {CPU})")
    with open(env.path(NAME, "bench-micro.log"), "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=pin(CPU), timeout=600)
    if r.returncode != 0:
        raise ModeFailed(f"bench-micro exited with {r.returncode}; see {env.path(NAME, 'bench-micro.log')}")
    with open(out) as f:
        data = json.load(f)
    ctx = data.get("context", {})
    res = {"command": shown(cmd), "cpu": CPU if pin(CPU) else None,
           "context": {k: ctx.get(k) for k in ("num_cpus", "mhz_per_cpu", "cpu_scaling_enabled", "library_build_type",
                                               "load_avg")},
           "benchmarks": {}}
    cv = {}
    for b in data.get("benchmarks", []):
        if b.get("error_occurred"):
            raise ModeFailed(f"bench-micro {b.get('name')}: {b.get('error_message')}")
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "cv":
                cv[name] = b["cpu_time"]  # a ratio here, not a time
            if b.get("aggregate_name") != "median":
                continue
        family, _, arg = name.partition("/")
        res["benchmarks"][name] = {
            "family": family, "bodyBytes": int(arg or 0), "frameBytes": b.get("frameBytes"),
            "cpuTime": b["cpu_time"], "realTime": b["real_time"], "timeUnit": b["time_unit"],
            "bytesPerSecond": b.get("bytes_per_second"), "iterations": b.get("iterations"),
            "statistic": "median of repetitions" if b.get("run_type") == "aggregate" else "one run",
        }
    for name, v in cv.items():
        if name in res["benchmarks"]:
            res["benchmarks"][name]["cpuTimeCv"] = v
    if set(b["family"] for b in res["benchmarks"].values()) != set(WHAT):
        raise ModeFailed(f"bench-micro reported {sorted(res['benchmarks'])}, expected every one of {sorted(WHAT)}")
    a = res["benchmarks"]
    log("micro: " + "; ".join(f"{n} {fmt(v['cpuTime'], 1)} {_unit(v['timeUnit'])}" for n, v in a.items()
                              if v["family"] == "agent_response"))
    return res


def summary(res, z):
    rows = []
    for name, b in res["benchmarks"].items():
        if b["family"] != "agent_response":
            continue
        rows.append((f"f. Agent response frame, {_size(b['bodyBytes'])} body (in-process)",
                     f"classify_agent_frame + decode_tunnel_response of a {b['frameBytes']:,.0f}-byte frame",
                     f"{fmt(b['cpuTime'], 2)} {_unit(b['timeUnit'])} CPU "
                     f"({fmt((b['bytesPerSecond'] or 0) / (1 << 20), 0)} MiB/s)", "—", "—"))
    return rows


def tables(res, z):
    ctx = res["context"]
    out = [setup("Setup", [
        ("Command", f"`{res['command']}`" + (f", pinned to CPU {res['cpu']}" if res["cpu"] is not None else "")),
        ("Statistic", f"{z['repetitions']} repetition(s) of at least {z['min_time']} s; "
                      + ("the median is shown, spread = coefficient of variation of the CPU time"
                         if z["repetitions"] > 1 else "one run each, no spread")),
        ("Google Benchmark context", f"{ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz, CPU scaling "
                                     f"{'on' if ctx.get('cpu_scaling_enabled') else 'off'}, library built as "
                                     f"{ctx.get('library_build_type')} (the library itself; the code measured is "
                                     "the CMake build type of the run)"),
        ("Bodies", "the JSON document bench-tunnel-load sends (configmap with a filler string); frame bytes are the "
                   "whole text frame, throughput is frame bytes per CPU second"),
    ])]
    rows = []
    for name, b in res["benchmarks"].items():
        rows.append((f"`{name}`", WHAT[b["family"]], _size(b["bodyBytes"]), f"{b['frameBytes']:,.0f}",
                     f"**{fmt(b['cpuTime'], 2)} {_unit(b['timeUnit'])}**", f"{fmt(b['realTime'], 2)} {_unit(b['timeUnit'])}",
                     fmt((b["bytesPerSecond"] or 0) / (1 << 20), 0),
                     f"{fmt(100 * b['cpuTimeCv'], 1)}%" if "cpuTimeCv" in b else "—"))
    out.append(Table("Per frame", ("Benchmark", "What", "body", "frame bytes", "CPU time", "wall time",
                                   "MiB/s (CPU)", "spread"), rows))
    return out
