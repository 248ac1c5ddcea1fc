"""Shared by the tests of several gateway replicas forming a mesh (tests/mesh/test_replicas.py in file
mode, tests/mesh/test_replicas_kube.py in Kubernetes mode): free loopback ports, the caller's TLS
context, a GET at one replica's internal port, the agents one replica holds and the replicas that say
they write status (from their logs), and a load of proxied GETs at a fixed rate (the rolling restarts).

The helpers of `MeshReplicas` expect the test to hold `self.pki` (the dev PKI directory),
`self.internal` ({replica: internal API port}), `self.logs` ({replica: gateway_proc.LogLines}) and
`self.procs` ({replica: subprocess.Popen})."""
import http.client
import os
import socket
import ssl
import threading
import time
from datetime import datetime, timezone

from gateway_proc import free_ports  # noqa: F401  (re-exported for the mesh tests)


def pods_path(p):
    """The proxied path of plane p's pod list (plane `mesh-<p>`, CR `wp<p>`): an agent answers it."""
    return f"/api/proxy/workflowplane/mesh-{p}/_cluster/wp{p}/k8s/api/v1/namespaces/default/pods"


def utc_now():
    """Now as the gateway's log lines write it ("time"), to line a test's event up with them."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MeshReplicas:
    """Readers for a unittest.TestCase that runs several replicas (see the module's docstring)."""

    def caller(self):
        """The internal API's caller: the controller's client certificate, trusting the gateway CA."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki, "controller.crt"), os.path.join(self.pki, "controller.key"))
        return ctx

    def get(self, i, path):
        """GET `path` at replica i's internal port: (status, {lower-case header: value}, body)."""
        conn = http.client.HTTPSConnection("localhost", self.internal[i], context=self.caller(), timeout=15)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def local_sessions(self, i):
        """Agents connected to replica i: its log's connected minus disconnected events."""
        return len(self.logs[i].find("agent connected successfully")) - len(self.logs[i].find("agent disconnected"))

    def writers_by_log(self):
        """Live replicas whose last leadership line says they write status."""
        return [i for i in self.procs if self.procs[i].poll() is None and
                len(self.logs[i].find("this replica writes status now")) >
                len(self.logs[i].find("this replica no longer writes status"))]


class ProxiedGetLoad:
    """`workers` threads sending `rate` GETs per second in all to `pods_path(p)` of planes 0..planes-1
    (in turn), each on a new TLS connection to 127.0.0.1:`port` (a balancer in front of the replicas'
    internal ports) with `ctx`. `ok` counts the 200s; `failures` holds every other outcome as a dict:
    when (monotonic `t` and UTC `time`), plane, status ("error" for an exception), body (or the
    exception), and the answer's entry and serving replica when it named them. `seconds` holds every
    request's duration (connect to last byte), answered or not."""

    def __init__(self, port, ctx, planes, workers=8, rate=200.0, timeout=20):
        self.port, self.ctx, self.planes, self.workers, self.rate, self.timeout = port, ctx, planes, workers, rate, timeout
        self.ok, self.failures, self.seconds = 0, [], []
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.threads = []

    def start(self):
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(self.workers)]
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def total(self):
        with self.lock:
            return self.ok + len(self.failures)

    def percentile(self, q):
        """The q-quantile (0..1) of the requests' durations, in seconds (0 before any request)."""
        with self.lock:
            d = sorted(self.seconds)
        return d[min(len(d) - 1, int(q * len(d)))] if d else 0.0

    def _fail(self, p, status, body, headers=None):
        headers = headers or {}
        with self.lock:
            self.failures.append({"t": time.monotonic(), "time": utc_now(), "plane": p, "status": status, "body": body,
                                  "entry": headers.get("x-cluster-gateway-entry-pod"),
                                  "servedBy": headers.get("x-cluster-gateway-served-by")})

    def _run(self, worker):
        n = 0
        start = time.monotonic()
        while not self.stopping.is_set():
            n += 1
            due = start + n * self.workers / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            p = (worker + n) % self.planes
            t = time.monotonic()
            try:
                conn = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=self.timeout)
                conn.request("GET", pods_path(p))
                r = conn.getresponse()
                body = r.read()
                conn.close()
                if r.status == 200:
                    with self.lock:
                        self.ok += 1
                else:
                    self._fail(p, r.status, body[:300], {k.lower(): v for k, v in r.getheaders()})
            except (OSError, http.client.HTTPException) as e:
                self._fail(p, "error", repr(e))
            with self.lock:
                self.seconds.append(time.monotonic() - t)


class RefusingPort:
    """A port on 127.0.0.1 bound but never listening: a connection to it is refused at once. Setting a
    Balancer's backend slot to it takes that backend out of the round robin (the balancer goes on to
    the next backend) without changing the length of the list its threads index; setting the slot back
    to the backend's port puts it back. Both are one list store, atomic for the balancer's threads."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()
