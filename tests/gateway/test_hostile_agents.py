"""Hostile agents against the real cluster-gateway binary (issue 13): replies that break HTTP (a body
on 204/304, huge or too many headers, CR/LF/NUL in header names and values, also in a stream head),
frames for unknown requests with bodies that do not decode, one 16 MiB message made of tiny JSON
values, and members of the wrong type. For every case: the caller's exact answer, the log line with
its reason, the metric where one exists, that the gateway process is alive, and that the bystander
agent (cluster-agent-sim, plane `bystander`) keeps its session and still serves
(GatewayCase.assert_bystander_serves, tests/gateway/test_hostile.py).

Each of these crashed the gateway at d030147 or let an agent forge what the caller reads; the
before/after results are in docs/reliability.md. The hostile agents are Python `websockets`
clients on plane `hostile`; stream-capable ones announce `X-Cluster-Agent-Capabilities:
http-stream/v1` on their upgrade request."""
import asyncio
import base64
import http.client
import json
import sys
import time
import unittest

import websockets

from test_hostile import (PODS, GatewayCase, assert_rss_growth_below, setUpModule,  # noqa: F401 (module fixtures)
                          tearDownModule, tunnel_reply)
from gateway_proc import proc_status_kib  # noqa: E402 (on sys.path once test_hostile is imported)

DROPPED = "cluster_gateway_agent_frames_dropped_total"
EXCEPTIONS = "cluster_gateway_handler_exceptions_total"
MALFORMED_502 = b"proxy request failed: malformed response from agent: "
HOSTILE_PROXY = "/api/proxy/dataplane/hostile/_cluster/hostile/k8s"
WATCH = HOSTILE_PROXY + PODS + "?watch=true"
TEXT = {"Content-Type": ["text/plain; charset=utf-8"]}
# Reasons the gateway gives (session/tunnel.cpp decode_tunnel_response).
OVER_CAPS = "response headers exceed 65536 bytes, 512 fields or a name of 8192 bytes"
CONTROL_IN_X = "response header X has a control character (CR, LF, NUL) in its value"
NOT_A_TOKEN = "response header name is not an HTTP token"


def b64(data):
    return base64.b64encode(data).decode()


class AgentCase(GatewayCase):
    """GatewayCase with a caller that keeps its connection (http.client), stream-capable agents and
    the checks for a refused reply."""

    def caller(self):
        return http.client.HTTPSConnection("localhost", self.internal_port, timeout=40,
                                           context=self.ssl_ctx("controller"))

    @staticmethod
    def get(conn, path, request_id):
        """GET on `conn`; returns (status, [(header, value)], body)."""
        conn.request("GET", path, headers={"X-Request-ID": request_id})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()

    async def exchange(self, ws, respond, request_id, path=HOSTILE_PROXY + PODS, conn=None):
        """A caller sends GET `path` (on `conn`, or on a connection of its own); the agent `ws` gets
        the request and `respond(req)` (a coroutine) answers. Returns (status, headers, body, req).
        Close chunks the gateway sends meanwhile are kept in `ws.closes`."""
        own = conn is None
        conn = conn or self.caller()
        try:
            call = asyncio.ensure_future(asyncio.to_thread(self.get, conn, path, request_id))
            while True:
                req = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if not req.get("isClose"):
                    break
                # The gateway's close chunk for a stream it ended (after a malformed head, too).
                ws.closes = getattr(ws, "closes", []) + [req]
            self.assertEqual(req["gatewayRequestID"], request_id)
            await respond(req)
            status, headers, body = await asyncio.wait_for(call, 40)
        finally:
            if own:
                conn.close()
        return status, headers, body, req

    async def next_frame(self, ws, match, timeout=10):
        """The next frame from the gateway for which `match(frame)` holds (a close chunk that
        `exchange` already set aside in `ws.closes` counts); fails after `timeout` seconds."""
        for frame in getattr(ws, "closes", []):
            if match(frame):
                ws.closes.remove(frame)
                return frame
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            self.assertGreater(left, 0, "no matching frame from the gateway")
            frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            if match(frame):
                return frame

    async def capable_agent(self, expect=1):
        """Like GatewayCase.agent(), announcing http-stream/v1 (watches are sent only to such agents)."""
        url = f"wss://localhost:{self.agent_port}/ws?planeID=hostile&planeType=dataplane"
        ws = await websockets.connect(url, ssl=self.ssl_ctx("agent-a"), ping_interval=None, max_size=None,
                                      open_timeout=30, close_timeout=10,
                                      extra_headers={"X-Cluster-Agent-Capabilities": "http-stream/v1"})
        remote = f"127.0.0.1:{ws.local_address[1]}"
        ev = await asyncio.to_thread(self.log.wait, "agent connected successfully", remote=remote, timeout=20)
        self.assertTrue(ev, "no 'agent connected successfully' for " + remote)
        self.assertIn("http-stream/v1", ev[0].get("capabilities", []))
        ws.cid = ev[0]["connectionID"]
        await asyncio.to_thread(self.wait_metric, "cluster_gateway_agent_sessions", expect,
                                plane_type="dataplane", plane_id="hostile")
        return ws

    async def assert_refused_reply(self, ws, reply_of, name, reason, conn=None):
        """The agent answers a proxied request with `reply_of(req)` (a dict): the caller gets 502
        `proxy request failed: malformed response from agent: <reason>`, the gateway logs "malformed
        HTTP tunnel response" with that reason, frames_dropped{reason="malformed_response"} moves by
        exactly 1 and the process is alive. Returns the caller's headers."""
        m0 = await asyncio.to_thread(self.metric, DROPPED, reason="malformed_response")
        mark = self.log.mark()
        status, headers, body, req = await self.exchange(ws, lambda req: ws.send(json.dumps(reply_of(req))),
                                                         f"refused-{name}", conn=conn)
        self.assertEqual(status, 502, f"{name}: {body[:300]!r}")
        self.assertTrue(body.startswith(MALFORMED_502), f"{name}: {body[:300]!r}")
        ev = await asyncio.to_thread(self.log.wait, "malformed HTTP tunnel response", since=mark,
                                     requestID=req["requestID"])
        self.assertTrue(ev, f"{name}: no 'malformed HTTP tunnel response' line")
        self.assertEqual(ev[0]["level"], "warning")
        self.assertEqual((ev[0]["connectionID"], ev[0]["planeID"]), (ws.cid, "hostile"))
        self.assertEqual(ev[0]["reason"], reason)
        self.assertEqual(body, MALFORMED_502 + reason.encode() + b"\n")
        await asyncio.to_thread(self.wait_metric, DROPPED, m0 + 1, reason="malformed_response")
        self.assertIsNone(self.proc.poll(), f"{name}: the gateway exited")
        return headers

    async def assert_session_serves(self, ws, name):
        """The hostile agent's own session survived and still answers."""
        self.assertTrue(ws.open, f"{name}: the agent's session was closed")
        status, _, body, _ = await self.exchange(ws, lambda req: ws.send(tunnel_reply(req, body=b"after " + name.encode())),
                                                 f"after-{name}")
        self.assertEqual((status, body), (200, b"after " + name.encode()))


