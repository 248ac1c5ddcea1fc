"""TLS hygiene of the real cluster-gateway binary, checked from outside with sslscan 2.0.7
(`sslscan --no-colour --xml=- 127.0.0.1:<port>`) on the agent port and on the internal API port:
only TLS 1.2 and 1.3 are offered; every accepted cipher suite is AEAD (GCM, CHACHA20-POLY1305 or
CCM) with forward secrecy (TLS 1.3, or ECDHE/DHE key exchange in TLS 1.2); no SSLv2/SSLv3, TLS 1.0
or 1.1; no compression; no insecure renegotiation; not vulnerable to Heartbleed.

A positive control runs the same scan and the same checks against `openssl s_server` offering
TLS 1.0 with CBC and anonymous suites: the checks must find those, which shows that this sslscan
build can see what the assertions forbid (an sslscan that silently cannot probe TLS 1.0 would make
the gateway checks vacuous).

Limit of the tool: Debian's OpenSSL 3 has no compression support, so sslscan cannot offer
compression and its XML has no <compression> element; the compression check then falls back to a
handshake that must report no compression (the gateway also sets SSL_OP_NO_COMPRESSION)."""
import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import ctest_main  # noqa: E402
from gateway_proc import plane_yaml, start_gateway, wait_for  # noqa: E402

SSLSCAN = shutil.which("sslscan") or "/usr/bin/sslscan"
AEAD = re.compile(r"(GCM|CHACHA20[-_]POLY1305|CCM)")
TLS12_FS = re.compile(r"^(ECDHE|DHE)-")


