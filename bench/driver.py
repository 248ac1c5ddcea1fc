#!/usr/bin/env python3
"""Runs the cluster-gateway benchmark modes; called by bench/run (which builds and raises limits).

Every mode (bench/modes/) starts its own gateway, agents or load generators on loopback, measures, stops
everything it started and returns its figures; results.json keeps them, and bench/report.py renders the
tables (stdout and --out). Shared process, PKI and gateway helpers: bench/harness.py.
"""
import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import traceback

from harness import ROOT, Env, ModeFailed, log, make_pki, rel, stop_all
import modes
import report


def sizes_for(tiny, args):
    """{mode: size} for this run, with the by-hand overrides of the command line applied."""
    sizes = {m.NAME: dict(m.SIZES["tiny" if tiny else "full"]) for m in modes.ALL}
    if args.idle_targets:
        sizes["idle"]["targets"] = [int(x) for x in args.idle_targets.split(",") if x.strip()]
    if args.hb_window:
        sizes["idle"]["hb_window"] = args.hb_window
    return sizes


def write_report(args, data):
    """Prints the run and summary tables and writes every table to args.out."""
    report.print_text(data["run"], data["machine"], data["results"], data["sizes"], modes.ALL, data["failed"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report.markdown(data["run"], data["machine"], data["results"], data["sizes"], modes.ALL,
                                data["failed"], args.work))


def main():
    names = [m.NAME for m in modes.ALL]
    ap = argparse.ArgumentParser(description="cluster-gateway benchmarks (use bench/run)")
    ap.add_argument("--tiny", action="store_true", help="every mode once at tiny size (a smoke run)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work", default=None, help="work files (default: <build>/bench, with --tiny <build>/bench-tiny)")
    ap.add_argument("--out", default=None, help="Markdown report (default: <work>/report.md)")
    ap.add_argument("--modes", default=",".join(names), help=f"comma-separated, from {','.join(names)}")
    ap.add_argument("--perf", action="store_true", help="perf-record the gateway in the handshake, heartbeat and tunnel windows")
    ap.add_argument("--idle-targets", default=None,
                    help="comma-separated session counts for the idle mode (overrides the size's; for profiling)")
    ap.add_argument("--hb-window", type=float, default=None, help="heartbeat CPU window in seconds (idle mode)")
    ap.add_argument("--report-only", action="store_true",
                    help="Do not measure: render the tables again from <work>/results.json of a previous run")
    args = ap.parse_args()
    args.work = args.work or os.path.join(args.build, "bench-tiny" if args.tiny else "bench")
    args.out = args.out or os.path.join(args.work, "report.md")
    chosen = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in chosen:
        if m not in modes.BY_NAME:
            ap.error(f"unknown mode {m} (modes: {', '.join(names)})")
    os.makedirs(args.work, exist_ok=True)
    results_path = os.path.join(args.work, "results.json")

    if args.report_only:
        with open(results_path) as f:
            data = json.load(f)
        if "modes" not in data.get("run", {}):
            sys.exit(f"{rel(results_path)} was written by an older bench/driver.py; measure again")
        write_report(args, data)
        log(f"report re-rendered from {rel(results_path)} into {rel(args.out)}")
        return 0

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.time()
    info = report.machine_info(args.build)
    sizes = sizes_for(args.tiny, args)
    env = Env(args, sizes)
    log(f"{'tiny' if args.tiny else 'full'} run; work files in {args.work}")
    make_pki(env)
    results, failed, per_mode = {}, [], {}
    try:
        for m in chosen:
            load = open("/proc/loadavg").read().split()[0]
            t0 = time.time()
            try:
                results[m] = modes.BY_NAME[m].run(env)
            except ModeFailed as e:
                log(f"MODE FAILED: {m}: {e}")
                failed.append(m)
            except subprocess.TimeoutExpired as e:
                log(f"MODE FAILED: {m}: timeout: {e}")
                failed.append(m)
            except Exception:  # a bug or an unexpected condition: the mode did not run
                traceback.print_exc()
                log(f"MODE FAILED: {m}: unexpected error (traceback above)")
                failed.append(m)
            finally:
                stop_all()
            per_mode[m] = {"loadavgAtStart": load, "seconds": time.time() - t0}
    except KeyboardInterrupt:
        stop_all()
        log("interrupted")
        return 130
    info["loadavgEnd"] = open("/proc/loadavg").read().split()[:3]
    elapsed = time.time() - t_start
    data = {"run": {"command": os.environ.get("BENCH_COMMAND", "bench/run"), "started": started.isoformat(),
                    "elapsedSeconds": elapsed, "size": "tiny" if args.tiny else "full", "modes": per_mode},
            "machine": info, "sizes": sizes, "results": results, "failed": failed}
    with open(results_path, "w") as f:
        json.dump(data, f, indent=2)
    print()
    write_report(args, data)
    print()
    log(f"report written to {rel(args.out)}; raw results in {rel(results_path)}; {elapsed / 60:.1f} min")
    if failed:
        log(f"failed modes: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
