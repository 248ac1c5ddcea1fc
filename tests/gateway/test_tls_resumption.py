"""TLS session resumption on the agent port (--tls-session-cache, issue 18), against the real binary
with OpenSSL's own client (`openssl s_client -sess_out/-sess_in`), TLS 1.3 and TLS 1.2.

What must hold:
- an authorized agent resumes (s_client prints "Reused") and upgrades (101), also when its
  certificate comes from an intermediate CA it sent in the full handshake (bug 14: a resumed session
  must still carry that intermediate), and also after its connection was cut without a close_notify;
- a resumed session is authorized again, against the current CRs: after the CR's CA changes, the
  same resumed session gets 401; a session made for one planeID gets 401 for a planeID whose CR
  trusts another CA;
- a connection that was refused leaves no session to resume (the next handshake is full);
- with --tls-session-cache 0 every handshake is full.
Each refusal of a resumed session is checked to have been resumed ("Reused"), so that the test
cannot pass on full handshakes alone."""
import base64
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import ctest_main  # noqa: E402
from gateway_proc import metric_sum, plane_yaml, start_gateway, wait_for  # noqa: E402

UPGRADE = ("GET /ws?planeID={pid}&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
           "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
VERSIONS = ("-tls1_3", "-tls1_2")


class Attempt:
    def __init__(self, reused, status, output):
        self.reused, self.status, self.output = reused, status, output

    def __repr__(self):
        return f"Attempt(reused={self.reused}, status={self.status!r})"


class TlsResumptionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-tls-resume-")
        cls.addClassCleanup(cls.tmp.cleanup)
        d = cls.tmp.name
        cls.pki = os.path.join(d, "pki")
        subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), cls.pki], check=True, stdout=subprocess.DEVNULL)
        # agent-b's certificate comes from tenant B's intermediate; the chain file is leaf + intermediate.
        with open(os.path.join(cls.pki, "agent-b-chain.crt")) as f:
            pems = f.read().split("-----END CERTIFICATE-----")
        cls.intermediate = os.path.join(d, "intermediate.crt")
        with open(cls.intermediate, "w") as f:
            f.write(pems[1].strip() + "\n-----END CERTIFICATE-----\n")
        cls.planes = os.path.join(d, "planes")
        os.makedirs(cls.planes)
        cls.write_plane("pb", "tenant-b-ca.crt")
        cls.write_plane("pa", "tenant-a-ca.crt")
        cls.gateways = []

    @classmethod
    def write_plane(cls, pid, ca_file):
        with open(os.path.join(cls.pki, ca_file), "rb") as f:
            ca_b64 = base64.b64encode(f.read()).decode()
        tmp = os.path.join(cls.planes, f".{pid}.tmp")
        with open(tmp, "w") as f:
            f.write(plane_yaml("ClusterDataPlane", pid, pid, ca_b64))
        os.replace(tmp, os.path.join(cls.planes, f"{pid}.yaml"))

    def start(self, *extra):
        log = open(os.path.join(self.tmp.name, f"gateway-{len(self.gateways)}.log"), "w")
        self.addCleanup(log.close)
        proc, started = start_gateway(
            [BIN, "--port", "0", "--health-port", "0", "--internal-port", "0", "--bind", "127.0.0.1",
             "--planes-dir", self.planes, "--server-cert", os.path.join(self.pki, "server.crt"),
             "--server-key", os.path.join(self.pki, "server.key"),
             "--internal-client-ca-cert", os.path.join(self.pki, "internal-ca.crt"),
             "--startup-grace", "0s", "--shutdown-timeout", "5s", *extra], log=log)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.addCleanup(stop)
        self.gateways.append(proc)
        return started["agentPort"], started["healthPort"]

    def connect(self, port, version, sess_in=None, sess_out=None, pid="pb", chain=True, cut=False, session_expected=True):
        """One agent connection with s_client: the upgrade request, the answer's status line; then a
        clean end (close_notify) or, with `cut`, SIGKILL (the TCP connection ends without one)."""
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-CAfile", os.path.join(self.pki, "gateway-ca.crt"), "-verify_return_error",
               "-cert", os.path.join(self.pki, "agent-b.crt"), "-key", os.path.join(self.pki, "agent-b.key"), version]
        if chain:
            cmd += ["-cert_chain", self.intermediate]
        if sess_in:
            cmd += ["-sess_in", sess_in]
        if sess_out:
            cmd += ["-sess_out", sess_out]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = b""
        try:
            p.stdin.write(UPGRADE.format(pid=pid).encode())
            p.stdin.flush()
            sel = selectors.DefaultSelector()
            sel.register(p.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 15
            while b"HTTP/1.1 " not in out or not out.split(b"HTTP/1.1 ", 1)[1].count(b"\r\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
            # TLS 1.3: the ticket came before the answer; give s_client a moment to write -sess_out.
            if sess_out and session_expected:
                wait_for(lambda: os.path.exists(sess_out) and os.path.getsize(sess_out) > 0, 5)
        finally:
            if cut:
                p.send_signal(signal.SIGKILL)
            else:
                p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        text = out.decode(errors="replace")
        status = ""
        if "HTTP/1.1 " in text:
            status = "HTTP/1.1 " + text.split("HTTP/1.1 ", 1)[1].split("\r\n", 1)[0]
        reused = "\nReused, " in text
        if not reused and "\nNew, " not in text:
            self.fail(f"s_client printed neither New nor Reused:\n{text}")
        return Attempt(reused, status, text)

    def session_file(self, name):
        path = os.path.join(self.tmp.name, name)
        if os.path.exists(path):
            os.remove(path)
        return path

    def resumptions(self, health_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as r:
            return metric_sum(r.read().decode(), "cluster_gateway_agent_tls_resumptions_total")

    def test_1_authorized_agent_resumes_with_its_intermediate(self):
        port, health = self.start()
        for v in VERSIONS:
            with self.subTest(version=v):
                s = self.session_file(f"s{v}.pem")
                first = self.connect(port, v, sess_out=s)
                self.assertEqual((first.reused, first.status), (False, "HTTP/1.1 101 Switching Protocols"), first.output)
                second = self.connect(port, v, sess_in=s)
                self.assertEqual((second.reused, second.status), (True, "HTTP/1.1 101 Switching Protocols"), second.output)
        self.assertEqual(self.resumptions(health), 2)

    def test_2_cut_connection_keeps_the_session(self):
        port, _ = self.start()
        for v in VERSIONS:
            with self.subTest(version=v):
                s = self.session_file(f"cut{v}.pem")
                first = self.connect(port, v, sess_out=s, cut=True)
                self.assertEqual((first.reused, first.status), (False, "HTTP/1.1 101 Switching Protocols"), first.output)
                second = self.connect(port, v, sess_in=s, cut=True)
                self.assertEqual((second.reused, second.status), (True, "HTTP/1.1 101 Switching Protocols"), second.output)

    def test_3_refused_connection_leaves_no_session(self):
        port, _ = self.start()
        for v in VERSIONS:
            with self.subTest(version=v):
                s = self.session_file(f"refused{v}.pem")
                # Without its intermediate, agent-b does not chain to tenant B's CA: 401.
                first = self.connect(port, v, sess_out=s, chain=False)
                self.assertEqual((first.reused, first.status), (False, "HTTP/1.1 401 Unauthorized"), first.output)
                second = self.connect(port, v, sess_in=s)
                self.assertEqual((second.reused, second.status), (False, "HTTP/1.1 101 Switching Protocols"), second.output)

    def test_4_resumed_session_for_another_plane_is_authorized_again(self):
        port, _ = self.start()
        for v in VERSIONS:
            with self.subTest(version=v):
                s = self.session_file(f"plane{v}.pem")
                self.assertEqual(self.connect(port, v, sess_out=s).status, "HTTP/1.1 101 Switching Protocols")
                other = self.connect(port, v, sess_in=s, pid="pa")  # pa trusts tenant A's CA only
                self.assertEqual((other.reused, other.status), (True, "HTTP/1.1 401 Unauthorized"), other.output)

    def test_5_no_cache_means_full_handshakes(self):
        port, health = self.start("--tls-session-cache", "0")
        for v in VERSIONS:
            with self.subTest(version=v):
                s = self.session_file(f"off{v}.pem")
                first = self.connect(port, v, sess_out=s, session_expected=False)
                self.assertEqual(first.status, "HTTP/1.1 101 Switching Protocols", first.output)
                # No ticket and no session ID: s_client has nothing to keep. Should it keep something,
                # offering it must still give a full handshake.
                if os.path.exists(s) and os.path.getsize(s) > 0:
                    second = self.connect(port, v, sess_in=s)
                    self.assertEqual((second.reused, second.status), (False, "HTTP/1.1 101 Switching Protocols"),
                                     second.output)
                self.assertNotIn("TLS session ticket:", first.output)
        self.assertEqual(self.resumptions(health), 0)

    def test_9_changed_ca_refuses_a_resumed_session(self):
        """Last: it changes pb's CA for the rest of the class."""
        port, _ = self.start()
        sessions = {}
        for v in VERSIONS:
            sessions[v] = self.session_file(f"revoked{v}.pem")
            self.assertEqual(self.connect(port, v, sess_out=sessions[v]).status, "HTTP/1.1 101 Switching Protocols")
        self.write_plane("pb", "tenant-a-ca.crt")  # tenant B's CA is no longer trusted for pb
        # The file source picks the change up within its poll interval: a full handshake shows it.
        self.assertTrue(wait_for(lambda: self.connect(port, "-tls1_3").status == "HTTP/1.1 401 Unauthorized", 10),
                        "the CA change did not take effect")
        for v in VERSIONS:
            with self.subTest(version=v):
                again = self.connect(port, v, sess_in=sessions[v])
                self.assertEqual((again.reused, again.status), (True, "HTTP/1.1 401 Unauthorized"), again.output)


if __name__ == "__main__":
    sys.exit(ctest_main.main())