def run_sslscan(port, extra=()):
    """Runs sslscan against 127.0.0.1:port; returns the parsed <ssltest> element and the raw XML."""
    p = subprocess.run([SSLSCAN, "--no-colour", "--xml=-", "--timeout=10", *extra, f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=240)
    xml = p.stdout[p.stdout.find("<?xml"):] if "<?xml" in p.stdout else p.stdout
    try:
        doc = ET.fromstring(xml)
    except ET.ParseError as e:
        raise AssertionError(f"sslscan output is not XML ({e}); rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    test = doc.find("ssltest")
    if test is None:
        raise AssertionError(f"sslscan found no ssltest; rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return test, xml


def violations(test):
    """Every way the scan result breaks the policy, as readable strings (empty: compliant)."""
    out = []
    enabled = {(p.get("type"), p.get("version")) for p in test.findall("protocol") if p.get("enabled") == "1"}
    for proto in sorted(enabled - {("tls", "1.2"), ("tls", "1.3")}):
        out.append(f"protocol {proto[0].upper()} {proto[1]} enabled")
    for needed in (("tls", "1.2"), ("tls", "1.3")):
        if needed not in enabled:
            out.append(f"protocol TLS {needed[1]} not offered")
    ciphers = test.findall("cipher")
    if not ciphers:
        out.append("no cipher suite accepted")
    for c in ciphers:
        name, ver = c.get("cipher", ""), c.get("sslversion", "")
        if ver not in ("TLSv1.2", "TLSv1.3"):
            out.append(f"{ver} suite {name}")
        if not AEAD.search(name):
            out.append(f"{ver} suite {name} is not AEAD")
        if ver != "TLSv1.3" and not TLS12_FS.match(name):
            out.append(f"{ver} suite {name} has no forward secrecy")
        if c.get("strength") in ("anonymous", "null", "weak", "insecure"):
            out.append(f"{ver} suite {name} strength={c.get('strength')}")
    comp = test.find("compression")
    if comp is not None and comp.get("supported") != "0":
        out.append("TLS compression supported")
    reneg = test.find("renegotiation")
    if reneg is not None and reneg.get("supported") == "1" and reneg.get("secure") != "1":
        out.append("insecure renegotiation supported")
    for hb in test.findall("heartbleed"):
        if hb.get("vulnerable") != "0":
            out.append(f"heartbleed vulnerable on {hb.get('sslversion')}")
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setUpModule():
    if not os.path.exists(SSLSCAN):
        raise unittest.SkipTest("sslscan is not installed (scripts/bootstrap installs it)")


class TlsScanTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-tls-scan-")
        cls.addClassCleanup(cls.tmp.cleanup)
        d = cls.tmp.name
        cls.pki = os.path.join(d, "pki")
        subprocess.run([os.path.join(ROOT, "scripts", "dev-pki"), cls.pki], check=True)
        cls.planes = os.path.join(d, "planes")
        os.makedirs(cls.planes)
        with open(os.path.join(cls.pki, "tenant-b-ca.crt"), "rb") as f:
            ca_b64 = base64.b64encode(f.read()).decode()
        with open(os.path.join(cls.planes, "pb.yaml"), "w") as f:  # agent-b: leaf + intermediate
            f.write(plane_yaml("ClusterDataPlane", "pb", "pb", ca_b64))
        cls.log = open(os.path.join(d, "gateway.log"), "w")
        cls.addClassCleanup(cls.log.close)
        cls.proc, started = start_gateway(
            [BIN, "--port", "0", "--health-port", "0", "--internal-port", "0", "--bind", "127.0.0.1",
             "--planes-dir", cls.planes, "--server-cert", os.path.join(cls.pki, "server.crt"),
             "--server-key", os.path.join(cls.pki, "server.key"),
             "--internal-client-ca-cert", os.path.join(cls.pki, "internal-ca.crt"),
             "--startup-grace", "0s", "--shutdown-timeout", "5s"], log=cls.log)
        cls.addClassCleanup(cls.stop)
        cls.agent_port, cls.internal_port = started["agentPort"], started["internalPort"]

    @classmethod
    def stop(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
        cls.proc.wait()

    def check_port(self, port, extra=()):
        test, xml = run_sslscan(port, extra)
        self.assertEqual(violations(test), [], xml)
        offered = sorted({(c.get("sslversion"), c.get("cipher")) for c in test.findall("cipher")})
        # Print what was seen (ctest -V / the run log shows it; docs/reliability.md quotes it).
        print(f"\nport {port}: " + ", ".join(f"{v} {n}" for v, n in offered), file=sys.stderr)
        self.assertIsNone(self.proc.poll(), "gateway exited during the scan")
        return test

    def test_1_agent_port(self):
        self.check_port(self.agent_port)

    def test_2_internal_port_without_client_certificate(self):
        # What any network peer sees: the internal port requires a client certificate, but protocols
        # and suites are negotiated (ServerHello) before that is checked.
        self.check_port(self.internal_port)

    def test_3_internal_port_with_client_certificate(self):
        self.check_port(self.internal_port, ("--certs=" + os.path.join(self.pki, "controller.crt"),
                                             "--pk=" + os.path.join(self.pki, "controller.key")))

    def test_4_no_compression_negotiated(self):
        # sslscan cannot probe compression with Debian's OpenSSL (no zlib): a handshake must at least
        # report none, on both ports.
        for port in (self.agent_port, self.internal_port):
            ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "gateway-ca.crt"))
            ctx.load_cert_chain(os.path.join(self.pki, "controller.crt"), os.path.join(self.pki, "controller.key"))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    self.assertIsNone(t.compression())
                    self.assertIn(t.version(), ("TLSv1.2", "TLSv1.3"))

    def test_4b_resumed_session_keeps_the_intermediate(self):
        """A client that offers to resume (TLS 1.3 ticket, TLS 1.2 session ID) upgrades again. Bug 14:
        a session decrypted from a stateless ticket carried the agent's leaf but not its intermediate,
        and an agent whose certificate comes from an intermediate CA (agent-b) was refused with 401 on
        every resumed connection. The gateway's sessions are stateful (kept with the chain), and kept
        when the client goes away without a close_notify (as here): the second connection resumes, with
        both versions. More cases, with OpenSSL's client: test_tls_resumption.py."""
        for top in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(os.path.join(self.pki, "gateway-ca.crt"))
            ctx.load_cert_chain(os.path.join(self.pki, "agent-b-chain.crt"), os.path.join(self.pki, "agent-b.key"))
            ctx.maximum_version = top
            session, seen = None, []
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", self.agent_port), timeout=10) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost", session=session) as t:
                        t.sendall(b"GET /ws?planeID=pb&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                        head = t.recv(65536).split(b"\r\n")[0].decode()
                        seen.append((t.version(), t.session_reused, head))
                        session = t.session
            self.assertEqual([(r, h) for _, r, h in seen],
                             [(False, "HTTP/1.1 101 Switching Protocols"), (True, "HTTP/1.1 101 Switching Protocols")], seen)

    def test_5_positive_control_sees_legacy_protocols_and_suites(self):
        """The same scan and checks flag a server that offers TLS 1.0 with CBC and anonymous suites."""
        port = free_port()
        srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-quiet",
                                "-cert", os.path.join(self.pki, "server.crt"), "-key", os.path.join(self.pki, "server.key"),
                                "-cipher", "ALL:@SECLEVEL=0", "-tls1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            self.assertTrue(wait_for(listening, 10), "openssl s_server did not start")
            test, xml = run_sslscan(port)
        finally:
            srv.kill()
            srv.wait()
        found = violations(test)
        self.assertIn("protocol TLS 1.0 enabled", found, xml)
        self.assertTrue(any("is not AEAD" in v for v in found), found)
        self.assertTrue(any("strength=anonymous" in v for v in found), found)


if __name__ == "__main__":
    sys.exit(ctest_main.main())  # a skip exits 77 (ctest: Skipped), or 1 with CI=true
