"""Against the real binary: --agent-auth-mode=forwarded-header (upstream PR #4340) behind a
TLS-terminating proxy, with the arguments upstream's Helm chart renders, and --write-status=false.

The "proxy" is this test: a real WebSocket client (Python `websockets`) over TLS without a client
certificate, sending the agent's certificate chain URL-encoded in the configured header, as AWS
ALB (X-Amzn-Mtls-Clientcert) or Envoy (X-Forwarded-Client-Cert, XFCC) do. The gateway trusts the
header only from --agent-auth-trusted-proxies: 127.0.0.1/32 here; 127.0.0.2 is an untrusted source
on the same loopback interface. Each refusal is checked for its status and body, its log line and
its metric."""
import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import unittest
import urllib.parse

import websockets

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from gateway_proc import LogLines, dev_pki_and_planes, metric_sum, plane_yaml, start_gateway, wait_for  # noqa: E402

HANDSHAKES = "cluster_gateway_agent_handshakes_total"
ALB = "X-Amzn-Mtls-Clientcert"
XFCC = "X-Forwarded-Client-Cert"


def chart_args(pki, mode, header=None):
    """The container args of upstream's chart (install/helm/openchoreo-control-plane, PR #4340), as
    rendered with internalMtls on; ports are then overridden to 0 (Go's flags: the last wins)."""
    args = ["--port=8443", "--internal-port=8444", f"--server-cert={pki}/server.crt", f"--server-key={pki}/server.key",
            "--heartbeat-interval=30s", "--heartbeat-timeout=90s", "--internal-mtls=true",
            f"--internal-client-ca-cert={pki}/internal-ca.crt", f"--agent-auth-mode={mode}"]
    if header:
        args.append(f"--agent-auth-forwarded-header={header}")
    return args + ["--log-level=info"]


def ours(planes, *extra):
    return ["--port=0", "--internal-port=0", "--health-port=0", "--bind=127.0.0.1", f"--planes-dir={planes}",
            "--startup-grace=0s", *extra]


def url_encoded_pem(path):
    """The certificate file as AWS ALB forwards it: URL-encoded PEM (Go's url.PathEscape)."""
    with open(path) as f:
        return urllib.parse.quote(f.read(), safe="-_.~$&+,:;=@")


def xfcc_value(cert_path, chain_path=None):
    """An Envoy XFCC element: Hash, Cert (and Chain), Subject."""
    v = f'Hash=0123abcd;Cert="{url_encoded_pem(cert_path)}"'
    if chain_path:
        v += f';Chain="{url_encoded_pem(chain_path)}"'
    return v + ';Subject="CN=shared-ci,O=OpenChoreo"'


class Gateway:
    def __init__(self, cmd):
        self.log = LogLines()
        self.proc, started = start_gateway(cmd, log=self.log)
        self.agent_port, self.internal_port, self.health_port = (
            started["agentPort"], started["internalPort"], started["healthPort"])
        self.started = started

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=10)
        try:
            c.request("GET", "/metrics")
            return c.getresponse().read().decode()
        finally:
            c.close()

    def handshakes(self, reason):
        return metric_sum(self.metrics(), HANDSHAKES, result="rejected", reason=reason)


