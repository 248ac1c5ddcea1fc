"""What every benchmark mode shares: the work directory and sizes (Env), processes started and stopped
by pid (Proc), the gateway under test (Gateway), agent simulators, the benchmark PKI and plane files,
perf recording.

Built on tests/support/gateway_proc.py (the gateway's command line, Prometheus sums, /proc readers,
plane YAML, bounded polling), so the benchmarks and the Python tests start the gateway the same way.
One difference on purpose: here the gateway writes its log straight into a file, and its start is
read back from that file, instead of start_gateway()'s Python thread pumping a pipe; that pump would
run on the same 2 cores as the processes being measured (the storm logs tens of thousands of lines).
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import gateway_cmd, metric_sum, plane_yaml, proc_cpu_seconds, proc_status_kib  # noqa: E402,F401


class ModeFailed(Exception):
    """The mode could not measure (a process died, a deadline passed, wrong answers). A missed goal is a
    result, not this."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rel(path):
    """`path` relative to the repository when it is inside it (for paths shown in reports)."""
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def shown(cmd):
    """A command line as shown in reports: paths inside the repository relative to it."""
    return " ".join(c.replace(ROOT + os.sep, "") for c in cmd)


# ---- processes -----------------------------------------------------------------------------------
def pin(cpu):
    """A preexec_fn pinning the child to one CPU, or None when that CPU is not available here."""
    if cpu is None or cpu not in os.sched_getaffinity(0):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


STARTED = []  # every process the driver started and has not stopped yet (stopped by pid, never by name)


class Proc:
    """A child process with its stdout and stderr in `logfile` (or stdout on a pipe)."""

    def __init__(self, name, cmd, logfile, cpu=None, stdout_pipe=False):
        self.name = name
        self.cmd = cmd
        self.logfile = logfile
        self.log = open(logfile, "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout_pipe else self.log,
                                  stderr=self.log, preexec_fn=pin(cpu), cwd=ROOT)
        STARTED.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15.0):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        if self in STARTED:
            STARTED.remove(self)
        return self.p.returncode


def stop_all():
    for p in list(STARTED):
        try:
            p.stop(timeout=5)
        except Exception:
            pass


def run_json(cmd, logfile, cpu=None, timeout=600):
    """Runs a load tool to completion and returns the JSON object it prints last (plus "_exit")."""
    with open(logfile, "w") as err:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, preexec_fn=pin(cpu), timeout=timeout, cwd=ROOT)
    out = r.stdout.decode().strip().splitlines()
    try:
        j = json.loads(out[-1])
    except (IndexError, ValueError):
        raise ModeFailed(f"{os.path.basename(cmd[0])} printed no result (exit {r.returncode}); see {logfile}")
    j["_exit"] = r.returncode
    return j


