#!/usr/bin/python3
"""Renders the demo's live view: one row per plane CR from the gateway's status files, plus the
latest agent rejections from the gateway's JSON log."""
import argparse
import glob
import json
import os
import sys
import time

import yaml


def load_crs(planes_dir):
    crs = {}
    for path in sorted(glob.glob(os.path.join(planes_dir, "*.yaml"))):
        try:
            docs = list(yaml.safe_load_all(open(path)))
        except yaml.YAMLError:
            continue
        for d in docs:
            if not isinstance(d, dict) or d.get("kind") == "Secret" or "kind" not in d:
                continue
            meta = d.get("metadata") or {}
            kind = d["kind"]
            ns = "" if kind.startswith("Cluster") else meta.get("namespace", "default")
            name = meta.get("name", "?")
            spec = d.get("spec") or {}
            crs[(kind, ns, name)] = {
                "display": (meta.get("annotations") or {}).get("openchoreo.dev/display-name", name),
                "planeID": spec.get("planeID") or name,
            }
    return crs


def read_status(status_dir, kind, ns, name):
    try:
        with open(os.path.join(status_dir, f"{kind}.{ns or '_cluster'}.{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def rejections(log_path, limit):
    out = []
    try:
        lines = open(log_path, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("msg") == "agent connection rejected":
            out.append(ev)
    seen, uniq = set(), []
    for ev in reversed(out):
        key = (ev.get("planeType"), ev.get("planeID"), ev.get("certificateSubject"), ev.get("reason"))
        if key in seen:
            continue
        seen.add(key)
        uniq.append(ev)
    return list(reversed(uniq[:limit]))


def render(planes_dir, status_dir, log_path):
    rows = []
    for (kind, ns, name), cr in sorted(load_crs(planes_dir).items()):
        st = read_status(status_dir, kind, ns, name) or {}
        ac = st.get("agentConnection") or {}
        ready = next((c for c in st.get("conditions", []) if c.get("type") == "Ready"), {})
        rows.append([
            cr["display"], f"{kind} {ns + '/' if ns else ''}{name}", cr["planeID"],
            "yes" if ac.get("connected") else "no", str(ac.get("connectedAgents", 0)),
            ac.get("lastHeartbeatTime", "-"), f"{ready.get('status', '?')} ({ready.get('reason', '-')})",
        ])
    head = ["DISPLAY NAME", "CR", "PLANE ID", "CONNECTED", "AGENTS", "LAST HEARTBEAT", "READY"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [time.strftime("%H:%M:%S") + "  plane CRs (status written by the gateway)", fmt.format(*head)]
    lines += [fmt.format(*r) for r in rows]
    lines.append("")
    lines.append("recent agent rejections (from the gateway log):")
    rej = rejections(log_path, 6)
    if not rej:
        lines.append("  none")
    for ev in rej:
        lines.append(f"  {ev.get('status')} {ev.get('planeType', '?')}/{ev.get('planeID', '?')} "
                     f"subject={ev.get('certificateSubject', '-')}: {ev.get('reason')}")
        for per in ev.get("perCR", []):
            lines.append(f"      CR {per.get('cr')}: {per.get('reason')}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--planes", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--once", action="store_true")
    a = ap.parse_args()
    tty = sys.stdout.isatty()
    last_plain = 0.0
    while True:
        text = render(a.planes, a.status, a.log)
        if a.once:
            print(text)
            return
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n\n(Ctrl-C stops the demo)\n")
            sys.stdout.flush()
        elif time.monotonic() - last_plain >= 5:
            print(text + "\n", flush=True)
            last_plain = time.monotonic()
        time.sleep(a.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