class Case(unittest.TestCase):
    pki = None

    @classmethod
    def ctx(cls, cert=None):
        c = ssl.create_default_context(cafile=os.path.join(cls.pki, "gateway-ca.crt"))
        if cert:
            c.load_cert_chain(os.path.join(cls.pki, cert + ".crt"), os.path.join(cls.pki, cert + ".key"))
        return c

    @classmethod
    def sock(cls, gw, source):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(20)
        s.bind((source, 0))
        s.connect(("127.0.0.1", gw.agent_port))
        return s

    def upgrade(self, gw, plane, headers=None, cert=None, source="127.0.0.1"):
        """A WebSocket upgrade request; returns (status, body, local address) of a refusal (the
        gateway answers and closes)."""
        with self.sock(gw, source) as s, self.ctx(cert).wrap_socket(s, server_hostname="localhost") as t:
            local = "%s:%d" % t.getsockname()
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            t.sendall((f"GET /ws?planeID={plane}&planeType=dataplane HTTP/1.1\r\nHost: localhost\r\n"
                       "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").encode())
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body.decode(), local

    def assert_refused(self, gw, metric_reason, reason_part, status, body, **kw):
        before = gw.handshakes(metric_reason)
        mark = gw.log.mark()
        got_status, got_body, local = self.upgrade(gw, **kw)
        self.assertEqual((got_status, got_body), (status, body))
        ev = gw.log.wait("agent connection rejected", since=mark, remote=local)
        self.assertTrue(ev, "no rejection logged for " + local)
        self.assertEqual(ev[0]["status"], status)
        self.assertIn(reason_part, ev[0]["reason"])
        self.assertEqual(gw.handshakes(metric_reason), before + 1)
        return ev[0]

    async def agent(self, gw, plane, headers, cert=None):
        """A websockets agent; returns (ws, connectionID) once the gateway logged it connected."""
        s = self.sock(gw, "127.0.0.1")
        local = "%s:%d" % s.getsockname()
        ws = await websockets.connect(f"wss://localhost:{gw.agent_port}/ws?planeID={plane}&planeType=dataplane",
                                      ssl=self.ctx(cert), sock=s, server_hostname="localhost", extra_headers=headers,
                                      ping_interval=None, open_timeout=20)
        ev = await asyncio.to_thread(gw.log.wait, "agent connected successfully", remote=local, timeout=20)
        self.assertTrue(ev, "no 'agent connected successfully' for " + local)
        return ws, ev[0]

    def caller_get(self, gw, path):
        c = http.client.HTTPSConnection("localhost", gw.internal_port, timeout=30, context=self.ctx("controller"))
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    async def proxied(self, gw, ws, plane):
        """A proxied GET through the internal API, answered by the agent `ws`: (status, body)."""
        call = asyncio.ensure_future(asyncio.to_thread(
            self.caller_get, gw, f"/api/proxy/dataplane/{plane}/_cluster/{plane}/k8s/api/v1/namespaces"))
        req = json.loads(await asyncio.wait_for(ws.recv(), 30))
        self.assertEqual((req["method"], req["path"]), ("GET", "/api/v1/namespaces"))
        await ws.send(json.dumps({"requestID": req["requestID"], "statusCode": 200,
                                  "headers": {"Content-Type": ["application/json"]},
                                  "body": "eyJraW5kIjoiTmFtZXNwYWNlTGlzdCJ9"}))  # {"kind":"NamespaceList"}
        return await asyncio.wait_for(call, 40)