def count_lines(path, needle):
    with open(path) as f:
        return sum(1 for line in f if needle in line)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not proc.alive():
            raise ModeFailed(f"{proc.name} exited (code {proc.p.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ModeFailed(f"{proc.name} did not listen on port {port}")


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


# ---- environment ---------------------------------------------------------------------------------
class Env:
    """One run: its options, the size of each mode (tiny or full), binaries, work directory, PKI."""

    def __init__(self, args, sizes):
        self.args = args
        self.sizes = sizes  # {mode: {knob: value}}
        self.bin = os.path.join(args.build, "bin")
        self.work = args.work
        self.pki = os.path.join(self.work, "pki")
        self.bpki = os.path.join(self.work, "bench-pki")
        self.perf = args.perf
        self.next_ip = 2  # 127.0.0.x source addresses handed out to agent processes

    def source_ips(self, n):
        ips = [f"127.0.0.{self.next_ip + i}" for i in range(n)]
        self.next_ip += n
        return ",".join(ips)

    def path(self, *p):
        return os.path.join(self.work, *p)

    def binary(self, name):
        return os.path.join(self.bin, name)

    def agent_cert(self, kind="ec", i=0):
        """(cert, key) of bench agent i of key type "ec" or "rsa"."""
        return (os.path.join(self.bpki, f"{kind}-agent-{i}.crt"), os.path.join(self.bpki, f"{kind}-agent-{i}.key"))

    def agent_ca(self, kind="ec"):
        return os.path.join(self.bpki, f"{kind}-ca.crt")

    def write_planes(self, name, planes):
        return write_planes(self, name, planes)


def _sh(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_pki(env):
    """scripts/dev-pki in <work>/pki (gateway server certificate, internal CA, controller) and, in
    <work>/bench-pki, one ECDSA P-256 and one RSA-2048 agent CA with 4 agent certificates each. Both are
    kept between runs."""
    _sh([os.path.join(ROOT, "scripts", "dev-pki"), env.pki])
    d = env.bpki
    if os.path.exists(os.path.join(d, ".complete")):
        return
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "client.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n")
    for kind, alg in (("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                      ("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])):
        ca = os.path.join(d, f"{kind}-ca")
        _sh(["openssl", "genpkey", *alg, "-out", ca + ".key"])
        _sh(["openssl", "req", "-x509", "-new", "-key", ca + ".key", "-sha256", "-days", "3650",
             "-subj", f"/O=OpenChoreo/CN=bench {kind} agent CA", "-out", ca + ".crt",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        for i in range(4):
            a = os.path.join(d, f"{kind}-agent-{i}")
            _sh(["openssl", "genpkey", *alg, "-out", a + ".key"])
            _sh(["openssl", "req", "-new", "-key", a + ".key", "-subj", f"/O=OpenChoreo/CN=bench-{kind}-agent-{i}",
                 "-out", a + ".csr"])
            _sh(["openssl", "x509", "-req", "-in", a + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                 "-CAcreateserial", "-days", "825", "-sha256", "-extfile", ext, "-out", a + ".crt"])
            os.remove(a + ".csr")
    open(os.path.join(d, ".complete"), "w").close()


def _b64_file(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def write_planes(env, name, planes):
    """Makes <work>/<name>/planes/planes.yaml (the directory <work>/<name> emptied first): the default
    ClusterObservabilityPlane (so that Ready can be True) and one CR per (kind, cr-name, planeID, CA file)
    of `planes`, each pinning that CA. Returns the planes directory."""
    d = env.path(name, "planes")
    shutil.rmtree(env.path(name), ignore_errors=True)
    os.makedirs(d)
    cas = {}
    docs = [plane_yaml("ClusterObservabilityPlane", "default", "observability",
                       _b64_file(os.path.join(env.pki, "observability-ca.crt")))]
    for kind, cr, plane_id, ca_file in planes:
        if ca_file not in cas:
            cas[ca_file] = _b64_file(ca_file)
        docs.append(plane_yaml(kind, cr, plane_id, cas[ca_file]))
    with open(os.path.join(d, "planes.yaml"), "w") as f:
        f.write("---\n".join(docs))
    # The same CRs for the Go reference peer (bench/peer/main.go reads JSON, not YAML), beside the planes
    # directory so that the gateway's file source never sees it.
    peer = [{"kind": kind, "name": cr, "planeType": PLANE_TYPES[kind], "planeID": plane_id, "caFile": ca_file}
            for kind, cr, plane_id, ca_file in planes]
    with open(peer_planes_file(d), "w") as f:
        json.dump(peer, f)
    return d


PLANE_TYPES = {"ClusterDataPlane": "dataplane", "DataPlane": "dataplane", "ClusterWorkflowPlane": "workflowplane",
               "WorkflowPlane": "workflowplane", "ClusterObservabilityPlane": "observabilityplane",
               "ObservabilityPlane": "observabilityplane"}


def peer_planes_file(planes_dir):
    return os.path.join(os.path.dirname(planes_dir), "peer-planes.json")


# ---- the gateway under test ----------------------------------------------------------------------
class Gateway:
    """cluster-gateway on loopback with free ports (gateway_proc.gateway_cmd), the file plane source,
    status files in <planes>/../status, production session limits lifted (the benchmark measures
    capacity, not the limits). Knobs: CG_BENCH_WRAP (a command to run it under, e.g. "heaptrack -o
    /tmp/ht"; the pid is then the wrapper's, so its CPU and RSS figures are not the gateway's) and
    CG_BENCH_GATEWAY_EXTRA (more flags for every gateway of the run, for A/B runs)."""

    def __init__(self, env, name, planes_dir, extra=(), cpu=None, expect_crs=0):
        self.env = env
        self.status_dir = os.path.join(os.path.dirname(planes_dir), "status")
        cmd = [*os.environ.get("CG_BENCH_WRAP", "").split(),
               *gateway_cmd(env.binary("cluster-gateway"), env.pki, planes_dir),
               "--status-dir", self.status_dir, "--shutdown-timeout", "10s",
               "--max-agent-sessions", "1000000", "--max-agents-per-plane", "1000000", *extra,
               *os.environ.get("CG_BENCH_GATEWAY_EXTRA", "").split()]
        self.cmdline = cmd
        self.proc = Proc(f"gateway-{name}", cmd, env.path(name, "gateway.log"), cpu=cpu)
        self.ports = self._started_event(30.0)
        self.agent_port = self.ports["agentPort"]
        self.health_port = self.ports["healthPort"]
        self.internal_port = self.ports["internalPort"]
        self.wait(lambda: http_get(f"http://127.0.0.1:{self.health_port}/ready")[0] == 200, 60, "gateway /ready")
        if expect_crs:
            # Every CR is written once (disconnected) at start; wait for that before measuring.
            self.wait(lambda: self.status_writes() >= expect_crs, 120, f"{expect_crs} initial status writes")

    def _started_event(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.proc.alive():
                raise ModeFailed(f"gateway exited (code {self.proc.p.returncode}); see {self.proc.logfile}")
            with open(self.proc.logfile) as f:
                for line in f:
                    if '"cluster-gateway started"' in line:
                        return json.loads(line)
            time.sleep(0.05)
        raise ModeFailed(f"gateway did not log 'cluster-gateway started'; see {self.proc.logfile}")

    @property
    def pid(self):
        return self.proc.pid

    def cpu_seconds(self):
        return proc_cpu_seconds(self.pid)

    def rss_kib(self):
        return proc_status_kib(self.pid)

    label = "gateway"  # in failure messages; GoPeer shares these methods with its own label

    def wait(self, cond, timeout, what, interval=0.1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.proc.alive():
                raise ModeFailed(f"{self.label} exited while waiting for {what}; see {self.proc.logfile}")
            try:
                if cond():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(interval)
        suffix = "" if self.label == "gateway" else f" ({self.label})"
        raise ModeFailed(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")

    def metrics(self, timeout=30.0):
        """The Prometheus text of /metrics (sum samples with metric_sum)."""
        return http_get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=timeout)[1]

    def sessions(self, timeout=30.0):
        return int(metric_sum(self.metrics(timeout), "cluster_gateway_agent_sessions"))

    def status_writes(self):
        return int(metric_sum(self.metrics(), "cluster_gateway_status_writes_total", result="ok"))

    def stop(self):
        return self.proc.stop(timeout=30)


# ---- the Go reference peer -----------------------------------------------------------------------
GO_PEER = "cluster-gateway-go-peer"


def go_peer_missing(env):
    """None when the Go reference peer (bench/peer/, built by bench/run) can run, else why not."""
    reason = os.environ.get("CG_BENCH_GO_PEER_SKIP")
    if reason:
        return reason
    if not os.path.exists(env.binary(GO_PEER)):
        return f"{rel(env.binary(GO_PEER))} is missing (bench/run builds it when Go is installed)"
    return None


class GoPeer:
    """bench/peer/main.go (upstream's agent-listener shape in Go) on loopback with free ports, serving
    the CRs of `planes_dir` (its peer-planes.json), with the gateway's certificate. The same interface
    as Gateway for what the modes use: pid, agent_port, cpu_seconds, rss_kib, metrics, sessions, wait,
    stop. Pinned to `cpu` (Go then sizes GOMAXPROCS to that one CPU) when given."""

    def __init__(self, env, name, planes_dir, extra=(), cpu=None):
        self.env = env
        cmd = [env.binary(GO_PEER), "--server-cert", os.path.join(env.pki, "server.crt"),
               "--server-key", os.path.join(env.pki, "server.key"), "--planes", peer_planes_file(planes_dir), *extra]
        self.cmdline = cmd
        self.proc = Proc(f"go-peer-{name}", cmd, env.path(name, "go-peer.log"), cpu=cpu)
        self.ports = self._started_event(30.0)
        self.agent_port = self.ports["agentPort"]
        self.health_port = self.ports["healthPort"]
        self.wait(lambda: http_get(f"http://127.0.0.1:{self.health_port}/ready")[0] == 200, 30, "go peer /ready")

    def _started_event(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.proc.alive():
                raise ModeFailed(f"go peer exited (code {self.proc.p.returncode}); see {self.proc.logfile}")
            with open(self.proc.logfile) as f:
                for line in f:
                    if '"go-peer started"' in line:
                        return json.loads(line)
            time.sleep(0.05)
        raise ModeFailed(f"go peer did not log 'go-peer started'; see {self.proc.logfile}")

    pid = Gateway.pid
    cpu_seconds = Gateway.cpu_seconds
    rss_kib = Gateway.rss_kib
    metrics = Gateway.metrics
    sessions = Gateway.sessions

    wait = Gateway.wait
    label = "go peer"

    def stop(self):
        return self.proc.stop(timeout=30)


def start_agents(env, gw, name, count, plane_id, kind="ec", spread=0, rate=0, source_ips="", extra=(), cpu=None,
                 log_level="warn"):
    """One cluster-agent-sim process with `count` agents of bench agent certificate 0 of `kind`; `name`
    is "<mode>:<log name>" (its log goes to <work>/<mode>/<log name>.log). With log_level "info" the
    simulator logs "connected to control plane" once per upgraded agent."""
    cert, key = env.agent_cert(kind, 0)
    cmd = [env.binary("cluster-agent-sim"), "--server-url", f"wss://127.0.0.1:{gw.agent_port}/ws",
           "--plane-type", "dataplane", "--plane-id", plane_id, "--client-cert", cert, "--client-key", key,
           "--server-ca", os.path.join(env.pki, "gateway-ca.crt"), "--count", str(count), "--log-level", log_level, *extra]
    if spread:
        cmd += ["--plane-spread", str(spread)]
    if rate:
        cmd += ["--connect-rate", str(rate)]
    if source_ips:
        cmd += ["--source-ip", source_ips]
    mode, _, logname = name.partition(":")
    return Proc(name, cmd, env.path(mode, logname + ".log"), cpu=cpu)


# ---- perf ----------------------------------------------------------------------------------------
def perf_start(env, pid, name):
    """With --perf: `perf record` of process `pid` until perf_stop (report in <work>/perf-<name>.txt)."""
    if not env.perf:
        return None
    out = env.path(f"perf-{name}.data")
    # CG_BENCH_PERF_CALLGRAPH=dwarf: call graphs through code built without frame pointers (bigger files).
    graph = ["--call-graph", os.environ["CG_BENCH_PERF_CALLGRAPH"]] if os.environ.get("CG_BENCH_PERF_CALLGRAPH") else ["-g"]
    p = subprocess.Popen(["perf", "record", "-F", "499", *graph, "-p", str(pid), "-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return (p, out, name)


def perf_stop(env, h):
    if not h:
        return
    p, out, name = h
    p.send_signal(signal.SIGINT)
    p.wait(30)
    with open(env.path(f"perf-{name}.txt"), "w") as f:
        subprocess.run(["perf", "report", "-i", out, "--no-children", "--stdio", "--sort", "dso,sym", "-g", "none",
                        "--percent-limit", "0.5"], stdout=f, stderr=subprocess.DEVNULL)
    log(f"perf profile: {env.path(f'perf-{name}.txt')}")