class HostileAgentTest(AgentCase):

    # 1. A body on 204/304 (Beast's prepare_payload threw std::invalid_argument: terminate).
    def test_1_body_on_204_and_304_gets_502(self):
        async def run():
            ws = await self.agent()
            for status in (204, 304):
                with self.subTest(status=status):
                    await self.assert_refused_reply(
                        ws, lambda req, s=status: json.loads(tunnel_reply(req, status=s, body=b"not allowed")), f"{status}-body",
                        f"status {status} must not carry a body")
            await self.assert_session_serves(ws, "204-304")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # 2. Header name or value of 64 KiB (std::length_error in Beast: terminate) and 600 headers.
    def test_2_huge_and_too_many_headers_get_502(self):
        cases = {
            "name-64KiB": {"N" * 65536: ["v"]},
            "value-64KiB": {"X-Big": ["v" * 65536]},
            "600-headers": {f"X-H-{i:03d}": ["v"] for i in range(600)},
        }

        async def run():
            ws = await self.agent()
            for name, headers in cases.items():
                with self.subTest(name):
                    await self.assert_refused_reply(
                        ws, lambda req, h=headers: {"requestID": req["requestID"], "statusCode": 200, "headers": h,
                                                    "body": b64(b"x")}, name, OVER_CAPS)
            await self.assert_session_serves(ws, "huge-headers")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # 3. Response splitting: CR/LF in a header value or name, NUL in a value. On a keep-alive caller
    # connection an agent could forge a second response; the next request must get its own answer.
    def test_3_response_splitting_gets_502_and_the_next_response_is_genuine(self):
        cases = {
            "crlf-in-value": ({"X": ["a\r\nSet-Cookie: evil=1"]}, CONTROL_IN_X),
            "crlf-in-name": ({"X\r\nSet-Cookie": ["evil=1"]}, NOT_A_TOKEN),
            "nul-in-value": ({"X": ["a\x00b"]}, CONTROL_IN_X),
            "forged-second-response": ({
                "X": ["a\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nX-Forged: yes\r\nContent-Length: 6\r\n\r\nforged"]},
                CONTROL_IN_X),
        }

        async def run():
            ws = await self.agent()
            conn = self.caller()  # one keep-alive connection for every request of this case
            try:
                for name, (headers, reason) in cases.items():
                    with self.subTest(name):
                        got = await self.assert_refused_reply(
                            ws, lambda req, h=headers: {"requestID": req["requestID"], "statusCode": 200,
                                                        "headers": dict(TEXT, **h), "body": b64(b"split")}, name, reason,
                            conn=conn)
                        names = [k.lower() for k, _ in got]
                        self.assertNotIn("set-cookie", names)
                        self.assertNotIn("x", names)
                        self.assertIsNotNone(conn.sock, "the gateway closed the keep-alive connection after the 502")
                        port = conn.sock.getsockname()[1]
                        # The next request on the same connection gets one correct response.
                        status, got, body, _ = await self.exchange(
                            ws, lambda req, n=name: ws.send(tunnel_reply(req, body=f"genuine after {n}".encode())),
                            f"next-{name}", conn=conn)
                        self.assertEqual((status, body), (200, f"genuine after {name}".encode()))
                        self.assertNotIn("x-forged", [k.lower() for k, _ in got])
                        self.assertEqual(conn.sock.getsockname()[1], port, "the caller's connection was not reused")
            finally:
                conn.close()
            await self.assert_session_serves(ws, "splitting")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # 4. The same bad heads on a stream (watch=true) from a stream-capable agent.
    def test_4_bad_stream_heads_get_502(self):
        heads = {
            "name-64KiB": ({"statusCode": 200, "headers": {"N" * 65536: ["v"]}}, OVER_CAPS),
            "value-64KiB": ({"statusCode": 200, "headers": {"X-Big": ["v" * 65536]}}, OVER_CAPS),
            "crlf-in-value": ({"statusCode": 200, "headers": {"X": ["a\r\nSet-Cookie: evil=1"]}}, CONTROL_IN_X),
            "nul-in-value": ({"statusCode": 200, "headers": {"X": ["a\x00b"]}}, CONTROL_IN_X),
            "204-stream-head": ({"statusCode": 204, "headers": TEXT}, "status 204 cannot start a stream"),
        }

        async def run():
            ws = await self.capable_agent()
            for name, (head, reason) in heads.items():
                with self.subTest(name):
                    ended0 = await asyncio.to_thread(self.metric, "cluster_gateway_tunnel_streams_ended_total",
                                                     kind="http", reason="agent_error")
                    mark = self.log.mark()
                    status, got, body, req = await self.exchange(
                        ws, lambda req, h=head: ws.send(json.dumps(dict(h, requestID=req["requestID"], stream=True))),
                        f"stream-{name}", path=WATCH)
                    self.assertTrue(req.get("stream"), req)
                    self.assertEqual(status, 502, f"{name}: {body[:300]!r}")
                    self.assertEqual(body, MALFORMED_502 + reason.encode() + b"\n")
                    self.assertNotIn("set-cookie", [k.lower() for k, _ in got])
                    ev = await asyncio.to_thread(self.log.wait, "HTTP stream request failed", since=mark,
                                                 requestID=f"stream-{name}")
                    self.assertTrue(ev, f"{name}: no 'HTTP stream request failed' line")
                    self.assertEqual((ev[0]["statusCode"], ev[0]["hopRequestID"], ev[0]["connectionID"]),
                                     (502, req["requestID"], ws.cid))
                    self.assertEqual(ev[0]["reason"] + "\n", body.decode())
                    # The agent is told to stop the stream (docs/protocol.md "Cancel").
                    close = await self.next_frame(ws, lambda f, rid=req["requestID"]: f.get("requestID") == rid)
                    self.assertEqual(close, {"requestID": req["requestID"], "data": None, "isClose": True})
                    await asyncio.to_thread(self.wait_metric, "cluster_gateway_tunnel_streams_ended_total", ended0 + 1,
                                            kind="http", reason="agent_error")
                    self.assertIsNone(self.proc.poll(), f"{name}: the gateway exited")
            await self.assert_session_serves(ws, "stream-heads")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # 5. The request id is looked up before the body is decoded.
    def test_5_unknown_request_with_bad_base64_is_dropped_as_unknown(self):
        async def run():
            ws = await self.agent()
            unk0 = await asyncio.to_thread(self.metric, DROPPED, reason="unknown_request")
            bad0 = await asyncio.to_thread(self.metric, DROPPED, reason="malformed_response")
            mark = self.log.mark()
            await ws.send(json.dumps({"requestID": "no-such-request-b64", "statusCode": 200, "body": "!!not base64!!"}))
            ev = await asyncio.to_thread(self.log.wait, "received HTTP tunnel response for unknown request", since=mark,
                                         requestID="no-such-request-b64", connectionID=ws.cid)
            self.assertTrue(ev)
            await asyncio.to_thread(self.wait_metric, DROPPED, unk0 + 1, reason="unknown_request")
            self.assertEqual(await asyncio.to_thread(self.metric, DROPPED, reason="malformed_response"), bad0)
            self.assertEqual(self.log.find("malformed HTTP tunnel response", since=mark), [],
                             "the body was decoded before the request id was looked up")
            await self.assert_session_serves(ws, "unknown-b64")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()

    # 7. Members of the wrong type reached nlohmann's value()/get<>, which threw out of an io handler.
    def test_7_wrong_typed_members_do_not_crash(self):
        async def run():
            ws = await self.capable_agent()
            exc0 = await asyncio.to_thread(self.metric, EXCEPTIONS)
            mark = self.log.mark()

            async def is_close_yes(req):  # a stream chunk with "isClose":"yes": data, not a close
                rid = req["requestID"]
                await ws.send(json.dumps({"requestID": rid, "statusCode": 200, "headers": TEXT, "stream": True}))
                await ws.send(json.dumps({"requestID": rid, "data": b64(b"event-1\n"), "isClose": "yes"}))
                await ws.send(json.dumps({"requestID": rid, "data": None, "isClose": True}))
            status, _, body, _ = await self.exchange(ws, is_close_yes, "isclose-yes", path=WATCH)
            self.assertEqual((status, body), (200, b"event-1\n"))

            async def stream_yes(req):  # "stream":"yes" is not true: a complete answer, not a head
                await ws.send(json.dumps({"requestID": req["requestID"], "statusCode": 200, "headers": TEXT,
                                          "stream": "yes", "body": b64(b"complete")}))
            status, _, body, _ = await self.exchange(ws, stream_yes, "stream-yes", path=WATCH)
            self.assertEqual((status, body), (200, b"complete"))

            async def error_message_42(req):  # "error" is read but not used for the answer
                await ws.send(json.dumps({"requestID": req["requestID"], "statusCode": 200, "headers": TEXT,
                                          "body": b64(b"with error"), "error": {"message": 42}}))
            status, _, body, _ = await self.exchange(ws, error_message_42, "error-message-42")
            self.assertEqual((status, body), (200, b"with error"))

            self.assertEqual(await asyncio.to_thread(self.metric, EXCEPTIONS), exc0, "an exception was caught")
            self.assertEqual(self.log.find("agent frame handling failed; closing the agent connection", since=mark), [])
            await self.assert_session_serves(ws, "wrong-types")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()


