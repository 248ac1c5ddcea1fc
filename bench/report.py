"""The report of one bench/run: tables of figures, the method's parameters and the machine, as plain
text (stdout) and Markdown (--out). Tables only: what the figures mean and how they compare with earlier
runs is written by hand in docs/benchmarks.md. Each mode module supplies its own tables (summary rows and
detail tables built from its results); this module renders them and describes the machine and the code.
"""
import datetime
import os
import subprocess

from harness import ROOT, rel


class Table:
    """A titled table: `columns` (header strings) and `rows` (tuples of strings, one per column)."""

    def __init__(self, title, columns, rows):
        self.title = title
        self.columns = tuple(columns)
        self.rows = [tuple(r) for r in rows]


def setup(title, pairs):
    """A two-column table of the parameters a mode ran with (setting, value)."""
    return Table(title, ("Setting", "Value"), pairs)


SUMMARY_COLUMNS = ("Mode", "Measured", "Result", "Goal", "Verdict")


# ---- number formatting ---------------------------------------------------------------------------
def fmt(x, d=1):
    return f"{x:,.{d}f}"


def goal_text(value, goal, higher_is_better, unit=""):
    if higher_is_better:
        return ("met" if value >= goal else "missed") + f" ({fmt(value / goal * 100, 0)}% of goal)"
    if value <= goal:
        return "met"
    return f"missed by {fmt(value - goal, 3 if unit.strip() == 'ms' else 1)}{unit}"


# ---- the machine and the code --------------------------------------------------------------------
def _first_line(cmd):
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    except OSError:
        return "?"
    return out.splitlines()[0].strip() if out.strip() else "?"


def machine_info(build):
    """CPU, memory, kernel, compiler and build type, OpenSSL, limits, load and which code was measured
    (commit, tracked files changed outside bench/, when the gateway binary was linked)."""
    import resource
    info = {"nproc": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                info["memGiB"] = int(line.split()[1]) / 1024 / 1024
    info["kernel"] = os.uname().release
    cxx = "c++"
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_CXX_COMPILER:"):
                    cxx = line.split("=", 1)[1].strip()
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    info["buildType"] = line.split("=", 1)[1].strip()
    except OSError:
        pass
    info["compiler"] = _first_line([cxx, "--version"])
    info["openssl"] = _first_line(["openssl", "version"])
    info["fdLimit"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        info["portRange"] = f.read().split()
    info["loadavg"] = open("/proc/loadavg").read().split()[:3]

    def git(*a):
        # Only trailing space is dropped: porcelain lines start with a space (" M file").
        return subprocess.run(["git", "-C", ROOT, *a], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode().rstrip()
    info["commit"] = git("rev-parse", "--short", "HEAD") or "?"
    info["changedFiles"] = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
                            if not line[3:].startswith(("bench/", "docs/benchmarks.md"))]
    try:
        t = os.stat(os.path.join(build, "bin", "cluster-gateway")).st_mtime
        info["gatewayBuilt"] = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except OSError:
        pass
    return info


def run_table(run, info, modes_run, failed):
    ch = info.get("changedFiles", [])
    code = f"commit {info['commit']}" + (f", uncommitted changes in {', '.join(ch)}" if ch else
                                          ", no uncommitted changes outside bench/")
    if info.get("gatewayBuilt"):
        code += f"; gateway binary linked {info['gatewayBuilt']}"
    load = ", ".join(f"{m} {run['modes'][m].get('loadavgAtStart', '?')}" for m in modes_run if m in run["modes"])
    took = ", ".join(f"{m} {fmt(run['modes'][m]['seconds'], 1)} s" for m in modes_run
                     if "seconds" in run["modes"].get(m, {}))
    return setup("Run", [
        ("Command", f"`{run['command']}`"),
        ("Started", f"{run['started'][:19].replace('T', ' ')} UTC; took {fmt(run['elapsedSeconds'] / 60, 1)} min"
                    + (f" ({took})" if took else "")),
        ("Size", run["size"]),
        ("Modes", ", ".join(modes_run) + (f"; FAILED: {', '.join(failed)}" if failed else "")),
        ("Code", code),
        ("Machine", f"{info['nproc']} CPUs, {info.get('cpu', '?')}, {fmt(info.get('memGiB', 0), 1)} GiB, "
                    f"Linux {info['kernel']}"),
        ("Build", f"{info['compiler']}, CMAKE_BUILD_TYPE={info.get('buildType', '?')}, {info['openssl']}"),
        ("Limits", f"open files {info['fdLimit'][0]} (hard {info['fdLimit'][1]}), "
                   f"ephemeral ports {info['portRange'][0]}-{info['portRange'][1]}"),
        ("Load average", f"at start {' '.join(info['loadavg'])}, at end {' '.join(info.get('loadavgEnd', ['?']))}; "
                         f"1-minute value when each mode started: {load}"),
    ])


# ---- rendering -----------------------------------------------------------------------------------
def text_table(t):
    w = [max(len(h), *(len(r[i]) for r in t.rows)) if t.rows else len(h) for i, h in enumerate(t.columns)]
    head = "  ".join(h.ljust(w[i]) for i, h in enumerate(t.columns)).rstrip()
    out = [t.title, head, "-" * len(head)] if t.title else [head, "-" * len(head)]
    out += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in t.rows]
    return "\n".join(out)


def markdown_table(t, level="###"):
    out = [f"{level} {t.title}", ""] if t.title else []
    out.append("| " + " | ".join(t.columns) + " |")
    out.append("|" + "---|" * len(t.columns))
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in t.rows]
    out.append("")
    return "\n".join(out)


def summary_table(results, sizes, mode_modules):
    rows = []
    for m in mode_modules:
        if m.NAME in results:
            rows += m.summary(results[m.NAME], sizes[m.NAME])
    return Table("Summary", SUMMARY_COLUMNS, rows)


def print_text(run, info, results, sizes, mode_modules, failed):
    modes_run = [m.NAME for m in mode_modules if m.NAME in results]
    print(text_table(run_table(run, info, modes_run, failed)))
    print()
    print(text_table(summary_table(results, sizes, mode_modules)))


def markdown(run, info, results, sizes, mode_modules, failed, work):
    modes_run = [m.NAME for m in mode_modules if m.NAME in results]
    out = ["# cluster-gateway benchmark report", "",
           "Written by `bench/run` from the figures of this run only (the raw figures are in "
           f"`{rel(os.path.join(work, 'results.json'))}`, the logs of every process beside it). "
           "The method and what the figures mean: docs/benchmarks.md.", "",
           markdown_table(run_table(run, info, modes_run, failed), "##"),
           markdown_table(summary_table(results, sizes, mode_modules), "##")]
    for m in mode_modules:
        if m.NAME not in results:
            continue
        out += [f"## {m.TITLE}", ""]
        out += [markdown_table(t) for t in m.tables(results[m.NAME], sizes[m.NAME])]
    return "\n".join(out)