class ForwardedHeaderTest(Case):
    """Two gateways with upstream's chart args: AWS ALB's header trusted from 127.0.0.1/32 only, and
    Envoy's XFCC (the default header) with the default trusted ranges."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-auth-")
        d = cls.tmp.name
        cls.pki, cls.planes, _ = dev_pki_and_planes(ROOT, d, [("fwd", "fwd")], "ClusterDataPlane")
        import base64
        with open(os.path.join(cls.pki, "tenant-b-ca.crt"), "rb") as f:
            b_b64 = base64.b64encode(f.read()).decode()
        with open(os.path.join(cls.planes, "fwdb.yaml"), "w") as f:
            f.write(plane_yaml("ClusterDataPlane", "fwdb", "fwdb", b_b64))
        cls.alb = Gateway([BIN, *chart_args(cls.pki, "forwarded-header", ALB),
                           *ours(cls.planes, "--agent-auth-trusted-proxies=127.0.0.1/32")])
        cls.xfcc = None
        try:
            cls.xfcc = Gateway([BIN, *chart_args(cls.pki, "forwarded-header", XFCC),
                                *ours(cls.planes, f"--status-dir={d}/status-xfcc")])
        except BaseException:
            cls.alb.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        for gw in (cls.alb, cls.xfcc):
            if gw:
                gw.stop()
        cls.tmp.cleanup()

    def pem(self, name):
        return os.path.join(self.pki, name)

    def status_file(self, name):
        try:
            with open(os.path.join(self.planes, "status", f"ClusterDataPlane._cluster.{name}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def test_chart_args_start_the_gateway_in_forwarded_header_mode(self):
        self.assertEqual(self.alb.started["agentAuthMode"], "forwarded-header")
        ev = self.alb.log.find("agent authentication using forwarded header")
        self.assertTrue(ev)
        self.assertEqual(ev[0]["header"], ALB)
        self.assertEqual(self.xfcc.log.find("agent authentication using forwarded header")[0]["header"], XFCC)

    def test_alb_header_from_a_trusted_proxy_connects_and_serves(self):
        async def run():
            ws, ev = await self.agent(self.alb, "fwd", {ALB: url_encoded_pem(self.pem("agent-a.crt"))})
            self.assertIn("shared-ci", ev["certificateSubject"])  # agent-a's CN, from the header
            status, body = await self.proxied(self.alb, ws, "fwd")
            self.assertEqual((status, body), (200, b'{"kind":"NamespaceList"}'))
            st = await asyncio.to_thread(wait_for, lambda: (self.status_file("fwd") or {}).get(
                "agentConnection", {}).get("connected"))
            self.assertTrue(st, "status never showed connected")
            self.assertEqual(self.status_file("fwd")["agentConnection"]["message"], "1 agent connected")
            await ws.close()
        asyncio.run(run())

    def test_alb_chain_brings_its_intermediate(self):
        # agent-b is issued by an intermediate; the CR pins tenant B's root. As in the handshake, the
        # intermediates come from what the agent (here: the header) presents.
        async def run():
            ws, _ = await self.agent(self.alb, "fwdb", {ALB: url_encoded_pem(self.pem("agent-b-chain.crt"))})
            await ws.close()
        asyncio.run(run())
        self.assert_refused(self.alb, "not_authorized", "certificate not valid for any CR", 401,
                            "client certificate verification failed: certificate not valid for any CR with planeID 'fwdb'\n",
                            plane="fwdb", headers={ALB: url_encoded_pem(self.pem("agent-b.crt"))})

    def test_header_from_an_untrusted_address_is_401(self):
        ev = self.assert_refused(self.alb, "forwarded_untrusted_source", "not in --agent-auth-trusted-proxies", 401,
                                 "forwarded client certificate not accepted from this address\n",
                                 plane="fwd", headers={ALB: url_encoded_pem(self.pem("agent-a.crt"))}, source="127.0.0.2")
        self.assertIn("from 127.0.0.2", ev["reason"])

    def test_tls_client_certificate_and_header_together_are_401(self):
        self.assert_refused(self.alb, "forwarded_ambiguous", "both a TLS client certificate and", 401,
                            "both a TLS client certificate and a forwarded client certificate were presented\n",
                            plane="fwd", headers={ALB: url_encoded_pem(self.pem("agent-a.crt"))}, cert="agent-a")

    def test_malformed_header_is_401_as_upstream(self):
        ev = self.assert_refused(self.alb, "forwarded_header_malformed", "malformed " + ALB + " header", 401,
                                 "no client certificate presented\n", plane="fwd",
                                 headers={ALB: "-----BEGIN%20CERTIFICATE-----%0Anot-base64%0A-----END%20CERTIFICATE-----"})
        self.assertIn("no certificates found in PEM data", ev["reason"])

    def test_direct_agent_without_the_header_is_401_as_upstream(self):
        ev = self.assert_refused(self.alb, "no_client_certificate", "no " + ALB + " header", 401,
                                 "no client certificate presented\n", plane="fwd", cert="agent-a")
        self.assertIn("a TLS client certificate is not used", ev["reason"])

    def test_forwarded_certificate_of_another_ca_is_verified_like_a_handshake(self):
        self.assert_refused(self.alb, "not_authorized", "certificate not valid for any CR", 401,
                            "client certificate verification failed: certificate not valid for any CR with planeID 'fwd'\n",
                            plane="fwd", headers={ALB: url_encoded_pem(self.pem("rogue-agent.crt"))})

    def test_envoy_xfcc_cert_and_chain(self):
        async def run():
            ws, _ = await self.agent(self.xfcc, "fwd", {XFCC: xfcc_value(self.pem("agent-a.crt"))})
            status, body = await self.proxied(self.xfcc, ws, "fwd")
            self.assertEqual(status, 200, body)
            await ws.close()
            # Chain is preferred over Cert: the rogue Cert is not the one verified.
            ws, _ = await self.agent(self.xfcc, "fwdb", {
                XFCC: xfcc_value(self.pem("rogue-agent.crt"), self.pem("agent-b-chain.crt"))})
            await ws.close()
        asyncio.run(run())
        # The default trusted ranges include loopback; the header name is matched case-insensitively.
        self.assert_refused(self.xfcc, "forwarded_header_malformed", "XFCC header has no Cert or Chain element", 401,
                            "no client certificate presented\n", plane="fwd",
                            headers={XFCC.lower(): 'Hash=abc;Subject="CN=x"'})


class MtlsWithoutStatusTest(Case):
    """--agent-auth-mode=mtls (the chart's default) with --write-status=false: the header means
    nothing, agents with a TLS client certificate work, and no status is written at all, not even
    at shutdown."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cg-nostatus-")
        d = cls.tmp.name
        cls.pki, cls.planes, _ = dev_pki_and_planes(ROOT, d, [("ns1", "ns1")], "ClusterDataPlane")
        cls.status_dir = os.path.join(d, "status")
        cls.gw = Gateway([BIN, *chart_args(cls.pki, "mtls"),
                          *ours(cls.planes, f"--status-dir={cls.status_dir}", "--write-status=false")])

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.tmp.cleanup()

    def test_1_header_is_ignored_in_mtls_mode(self):
        with open(os.path.join(self.pki, "agent-a.crt")) as f:
            pem = urllib.parse.quote(f.read())
        self.assert_refused(self.gw, "no_client_certificate", "no client certificate presented", 401,
                            "no client certificate presented\n", plane="ns1", headers={XFCC: pem})

    def test_2_agents_work_and_no_status_is_written_even_at_shutdown(self):
        self.assertEqual(self.gw.started["writeStatus"], False)
        self.assertTrue(self.gw.log.find("status writing disabled (--write-status=false): upstream's plane "
                                         "controllers write agentConnection"))

        async def run():
            ws, _ = await self.agent(self.gw, "ns1", {}, cert="agent-a")
            status, body = await self.proxied(self.gw, ws, "ns1")
            self.assertEqual(status, 200, body)
            # The internal API's status endpoint (what upstream's controllers poll) still answers.
            status, body = await asyncio.to_thread(self.caller_get, self.gw, "/api/v1/planes/dataplane/ns1/status")
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["connectedAgents"], 1)
            self.gw.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(ws.wait_closed(), 20)
            except asyncio.TimeoutError:
                pass
        asyncio.run(run())
        self.assertEqual(self.gw.proc.wait(timeout=30), 0)
        # A gateway that writes status creates the directory and one file per CR (at the latest when
        # shutdown writes every CR disconnected); this one wrote nothing.
        self.assertFalse(os.path.exists(self.status_dir),
                         os.listdir(self.status_dir) if os.path.exists(self.status_dir) else "")
        self.assertFalse(os.path.exists(os.path.join(self.planes, "status")))


if __name__ == "__main__":
    unittest.main()
