#!/usr/bin/python3
"""Renders the demo's live view: one row per plane CR from the gateway's status files, plus the
latest agent rejections from the gateway's JSON log.

With several replicas (--replica NAME=LOG, once per replica): per CR, which replica holds its
agents (each replica's "agent connected successfully" / "agent disconnected" log events), which
replica writes status ("this replica writes status now" / "... no longer writes status"), and the
rejections of every replica. --pick-remote NAME prints a CR none of whose agents is on replica NAME
but some are on another (for a request that enters NAME and is served by that other replica)."""
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


def log_events(log_path):
    try:
        lines = open(log_path, errors="replace").read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def rejections(log_path, limit, events=None):
    out = []
    for ev in log_events(log_path) if events is None else events:
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


def plane_type(kind):
    """ClusterWorkflowPlane -> workflowplane, DataPlane -> dataplane (the agents' planeType)."""
    k = kind[len("Cluster"):] if kind.startswith("Cluster") else kind
    return k.lower()


class Replica:
    """What one replica's log says: its ports, its live agent sessions (by connectionID), whether it
    writes status, whether it stopped."""

    def __init__(self, name, log_path):
        self.name, self.log_path = name, log_path
        self.events = log_events(log_path)
        self.started = {}
        self.sessions = {}  # connectionID -> connected event
        self.writes_status = False
        self.stopped = False
        for ev in self.events:
            msg = ev.get("msg")
            if msg == "cluster-gateway started":
                self.started = ev
            elif msg == "agent connected successfully":
                self.sessions[ev.get("connectionID") or id(ev)] = ev
            elif msg == "agent disconnected":
                self.sessions.pop(ev.get("connectionID"), None)
            elif msg == "this replica writes status now":
                self.writes_status = True
            elif msg == "this replica no longer writes status":
                self.writes_status = False
            elif msg == "stopped":
                self.stopped = True

    def agents_of(self, kind, ns, name):
        """This replica's live sessions authorized for the CR."""
        key = f"{ns}/{name}"
        return [s for s in self.sessions.values()
                if s.get("planeType") == plane_type(kind) and key in (s.get("validCRs") or [])]


def load_replicas(specs):
    out = []
    for spec in specs:
        name, _, path = spec.partition("=")
        out.append(Replica(name, path))
    return out


def render_replicas(planes_dir, status_dir, replicas):
    writers = [r.name for r in replicas if r.writes_status and not r.stopped]
    crs = load_crs(planes_dir)
    display = {(plane_type(kind), f"{ns}/{name}"): cr["display"] for (kind, ns, name), cr in crs.items()}
    rows = []
    for (kind, ns, name), cr in sorted(crs.items()):
        st = read_status(status_dir, kind, ns, name) or {}
        ac = st.get("agentConnection") or {}
        ready = next((c for c in st.get("conditions", []) if c.get("type") == "Ready"), {})
        held = [f"{r.name}:{len(r.agents_of(kind, ns, name))}" for r in replicas if r.agents_of(kind, ns, name)]
        rows.append([
            cr["display"], f"{kind} {ns + '/' if ns else ''}{name}", cr["planeID"],
            "yes" if ac.get("connected") else "no", str(ac.get("connectedAgents", 0)),
            " ".join(held) or "-", ac.get("lastHeartbeatTime", "-"),
            f"{ready.get('status', '?')} ({ready.get('reason', '-')})",
        ])
    head = ["DISPLAY NAME", "CR", "PLANE ID", "CONNECTED", "AGENTS", "AGENTS ON", "LAST HEARTBEAT", "READY"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    who = ", ".join(writers) if writers else "no replica at the moment"
    lines = [time.strftime("%H:%M:%S") + f"  plane CRs (status written by {who}; AGENTS is the sum over "
             f"{len(replicas)} replicas, AGENTS ON says which replica holds them)", fmt.format(*head)]
    lines += [fmt.format(*r) for r in rows]
    lines.append("")
    lines.append("replicas (from each replica's log):")
    for r in replicas:
        st = r.started
        ports = (f"agents :{st.get('agentPort', '?')}  internal :{st.get('internalPort', '?')}  "
                 f"mesh :{st.get('meshPort', '?')}") if st else "not started"
        held = {}
        for s in r.sessions.values():
            for c in s.get("validCRs") or []:
                label = display.get((s.get("planeType"), c), c)
                held[label] = held.get(label, 0) + 1
        agents = ", ".join(k + (f" x{n}" if n > 1 else "") for k, n in sorted(held.items())) or "none"
        state = "stopped" if r.stopped else ("writes status" if r.writes_status else "")
        lines.append(f"  {r.name:<5} {ports}  {len(r.sessions)} agent(s): {agents}" + (f"  [{state}]" if state else ""))
    lines.append("")
    lines.append("recent agent rejections (from the replicas' logs):")
    rej = rejections(None, 6, sorted((ev for r in replicas for ev in r.events), key=lambda e: e.get("time", "")))
    if not rej:
        lines.append("  none")
    for ev in rej:
        lines.append(f"  {ev.get('status')} {ev.get('planeType', '?')}/{ev.get('planeID', '?')} "
                     f"subject={ev.get('certificateSubject', '-')}: {ev.get('reason')}")
        for per in ev.get("perCR", []):
            lines.append(f"      CR {per.get('cr')}: {per.get('reason')}")
    return "\n".join(lines)


def pick_remote(planes_dir, replicas, entry):
    """A CR with agents on some replica other than `entry` and none on `entry`, workflow planes
    first: prints DISPLAY|PLANETYPE|PLANEID|NS-or-_cluster|NAME|HOLDERS. Exit 1 when there is none."""
    by_name = {r.name: r for r in replicas}
    if entry not in by_name:
        sys.exit(f"no replica {entry}")
    crs = sorted(load_crs(planes_dir).items(), key=lambda kv: (plane_type(kv[0][0]) != "workflowplane", kv[0]))
    for (kind, ns, name), cr in crs:
        if by_name[entry].agents_of(kind, ns, name):
            continue
        holders = [r.name for r in replicas if r.name != entry and r.agents_of(kind, ns, name)]
        if holders:
            print("|".join([cr["display"], plane_type(kind), cr["planeID"], ns or "_cluster", name, ", ".join(holders)]))
            return
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--planes", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--log", help="the gateway's log (one gateway)")
    ap.add_argument("--replica", action="append", default=[], metavar="NAME=LOG",
                    help="a replica and its log (several replicas; once per replica)")
    ap.add_argument("--pick-remote", metavar="NAME",
                    help="print a CR whose agents are on another replica than NAME only, and exit")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--once", action="store_true")
    a = ap.parse_args()
    if not a.log and not a.replica:
        ap.error("--log or --replica is required")
    if a.pick_remote:
        return pick_remote(a.planes, load_replicas(a.replica), a.pick_remote)
    tty = sys.stdout.isatty()
    last_plain = 0.0
    while True:
        if a.replica:
            text = render_replicas(a.planes, a.status, load_replicas(a.replica))
        else:
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