MESSAGE_CAP = 16 * 1024 * 1024


def tiny_values_message(request_id, unit, size=MESSAGE_CAP):
    """A response of exactly `size` bytes whose member "x" is an array of millions of tiny JSON
    values (`unit` repeated, e.g. "[],0,": 6.7 million values in 16 MiB), before its requestID."""
    head = '{"x":['
    tail = (f'0],"requestID":{json.dumps(request_id)},"statusCode":200,"headers":{json.dumps(TEXT)},'
            f'"body":"{b64(b"survived")}"}}')
    text = head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail
    return text[:-1] + " " * (size - len(text)) + "}"


class MemoryAmplificationTest(AgentCase):
    """6. One 16 MiB message of tiny JSON values for a pending request. The gateway at d030147 built
    a DOM of it: empty arrays and numbers took hundreds of MiB; empty objects made nlohmann's
    callback parser quadratic (it scans the parent array at every object's end), so an io thread
    was blocked for minutes and the request timed out. The streaming parse keeps the peak near the
    message size: under 64 MiB of growth for a 16 MiB message, and the request is answered."""
    extra_args = ("--max-message-size", str(MESSAGE_CAP))

    def test_6_16mib_of_tiny_values_costs_little_memory(self):
        async def run():
            ws = await self.agent()
            await asyncio.sleep(1.0)  # let the registration and status writes settle
            for name, unit in (("arrays-and-numbers", "[],0,"), ("arrays-objects-numbers", "[],[],{},0,")):
                with self.subTest(name):
                    with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                        f.write("5")  # resets VmHWM to the current RSS
                    rss0 = proc_status_kib(self.pid)
                    t0 = time.monotonic()

                    async def respond(req, unit=unit):
                        text = tiny_values_message(req["requestID"], unit)
                        self.assertEqual(len(text), MESSAGE_CAP)
                        await ws.send(text)
                    status, _, body, _ = await self.exchange(ws, respond, f"tiny-values-{name}")
                    took = time.monotonic() - t0
                    peak = proc_status_kib(self.pid, "VmHWM")
                    print(f"\n  16 MiB of {unit!r}: answered in {took:.2f}s; RSS {rss0} KiB, peak {peak} KiB "
                          f"(+{(peak - rss0) / 1024:.1f} MiB)", file=sys.stderr)
                    self.assertEqual((status, body), (200, b"survived"))
                    assert_rss_growth_below(self, rss0, peak, 64 * 1024)
            await self.assert_session_serves(ws, "tiny-values")
            await ws.close()
        asyncio.run(run())
        self.assert_bystander_serves()


if __name__ == "__main__":
    unittest.main()
