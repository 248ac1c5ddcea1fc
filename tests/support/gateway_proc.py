"""Shared by the Python tests that drive the real cluster-gateway binary: bounded polling, and
starting the gateway until its "cluster-gateway started" log line (which names the chosen ports)."""
import json
import os
import random
import socket
import subprocess
import threading
import time


def wait_for(pred, timeout=10.0, step=0.05):
    """Polls `pred` until it returns a truthy value or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def free_ports(n):
    """`n` distinct TCP ports free right now on 127.0.0.1, for a process that is told its port before it
    listens (peers configured with each other's ports, restarts on the same port). They are taken below
    the kernel's ephemeral range, so that no outgoing connection (of this test or of one running beside
    it) is given one of them in between: a kernel-chosen free port was, once, and the gateway failed to
    start with "Address already in use". Kernel-chosen ports are the fallback when the range leaves no
    room below it."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    ports = []
    rng = random.SystemRandom()
    tries = 0
    while low > 11000 and len(ports) < n and tries < 2000:
        tries += 1
        p = rng.randrange(10000, low)
        if p in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.append(p)
    socks = []
    while len(ports) + len(socks) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports += [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_gateway(cmd, log=None, timeout=20.0, preexec_fn=None, env=None):
    """Starts the gateway; returns (process, the "cluster-gateway started" event). Its output keeps
    being read afterwards (into `log`, a text file or a `LogLines`, when given) so that a full pipe
    never blocks it. `preexec_fn` runs in the child before exec (e.g. to lower RLIMIT_NOFILE);
    `env` replaces the environment (None: inherit)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn,
                            env=env)
    lines, started = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and started is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("msg") == "cluster-gateway started":
            started = ev
    if log is not None:
        log.writelines(lines)
    if started is None:
        proc.kill()
        proc.wait()
        raise AssertionError("gateway did not start:\n" + "".join(lines))

    def pump():
        for line in proc.stdout:
            if log is not None:
                log.write(line)
                log.flush()
    threading.Thread(target=pump, daemon=True).start()
    return proc, started


class LogLines:
    """A `log` for start_gateway that keeps the gateway's JSON log lines in memory (thread-safe), so
    tests can look for an event: `mark()` before provoking something, then `find(msg, since=mark,
    **fields)` or `wait(...)`. Non-JSON lines are kept as {"msg": None, "raw": line}."""

    def __init__(self, echo=None):
        self._lock = threading.Lock()
        self._events = []
        self._echo = echo  # optional text file that also receives every line

    def write(self, line):
        for part in line.splitlines():
            try:
                ev = json.loads(part)
                if not isinstance(ev, dict):
                    raise ValueError
            except ValueError:
                ev = {"msg": None, "raw": part}
            with self._lock:
                self._events.append(ev)
        if self._echo is not None:
            self._echo.write(line)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if self._echo is not None:
            self._echo.flush()

    def mark(self):
        with self._lock:
            return len(self._events)

    def find(self, msg=None, since=0, **fields):
        """Events after index `since` whose msg equals `msg` (any when None) and whose fields equal
        `fields` (a callable value is used as a predicate on the field)."""
        with self._lock:
            events = self._events[since:]
        out = []
        for ev in events:
            if msg is not None and ev.get("msg") != msg:
                continue
            ok = True
            for k, v in fields.items():
                if callable(v):
                    if k not in ev or not v(ev[k]):
                        ok = False
                        break
                elif ev.get(k) != v:
                    ok = False
                    break
            if ok:
                out.append(ev)
        return out

    def wait(self, msg=None, since=0, count=1, timeout=10.0, **fields):
        """Waits until at least `count` matching events exist; returns them (maybe fewer on timeout)."""
        return wait_for(lambda: len(self.find(msg, since, **fields)) >= count and self.find(msg, since, **fields),
                        timeout, 0.05) or self.find(msg, since, **fields)


def metric_sum(text, name, **labels):
    """Sum of the samples of metric `name` in Prometheus text `text` whose labels include `labels`
    (0.0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, val = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(val)
    return total


def proc_cpu_seconds(pid):
    """User + system CPU time of process `pid` (all threads) from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the ")" that ends comm: fields[0] is state (field 3), so utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid, key="VmRSS"):
    """A kB value from /proc/<pid>/status (VmRSS by default), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_fd_count(pid):
    """Open file descriptors of process `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def plane_yaml(kind, name, plane_id, ca_b64):
    """A cluster-scoped plane CR pinning the base64 PEM `ca_b64` as its clientCA value."""
    return (f"apiVersion: openchoreo.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n"
            f"  planeID: {plane_id}\n  clusterAgent:\n    clientCA:\n      value: {ca_b64}\n")


def dev_pki_and_planes(root, d, planes, kind, ca="tenant-a-ca"):
    """Makes the dev PKI (scripts/dev-pki) in d/pki and, in d/planes, one file <name>.yaml per
    (name, plane_id) of `planes`, each a `kind` CR pinning `ca`. Returns (pki, planes_dir, ca_b64)."""
    import base64
    pki = os.path.join(d, "pki")
    subprocess.run([os.path.join(root, "scripts", "dev-pki"), pki], check=True)
    planes_dir = os.path.join(d, "planes")
    os.makedirs(planes_dir, exist_ok=True)
    with open(os.path.join(pki, ca + ".crt"), "rb") as f:
        ca_b64 = base64.b64encode(f.read()).decode()
    for name, plane_id in planes:
        with open(os.path.join(planes_dir, name + ".yaml"), "w") as f:
            f.write(plane_yaml(kind, name, plane_id, ca_b64))
    return pki, planes_dir, ca_b64


def gateway_cmd(binary, pki, planes_dir, *extra, internal_ca=None):
    """The gateway on loopback with free ports, the file plane source and the dev PKI's server
    certificate and internal CA (or `internal_ca`), no startup grace; `extra` flags appended."""
    return [binary, "--port", "0", "--health-port", "0", "--internal-port", "0", "--bind", "127.0.0.1",
            "--planes-dir", planes_dir, "--server-cert", os.path.join(pki, "server.crt"),
            "--server-key", os.path.join(pki, "server.key"),
            "--internal-client-ca-cert", internal_ca or os.path.join(pki, "internal-ca.crt"),
            "--startup-grace", "0s", *extra]


def raw_upgrade(port, ctx, target):
    """Sends a WebSocket upgrade request for `target` to the agent port over TLS with `ctx` (an
    ssl.SSLContext holding the client certificate) and returns everything the gateway sent until it
    closed the connection (a refusal is answered, then closed)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    return data
                data += chunk
