"""Shared by the end-to-end tests that run the cluster-gateway binary in Kubernetes mode (no
--planes-dir) against the fake API server (tests/fakes/kube_apiserver) with agents from
cluster-agent-sim: paths, the dev PKI, plane CR documents, the gateway's command line, agent-sim
processes, and readers of the fake's request log and of the CRs' status."""
import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import yaml

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_BIN_DIR", os.path.join(ROOT, "build", "bin"))
# The sanitizer builds use the normal build's simulator (CMake's CG_EXTERNAL_AGENT_SIM).
SIM = os.environ.get("CG_SIM_BIN", os.path.join(BIN, "cluster-agent-sim"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fakes", "kube_apiserver"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from harness import FakeApiServer, make_pki  # noqa: E402  (re-exported)
from kubeconfig import write_kubeconfig  # noqa: E402
from gateway_proc import free_ports, start_gateway, wait_for  # noqa: E402

__all__ = ["ROOT", "BIN", "GROUP", "CWP", "FakeApiServer", "make_pki", "write_kubeconfig", "start_gateway", "wait_for",
           "read_bytes", "dev_pki", "free_port", "cwp_doc", "write_seed", "gateway_cmd", "http_status", "AgentSim",
           "statuses", "agent_connection", "status_patches", "by_name", "gateway_events"]

GROUP = "/apis/openchoreo.dev/v1alpha1"
CWP = GROUP + "/clusterworkflowplanes"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def dev_pki(d):
    """Runs scripts/dev-pki into `d` (gateway server certificate, internal CA, tenant CAs and agents)."""
    subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), d], check=True, stdout=subprocess.DEVNULL)
    return d


def free_port():
    """A TCP port free right now on 127.0.0.1 (for a process that must keep its port across restarts,
    or a client configured before its server listens), below the ephemeral range (gateway_proc.free_ports)."""
    return free_ports(1)[0]


def cwp_doc(name, plane_id, ca_pem, status=None):
    """A ClusterWorkflowPlane trusting `ca_pem` inline (clientCA.value, base64-encoded PEM)."""
    doc = {"apiVersion": "openchoreo.dev/v1alpha1", "kind": "ClusterWorkflowPlane", "metadata": {"name": name},
           "spec": {"planeID": plane_id, "clusterAgent": {"clientCA": {"value": base64.b64encode(ca_pem).decode()}}}}
    if status is not None:
        doc["status"] = status
    return doc


def write_seed(d, docs):
    """Writes `docs` as one multi-document YAML file into the new directory `d` (for --seed-dir)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "objects.yaml"), "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    return d


def gateway_cmd(kubeconfig, pki, *extra, port=0):
    """The gateway in Kubernetes mode on 127.0.0.1 (ports 0 unless `port`), certificates from `pki`."""
    return [os.path.join(BIN, "cluster-gateway"), "--kubeconfig", kubeconfig, "--bind", "127.0.0.1",
            "--port", str(port), "--health-port", "0", "--internal-port", "0",
            "--internal-client-ca-cert", os.path.join(pki, "internal-ca.crt"),
            "--server-cert", os.path.join(pki, "server.crt"), "--server-key", os.path.join(pki, "server.key"),
            *extra]


def http_status(url, timeout=2):
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class AgentSim:
    """One cluster-agent-sim process (`count` agents; planeIDs `<plane_id>-<i mod spread>` when
    spread > 0). Its output goes to `log` (a path) or nowhere."""

    def __init__(self, pki, agent_port, plane_id, count=1, spread=0, plane_type="workflowplane", agent="agent-a",
                 reconnect_delay="500ms", log=None):
        cmd = [SIM, "--server-url", f"wss://localhost:{agent_port}/ws",
               "--plane-type", plane_type, "--plane-id", plane_id, "--count", str(count),
               "--client-cert", os.path.join(pki, agent + ".crt"), "--client-key", os.path.join(pki, agent + ".key"),
               "--server-ca", os.path.join(pki, "gateway-ca.crt"), "--reconnect-delay", reconnect_delay,
               "--log-level", "warn"]
        if spread:
            cmd += ["--plane-spread", str(spread)]
        self._out = open(log, "a") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)

    def kill(self, sig=signal.SIGKILL):
        """Ends the process (SIGKILL by default: the agents vanish without a close frame)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._out is not subprocess.DEVNULL:
            self._out.close()
            self._out = subprocess.DEVNULL


def statuses(api, path=CWP):
    """{CR name: status (dict, possibly empty)} for every object of the list endpoint `path`."""
    code, _, body = api.request("GET", path)
    if code != 200:
        raise AssertionError(f"GET {path}: {code} {body}")
    return {o["metadata"]["name"]: o.get("status") or {} for o in body["items"]}


def agent_connection(status):
    return status.get("agentConnection") or {}


def status_patches(api, since=None, name=None):
    """The status PATCH requests in the fake's request log (oldest first), each with `applied`: the
    agentConnection the body carried (the fake must run with --log-bodies; None without a body)."""
    q = "requests?subresource=status&method=PATCH"
    if since is not None:
        q += f"&since={since!r}"
    if name is not None:
        q += f"&name={name}"
    items = api.control("GET", q)["items"]
    for e in items:
        body = yaml.safe_load(e["body"]) if e.get("body") else None
        e["applied"] = agent_connection((body or {}).get("status") or {}) if body is not None else None
    items.sort(key=lambda e: e["receivedAt"])
    return items


def by_name(entries):
    out = {}
    for e in entries:
        out.setdefault(e["name"], []).append(e)
    return out


def gateway_events(log_path, msg=None):
    """The gateway's JSON log lines (from the file start_gateway() fills), optionally only `msg`."""
    out = []
    with open(log_path) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if msg is None or ev.get("msg") == msg:
                out.append(ev)
    return out
