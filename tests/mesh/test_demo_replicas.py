"""`scripts/demo --replicas 3 --duration 10s --work DIR`, end to end (issue 15, "Demo"): three
gateway replicas behind the demo's round-robin balancer, with the example CRs and simulated agents.

Asserted from what the demo prints and from its work directory:
  * three replicas started (one "listening" line each; gw-1.log ... gw-3.log say "cluster-gateway
    started" with their replica id);
  * the agents are spread: at least two replicas hold agents (the view's per-replica lines and the
    logs' "agent connected successfully" events);
  * exactly one replica writes status (the view says so; one replica only ever logs "this replica
    writes status now"), and it wrote every CR's status file;
  * the printed request entered gw-1 and was served by another replica (HTTP 200,
    X-Cluster-Gateway-Entry-Pod != X-Cluster-Gateway-Served-By, matching the forwarding log line);
  * the demo stopped everything: every replica logged "stopped", the final state has every CR
    disconnected, and the demo's ports are free again.

It calls scripts/bootstrap and scripts/build (no-ops when everything is installed and built)."""
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import ctest_main  # noqa: E402

REPLICAS = 3


def demo_ports(base):
    """What scripts/demo --replicas uses from --base-port: the balancer, then per replica the agent,
    mesh, health and internal ports."""
    return [base] + [base + 10 * k + i for k in range(4) for i in range(1, REPLICAS + 1)]


def bindable(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_base():
    """A --base-port whose 40 ports are free (below the ephemeral range, away from the demo's default
    19440 and the docs' 1844x, so that a demo or walkthrough running on this machine does not clash)."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(20000, 30000, 50)
        if all(bindable(p) for p in demo_ports(base)):
            return base
    raise unittest.SkipTest("no block of free ports for the demo")


def events(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
    return out


class DemoReplicasTest(unittest.TestCase):
    def test_demo_with_three_replicas(self):
        base = free_base()
        with tempfile.TemporaryDirectory(prefix="cg-demo-replicas-") as work:
            started = time.monotonic()
            # 10 s: the replicas' first rebalancing pass comes one lease duration (15 s) after their
            # start; the counts below are of agents where they first landed, not of agents on the move.
            proc = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--replicas", str(REPLICAS),
                                   "--duration", "10s", "--work", work, "--base-port", str(base)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=170)
            out = proc.stdout
            print(f"scripts/demo took {time.monotonic() - started:.1f} s; it printed:\n{out}")
            self.assertEqual(proc.returncode, 0, "scripts/demo failed")
            logs = os.path.join(work, "logs")
            ev = {i: events(os.path.join(logs, f"gw-{i}.log")) for i in range(1, REPLICAS + 1)}
            msgs = {i: [e.get("msg") for e in ev[i]] for i in ev}

            # Three replicas started.
            for i in range(1, REPLICAS + 1):
                self.assertIn(f"replica gw-{i} listening: agents wss://localhost:{base + i}/ws", out)
                start = [e for e in ev[i] if e.get("msg") == "cluster-gateway started"]
                self.assertEqual(len(start), 1, f"gw-{i}.log has no start line")
                self.assertEqual(start[0].get("replica"), f"gw-{i}")
                self.assertEqual(start[0].get("agentPort"), base + i)
                self.assertEqual(start[0].get("statusDir"), os.path.join(work, "planes", "status"))
            self.assertIn(f"balancer (the Service's role): wss://localhost:{base}/ws", out)

            live, final = out.split("final state (")
            last_view = live[live.rindex("plane CRs (status written by"):]

            # Agents on at least two replicas: in the view, and in the logs.
            held = {int(m.group(1)): int(m.group(2))
                    for m in re.finditer(r"^  gw-(\d)\s+agents :\d+ .*?\s(\d+) agent\(s\)", last_view, re.M)}
            self.assertEqual(sorted(held), [1, 2, 3], last_view)
            self.assertEqual(sum(held.values()), 5, "the five accepted agents, once each")
            self.assertGreaterEqual(sum(1 for n in held.values() if n > 0), 2, "agents not spread")
            with_agents = [i for i in ev if "agent connected successfully" in msgs[i]]
            self.assertGreaterEqual(len(with_agents), 2, "the logs show agents on fewer than two replicas")
            self.assertRegex(last_view, r"AGENTS ON")

            # Exactly one replica writes status: the view, the logs, the status files.
            self.assertIn("plane CRs (status written by gw-1;", last_view)
            self.assertEqual(len(re.findall(r"\[writes status\]", last_view)), 1, last_view)
            writers = [i for i in ev if "this replica writes status now" in msgs[i]]
            self.assertEqual(writers, [1], "more than one replica wrote status (or none)")
            status_dir = os.path.join(work, "planes", "status")
            files = sorted(os.listdir(status_dir))
            self.assertEqual(len(files), 4, files)  # the four example CRs

            # A request entering gw-1, served by another replica.
            m = re.search(r"^a request entering gw-1 for (.+), which has no agent on gw-1", out, re.M)
            self.assertIsNotNone(m, "no forwarded request printed")
            self.assertRegex(out, rf"\$ curl .* https://localhost:{base + 31}/api/proxy/")
            self.assertRegex(out, r"(?m)^HTTP/1\.1 200")
            entry = re.search(r"(?m)^X-Cluster-Gateway-Entry-Pod: (\S+)$", out)
            served = re.search(r"(?m)^X-Cluster-Gateway-Served-By: (\S+)$", out)
            self.assertIsNotNone(entry, "no Entry-Pod header printed")
            self.assertIsNotNone(served, "no Served-By header printed")
            self.assertEqual(entry.group(1), "gw-1")
            self.assertIn(served.group(1), {"gw-2", "gw-3"})
            self.assertNotEqual(entry.group(1), served.group(1))
            self.assertRegex(out, r"(?m)^NAME\s+STATUS\s+NODE$")
            fwd = [e for e in ev[1] if e.get("msg") == "HTTP proxy request forwarded"]
            self.assertTrue(any(e.get("servedBy") == served.group(1) for e in fwd),
                            "gw-1 did not log the forwarding")

            # Everything stopped cleanly.
            for i in ev:
                self.assertEqual(msgs[i][-1], "stopped", f"gw-{i} did not stop cleanly")
            rows = [line for line in final.splitlines() if re.match(r"^\S.*\s(yes|no)\s+\d+\s", line)]
            self.assertEqual(len(rows), 4, final)
            self.assertTrue(all(re.search(r"\sno\s+0\s", r) for r in rows), final)
            for p in demo_ports(base):
                self.assertTrue(bindable(p), f"port {p} still in use after the demo")


if __name__ == "__main__":
    sys.exit(ctest_main.main())
