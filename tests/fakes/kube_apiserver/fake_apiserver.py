#!/usr/bin/python3
"""A fake Kubernetes API server for tests: the six OpenChoreo plane kinds plus core v1 Secrets and
Namespaces, coordination.k8s.io/v1 Leases and discovery.k8s.io/v1 EndpointSlices, with real-server semantics for resourceVersions, generation, the /status subresource,
patches, watches (bookmarks, 410 Gone), Status error bodies, plus fault injection under /fake/.

Run with the Debian interpreter (it needs python3-aiohttp and python3-yaml):

  /usr/bin/python3 tests/fakes/kube_apiserver/fake_apiserver.py --port 0 --cert C --key K --token T \
      [--plain] [--port-file F] [--seed-dir DIR] [--write-kubeconfig PATH --ca CA]

It prints {"port": N, ...} as one JSON line on stdout once it accepts connections, and exits cleanly on
SIGTERM. See README.md for the control API.
"""
import argparse
import asyncio
import base64
import binascii
import datetime
import glob
import json
import logging
import os
import random
import re
import signal
import socket
import ssl
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import yaml  # noqa: E402
from aiohttp import web  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

import kube_protobuf  # noqa: E402
import kube_store as ks  # noqa: E402
from kubeconfig import write_kubeconfig  # noqa: E402

log = logging.getLogger("fake-apiserver")

TRUE = ("true", "1", "True")
BODY_LOG_LIMIT = 64 * 1024  # bytes of a request body kept in the request log (--log-bodies)
AGG_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType",
    422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, like sigs.k8s.io/yaml does."""


YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


def load_yaml_docs(text):
    return [d for d in yaml.load_all(text, Loader=YamlLoader) if d is not None]


def human_age(created):
    try:
        secs = int((datetime.datetime.now(datetime.timezone.utc) - ks.parse_rfc3339(created)).total_seconds())
    except (ValueError, TypeError):
        return "<unknown>"
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    m = secs // 60
    if m < 10:
        return f"{m}m{secs % 60}s" if secs % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def list_with_more(items, limit=3):
    """kubectl's printers' listWithMoreString: the first 3, "+ N more...", "<unset>" when empty."""
    s = ",".join(items[:limit])
    if len(items) > limit:
        return f"{s} + {len(items) - limit} more..."
    return s or "<unset>"


# ---------------------------------------------------------------------------------------------
# Request classification (a small RequestInfo)


class ReqInfo:
    def __init__(self):
        self.kind = "other"  # resource | discovery | other
        self.verb = ""
        self.rt = None
        self.ns = None
        self.name = None
        self.sub = None
        self.watch = False
        self.doc = None  # discovery document id

    def as_log(self):
        return {"verb": self.verb, "resource": self.rt.plural if self.rt else "", "subresource": self.sub or "",
                "namespace": self.ns or "", "name": self.name or "", "watch": self.watch}


def classify(method, path, query):
    info = ReqInfo()
    segs = [s for s in path.split("/") if s]
    if not segs:
        info.doc = "root"
        info.kind = "discovery"
        return info
    if segs[0] == "api":
        if len(segs) == 1:
            info.kind, info.doc = "discovery", "api"
            return info
        group, version, rest = "", segs[1], segs[2:]
    elif segs[0] == "apis":
        if len(segs) == 1:
            info.kind, info.doc = "discovery", "apis"
            return info
        if len(segs) == 2:
            info.kind, info.doc = "discovery", ("group", segs[1])
            return info
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        info.doc = "/".join(segs)
        return info
    if not rest:
        info.kind, info.doc = "discovery", ("resources", group, version)
        return info
    info.kind = "resource"
    if rest[0] == "watch":
        info.watch = True
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
        info.ns = rest[1]
        rest = rest[2:]
    if not rest or len(rest) > 3:
        info.kind = "notfound"
        return info
    info.rt = ks.lookup(group, version, rest[0])
    info.name = rest[1] if len(rest) > 1 else None
    info.sub = rest[2] if len(rest) > 2 else None
    if query.get("watch") in TRUE:
        info.watch = True
    if info.rt is None or (info.ns is not None and not info.rt.namespaced) or \
            (info.rt.namespaced and info.name is not None and info.ns is None) or \
            (info.sub is not None and not (info.sub == "status" and info.rt.has_status)):
        info.kind = "notfound"
        return info
    named = info.name is not None
    verbs = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create", ("PUT", True): "update",
             ("PATCH", True): "patch", ("DELETE", True): "delete", ("DELETE", False): "deletecollection"}
    info.verb = verbs.get((method, named), "")
    if info.watch:
        info.verb = "watch" if method == "GET" else ""
    return info


# ---------------------------------------------------------------------------------------------
# Faults and the request log


class FaultRule:
    _next = 1

    def __init__(self, spec):
        self.id = FaultRule._next
        FaultRule._next += 1
        self.match = spec.get("match") or {}
        self.code = spec.get("code")
        self.delay = float(spec.get("delay", spec.get("seconds", 0)) or 0)
        self.retry_after = spec.get("retryAfter")
        self.count = int(spec["count"]) if spec.get("count") is not None else None
        self.until = time.monotonic() + float(spec["duration"]) if spec.get("duration") is not None else None
        self.message = spec.get("message")
        self.as_watch_event = bool(spec.get("asWatchEvent"))
        self.hits = 0
        if self.code is not None:
            self.code = int(self.code)
        # Jitter: only a `fraction` of the matching requests is hit, each with a code drawn from `codes`,
        # both decided by a random generator seeded with `seed` (reproducible for a sequential client).
        self.fraction = float(spec["fraction"]) if spec.get("fraction") is not None else None
        self.codes = [int(c) for c in spec.get("codes") or []]
        self.seed = spec.get("seed")
        self.rng = random.Random(self.seed)
        self.passed = 0  # matching requests the fraction let through

    def draw(self):
        """For a matching request: the code to answer with, or None to let it through (jitter)."""
        if self.fraction is not None and self.rng.random() >= self.fraction:
            self.passed += 1
            return None
        if self.codes:
            return self.rng.choice(self.codes)
        return self.code

    def retry_after_for(self, code):
        """Jitter rules send Retry-After only with 429 and 503 (a 500 has none); others with any code."""
        if self.codes and code not in (429, 503):
            return None
        return self.retry_after

    def active(self):
        return (self.count is None or self.count > 0) and (self.until is None or time.monotonic() < self.until)

    def matches(self, method, path, info, request):
        for k, want in self.match.items():
            if k == "method":
                wants = [want] if isinstance(want, str) else want
                if method.upper() not in [w.upper() for w in wants]:
                    return False
            elif k == "path":
                if not re.search(want, path):
                    return False
            elif k == "verb":
                if info.verb not in ([want] if isinstance(want, str) else want):
                    return False
            elif k == "resource":
                if (info.rt.plural if info.rt else "") not in ([want] if isinstance(want, str) else want):
                    return False
            elif k == "subresource":
                if (info.sub or "") != want:
                    return False
            elif k == "namespace":
                if (info.ns or "") != want:
                    return False
            elif k == "name":
                if (info.name or "") != want:
                    return False
            elif k == "watch":
                if info.watch != bool(want):
                    return False
            elif k == "userAgent":
                if not re.search(want, request.headers.get("User-Agent", "")):
                    return False
            elif k == "contentType":
                if request.content_type != want:
                    return False
        return True

    def describe(self):
        d = {"id": self.id, "match": self.match, "hits": self.hits}
        if self.code is not None:
            d["code"] = self.code
        if self.delay:
            d["delay"] = self.delay
        if self.retry_after is not None:
            d["retryAfter"] = self.retry_after
        if self.count is not None:
            d["remaining"] = self.count
        if self.until is not None:
            d["remainingSeconds"] = max(0.0, round(self.until - time.monotonic(), 3))
        if self.as_watch_event:
            d["asWatchEvent"] = True
        if self.fraction is not None:
            d.update(fraction=self.fraction, passed=self.passed)
        if self.codes:
            d["codes"] = self.codes
        if self.seed is not None:
            d["seed"] = self.seed
        return d


def fault_error(rule, info, code=None):
    code = rule.code if code is None else code
    retry_after = rule.retry_after_for(code)
    reason = REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    rt, name = info.rt, info.name or ""
    headers = {}
    details = None
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
        details = {"retryAfterSeconds": int(retry_after)}
    if code == 409 and rt is not None:
        err = ks.conflict(rt, name)
        err.headers = headers
        if rule.message:
            err.message = rule.message
        return err
    if code == 429:
        ra = int(retry_after if retry_after is not None else 1)
        return ks.ApiError(429, "TooManyRequests", rule.message or "Too many requests, please try again later.",
                           {"retryAfterSeconds": ra}, {"Retry-After": str(ra)})
    if code == 404 and rt is not None:
        err = ks.not_found(rt, name)
        err.headers = headers
        return err
    if code == 403 and rt is not None:
        msg = rule.message or (f'{rt.group_resource} "{name}" is forbidden: User "system:serviceaccount:openchoreo:'
                               f'cluster-gateway" cannot {info.verb} resource "{rt.plural}' + (f'/{info.sub}' if info.sub else '') +
                               f'" in API group "{rt.group}"' + (f' in the namespace "{info.ns}"' if info.ns else " at the cluster scope"))
        return ks.ApiError(403, "Forbidden", msg, {"name": name, "group": rt.group, "kind": rt.plural}, headers)
    if code == 500:
        msg = rule.message or "injected fault"
        return ks.ApiError(500, "InternalError", f"Internal error occurred: {msg}", {"causes": [{"message": msg}], **(details or {})}, headers)
    if code == 504:
        return ks.ApiError(504, "Timeout", rule.message or "the server was unable to return a response in the time allotted, "
                           "but may still be processing the request", details or {}, headers)
    if code == 503:
        return ks.ApiError(503, "ServiceUnavailable", rule.message or "the server is currently unable to handle the request",
                           details, headers)
    return ks.ApiError(code, reason, rule.message or f"injected {code}", details, headers)


# ---------------------------------------------------------------------------------------------
# Watches


DROP_CLOSE = object()
DROP_ABORT = object()
STALL = object()  # wakes a watch up to notice that it was stalled


class Watcher:
    _next = 1

    def __init__(self, info, lsel, fsel, query):
        self.id = Watcher._next
        Watcher._next += 1
        self.rt, self.ns = info.rt, info.ns
        self.lsel, self.fsel = lsel, fsel
        self.queue = asyncio.Queue()
        self.query = dict(query)
        self.started = ks.now_rfc3339()
        self.sent = 0
        self.stalled = False  # sends nothing more (no events, no bookmarks, no end) until dropped

    def _match(self, obj):
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.ns is not None and meta.get("namespace") != self.ns:
            return False
        return self.lsel(meta.get("labels") or {}) and self.fsel(obj)

    def translate(self, ev):
        """The event this watcher sees for a store event (selector transitions become ADDED/DELETED)."""
        if ev.rt is not self.rt:
            return None
        cur, prev = self._match(ev.obj), self._match(ev.prev)
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if cur else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if cur or prev else None
        if cur and prev:
            return ("MODIFIED", ev.obj)
        if cur:
            return ("ADDED", ev.obj)
        if prev:
            old = dict(ev.prev)
            old["metadata"] = dict(old["metadata"], resourceVersion=str(ev.rv))
            return ("DELETED", old)
        return None

    def describe(self):
        return {"id": self.id, "resource": self.rt.plural, "namespace": self.ns or "", "since": self.started,
                "query": self.query, "eventsSent": self.sent, "stalled": self.stalled}


class WatchHub:
    def __init__(self, store):
        self.watchers = set()
        store.listeners.append(self.dispatch)

    def dispatch(self, ev):
        for w in list(self.watchers):
            t = w.translate(ev)
            if t is not None:
                w.queue.put_nowait(t)

    def drop(self, mode="close", resource=None):
        n = 0
        for w in list(self.watchers):
            if resource and w.rt.plural != resource:
                continue
            w.queue.put_nowait(DROP_ABORT if mode == "abort" else DROP_CLOSE)
            n += 1
        return n

    def stall(self, resource=None):
        n = 0
        for w in list(self.watchers):
            if resource and w.rt.plural != resource:
                continue
            if not w.stalled:
                w.stalled = True
                w.queue.put_nowait(STALL)
                n += 1
        return n


class Conn:
    """A client connection, for the request log and the idle keep-alive close."""
    _next = 1

    def __init__(self, transport):
        self.id = Conn._next
        Conn._next += 1
        self.transport = transport
        self.served = 0      # requests answered on it
        self.busy = 0        # requests being handled
        self.last_done = 0.0  # loop time the last request was handled
        self.timer = None    # the idle close


def encode_continue(rv, start):
    """A continue token like the real one: base64url (no padding) of {"v","rv","start"}."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token):
    """(start key, rv) of a continue token; ApiError 400 like the real server when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        c = json.loads(raw)
        if not isinstance(c, dict):
            raise ValueError("not an object")
    except (ValueError, binascii.Error) as e:
        raise ks.bad_request(f"invalid continue token: continue key is not valid: {e}")
    if c.get("v") != "meta.k8s.io/v1":
        raise ks.bad_request("invalid continue token: continue key is not valid: server does not recognize this encoded key")
    rv, start = c.get("rv"), c.get("start")
    if not isinstance(rv, int) or rv == 0:
        raise ks.bad_request("invalid continue token: continue key is not valid: incorrect encoded start "
                             "resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start:
        raise ks.bad_request("invalid continue token: continue key is not valid: encoded start key empty "
                             "(version meta.k8s.io/v1)")
    return start, rv


CONTINUE_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. You can start a "
                    "new list without the continue parameter, or use the continue token in this response to retrieve "
                    "the remainder of the results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time the first chunk was "
                    "returned and now may show up in the list.")


# ---------------------------------------------------------------------------------------------
# The server


class FakeApiServer:
    def __init__(self, args):
        self.args = args
        self.store = ks.Store(history_size=args.history, initial_rv=args.initial_rv,
                              status_schema=not args.no_status_schema, lenient_smp=args.lenient_smp)
        self.hub = WatchHub(self.store)
        self.faults = [FaultRule(json.loads(spec)) for spec in (args.fault or [])]
        self.requests = []
        self.log_bodies = bool(args.log_bodies)
        self.bookmark_interval = args.bookmark_interval
        self.address = "127.0.0.1:0"
        # Rude modes (README: "Rude modes"): watch chunking, stalled watches, idle keep-alive close.
        self.chunking = self._chunking_defaults()
        self.stall_new = []  # [{"resource": plural or None, "remaining": n}]: the next watches stall
        self.idle_timeout = float(args.idle_timeout or 0)
        self.idle_close_delay = float(args.idle_close_delay or 0)
        self.conns = {}  # id(transport) -> Conn
        self.counters = {"idleClosed": 0, "idleRaced": 0}
        self.seed_docs = []
        for d in args.seed_dir or []:
            self.seed_docs.extend(self._read_seed_dir(d))
        for f in args.seed or []:
            self.seed_docs.extend(self._read_seed_file(f))
        self._seed()

    # -- seeding -------------------------------------------------------------------------------

    def _read_seed_file(self, path):
        with open(path) as f:
            text = f.read()
        if path.endswith(".json"):
            docs = [json.loads(text)]
        else:
            docs = load_yaml_docs(text)
        out = []
        for d in docs:
            if isinstance(d, dict) and d.get("kind", "").endswith("List") and isinstance(d.get("items"), list):
                out.extend(d["items"])
            elif isinstance(d, dict):
                out.append(d)
        return out

    def _read_seed_dir(self, d):
        out = []
        for path in sorted(glob.glob(os.path.join(d, "*"))):
            if path.endswith((".yaml", ".yml", ".json")):
                out.extend(self._read_seed_file(path))
        return out

    def _seed(self):
        opts = ks.WriteOptions("fake-apiserver-seed")
        docs = sorted(self.seed_docs, key=lambda d: 0 if d.get("kind") == "Namespace" else 1)
        for d in docs:
            rt = ks.BY_KIND.get((d.get("apiVersion"), d.get("kind")))
            if rt is None:
                raise SystemExit(f"seed: unsupported object {d.get('apiVersion')}/{d.get('kind')}")
            ns = (d.get("metadata") or {}).get("namespace") or "default" if rt.namespaced else None
            if ns and ("", ns) not in self.store.objects[ks.NAMESPACES.key]:
                self.store.create(ks.NAMESPACES, None, {"metadata": {"name": ns}}, opts)
            if rt is ks.NAMESPACES and ("", d["metadata"]["name"]) in self.store.objects[rt.key]:
                continue
            self.store.create(rt, ns, d, opts, keep_status=True)

    def reset(self):
        self.hub.drop("close")
        self.faults.clear()
        self.requests.clear()
        self.bookmark_interval = self.args.bookmark_interval
        self.log_bodies = bool(self.args.log_bodies)
        self.chunking = self._chunking_defaults()
        self.stall_new.clear()
        self.idle_timeout = float(self.args.idle_timeout or 0)
        self.idle_close_delay = float(self.args.idle_close_delay or 0)
        self.store.clear()
        self._seed()

    # -- responses -----------------------------------------------------------------------------

    def respond(self, obj, status=200, headers=None, content_type="application/json", warnings=()):
        h = CIMultiDict()
        h["Content-Type"] = content_type
        h["Audit-Id"] = str(uuid.uuid4())
        h["Cache-Control"] = "no-cache, private"
        for k, v in (headers or {}).items():
            h[k] = v
        for w in warnings:  # a quoted-string (RFC 9110): client-go ignores a header it cannot parse
            text = w.replace("\\", "\\\\").replace('"', '\\"')
            h.add("Warning", f'299 - "{text}"')
        body = json.dumps(obj, separators=(",", ":")) + "\n"
        return web.Response(body=body.encode(), status=status, headers=h)

    def error(self, err):
        return self.respond(err.status(), err.code, err.headers)

    def log_request(self, request, info, status, started):
        if len(self.requests) >= self.args.request_log_limit:
            del self.requests[: len(self.requests) // 2]
        e = {
            "time": ks.now_rfc3339(),
            "receivedAt": request.get("received_at", time.time()),
            "method": request.method,
            "path": request.path,
            "query": {k: v for k, v in request.query.items()},
            "rawQuery": request.query_string,
            "contentType": request.headers.get("Content-Type", ""),
            "status": status,
            "userAgent": request.headers.get("User-Agent", ""),
            "durationMs": round((time.monotonic() - started) * 1000, 1),
        }
        conn = request.get("conn")
        if conn is not None:
            e["connection"] = conn.id                 # the client connection (same id: kept alive)
            e["connectionRequest"] = request["conn_seq"]  # 1 for the first request on it
        if request.get("closed_idle"):
            e["closedIdle"] = True  # no answer: the connection was closed as idle (see idleCloseDelay)
        e.update(info.as_log())
        if request.get("logged_body") is not None:
            e["body"] = request["logged_body"]
        self.requests.append(e)

    # -- entry point ---------------------------------------------------------------------------

    # -- connections: the idle keep-alive close ---------------------------------------------------

    def _conn_begin(self, request):
        """Registers the request on its connection; True when it must be dropped: it arrived on a
        kept-alive connection that had been idle for idleTimeout already (its close is on the way)."""
        tr = request.transport
        if tr is None:
            return False
        conn = self.conns.get(id(tr))
        if conn is None or conn.transport is not tr:
            for k in [k for k, c in self.conns.items() if c.transport.is_closing()]:
                del self.conns[k]
            conn = self.conns[id(tr)] = Conn(tr)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        request["conn"] = conn
        request["conn_seq"] = conn.served + conn.busy + 1
        if self.idle_timeout > 0 and conn.served > 0 and conn.busy == 0 and \
                asyncio.get_running_loop().time() - conn.last_done >= self.idle_timeout:
            return True
        conn.busy += 1
        return False

    def _conn_end(self, request):
        conn = request.get("conn")
        if conn is None:
            return
        conn.busy -= 1
        conn.served += 1
        loop = asyncio.get_running_loop()
        conn.last_done = loop.time()
        if self.idle_timeout > 0 and conn.busy == 0:
            conn.timer = loop.call_later(self.idle_timeout + self.idle_close_delay, self._idle_close, conn, conn.served)

    def _idle_close(self, conn, served):
        conn.timer = None
        if conn.served != served or conn.busy or conn.transport.is_closing():
            return
        self.counters["idleClosed"] += 1
        conn.transport.close()  # TLS close_notify, then FIN, like Go's http.Server IdleTimeout
        self.conns.pop(id(conn.transport), None)

    async def handle(self, request):
        if request.path.startswith("/fake/") or request.path == "/fake":
            # Control requests are not part of the rude modes: never dropped, no idle close.
            try:
                return await self.control(request)
            except ks.ApiError as e:
                return self.error(e)
            except (ValueError, KeyError, TypeError) as e:
                return self.error(ks.bad_request(f"control API: {e}"))
        if self._conn_begin(request):
            # The race a client loses against a server's idle timeout: the request went out on a
            # connection the server has given up on. It is read, never answered, and the
            # connection is closed (the client sees the end of the stream, nothing received).
            request["closed_idle"] = True
            self.counters["idleRaced"] += 1
            self.log_request(request, classify(request.method, request.path, request.query), 0, time.monotonic())
            conn = request["conn"]
            self.conns.pop(id(conn.transport), None)
            conn.transport.close()
            return web.Response(status=503)  # never sent: the transport is closing
        try:
            return await self._handle_api(request)
        finally:
            self._conn_end(request)

    async def _handle_api(self, request):
        started = time.monotonic()
        request["received_at"] = time.time()
        info = classify(request.method, request.path, request.query)
        request["logged"] = False
        if self.log_bodies and request.body_exists:
            # aiohttp keeps the bytes, so the handler's own read() sees the same body.
            raw = await request.read()
            request["logged_body"] = raw[:BODY_LOG_LIMIT].decode("utf-8", errors="replace")
        try:
            resp = await self._handle(request, info)
        except ks.ApiError as e:
            resp = self.error(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in the fake: report it like the real server would
            log.exception("internal error")
            resp = self.error(ks.ApiError(500, "InternalError", f"Internal error occurred: {e!r}", {"causes": [{"message": repr(e)}]}))
        if not request["logged"]:
            self.log_request(request, info, resp.status, started)
        return resp

    async def _handle(self, request, info):
        path = request.path
        public = path in ("/version", "/version/", "/healthz", "/livez", "/readyz")
        if self.args.token and not public:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.args.token}":
                raise ks.ApiError(401, "Unauthorized", "Unauthorized")
        await self._apply_faults(request, info)
        if request.get("fault_watch_error") is not None:
            return await self._watch_error_only(request, info, request["fault_watch_error"])
        if info.kind == "discovery":
            return self.discovery(request, info)
        if info.kind == "notfound":
            raise ks.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if info.kind == "other":
            if path.startswith("/openapi/v3") and not self.args.no_openapi:
                return self.openapi_v3(path)
            if path.rstrip("/") == "/version":
                return self.respond(self.version())
            if path in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok", content_type="text/plain")
            raise ks.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return await self.resource(request, info)

    async def _apply_faults(self, request, info):
        for rule in list(self.faults):
            if not rule.active():
                self.faults.remove(rule)
                continue
            if not rule.matches(request.method, request.path, info, request):
                continue
            code = rule.draw()
            if code is None and rule.fraction is not None:
                continue  # jitter: this one goes through
            if rule.count is not None:
                rule.count -= 1
            rule.hits += 1
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if code is not None:
                err = fault_error(rule, info, code)
                if rule.as_watch_event and info.watch:
                    request["fault_watch_error"] = err
                    return
                raise err

    # -- discovery -----------------------------------------------------------------------------

    def version(self):
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.4",
                "compiler": "gc", "platform": "linux/amd64"}

    @staticmethod
    def _api_resources(group):
        out = []
        for rt in ks.RESOURCE_TYPES:
            if rt.group != group:
                continue
            r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                 "verbs": rt.verbs}
            if rt.short_names:
                r["shortNames"] = rt.short_names
            out.append(r)
            if rt.has_status:
                out.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced,
                            "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        return out

    @staticmethod
    def _agg_group(group, version):
        resources = []
        for rt in ks.RESOURCE_TYPES:
            if rt.group != group:
                continue
            rk = {"group": group, "version": version, "kind": rt.kind}
            r = {"resource": rt.plural, "responseKind": rk, "scope": "Namespaced" if rt.namespaced else "Cluster",
                 "singularResource": rt.singular, "verbs": rt.verbs}
            if rt.short_names:
                r["shortNames"] = rt.short_names
            if rt.has_status:
                r["subresources"] = [{"subresource": "status", "responseKind": rk, "verbs": ["get", "patch", "update"]}]
            resources.append(r)
        meta = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        return {"metadata": meta, "versions": [{"version": version, "resources": resources, "freshness": "Current"}]}

    def discovery(self, request, info):
        accept = request.headers.get("Accept", "")
        aggregated = "as=APIGroupDiscoveryList" in accept and "v=v2;" in accept.replace(" ", "") + ";" \
            and not self.args.legacy_discovery
        doc = info.doc
        versions = dict(ks.API_GROUPS)

        def group_info(g):
            gv = {"groupVersion": f"{g}/{versions[g]}", "version": versions[g]}
            return {"name": g, "versions": [gv], "preferredVersion": gv}

        if doc == "root":
            paths = ["/api", "/api/v1", "/apis"]
            for g, v in ks.API_GROUPS:
                paths += [f"/apis/{g}", f"/apis/{g}/{v}"]
            return self.respond({"paths": paths + ["/healthz", "/livez", "/readyz", "/version"]})
        if doc == "api":
            if aggregated:
                return self.respond({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                                     "metadata": {}, "items": [self._agg_group("", "v1")]}, content_type=AGG_CT)
            return self.respond({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}]})
        if doc == "apis":
            if aggregated:
                return self.respond({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                                     "metadata": {}, "items": [self._agg_group(g, v) for g, v in ks.API_GROUPS]},
                                    content_type=AGG_CT)
            return self.respond({"kind": "APIGroupList", "apiVersion": "v1",
                                 "groups": [group_info(g) for g, _ in ks.API_GROUPS]})
        if isinstance(doc, tuple) and doc[0] == "group" and doc[1] in versions:
            return self.respond({"kind": "APIGroup", "apiVersion": "v1", **group_info(doc[1])})
        if doc == ("resources", "", "v1"):
            return self.respond({"kind": "APIResourceList", "groupVersion": "v1", "resources": self._api_resources("")})
        if isinstance(doc, tuple) and doc[0] == "resources" and versions.get(doc[1]) == doc[2]:
            return self.respond({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{doc[1]}/{doc[2]}",
                                 "resources": self._api_resources(doc[1])})
        raise ks.ApiError(404, "NotFound", "the server could not find the requested resource", {})

    # -- OpenAPI v3 (just enough for kubectl; /openapi/v2 is a 404) ------------------------------

    OPENAPI_GV = {"api/v1": ("", "v1"), **{f"apis/{g}/{v}": (g, v) for g, v in ks.API_GROUPS}}

    def openapi_v3(self, path):
        rel = path[len("/openapi/v3"):].strip("/")
        if rel == "":
            return self.respond({"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=FAKE{ks.VERSION.upper()}"}
                                           for gv in self.OPENAPI_GV}})
        if rel not in self.OPENAPI_GV:
            raise ks.ApiError(404, "NotFound", "the server could not find the requested resource", {})
        group, version = self.OPENAPI_GV[rel]
        params = [{"name": n, "in": "query", "description": d, "schema": {"type": t, "uniqueItems": True}}
                  for n, d, t in (("dryRun", "When present, modifications are not persisted.", "string"),
                                  ("fieldManager", "A name associated with the actor making these changes.", "string"),
                                  ("fieldValidation", "Ignore, Warn or Strict handling of unknown or duplicate fields.", "string"),
                                  ("force", "Force is going to force Apply requests.", "boolean"))]
        patch_ref = {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
        paths, schemas = {}, {
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": {"type": "object", "description": "Patch body."},
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }
        for rt in ks.RESOURCE_TYPES:
            if rt.group != group:
                continue
            gvk = {"group": group, "version": version, "kind": rt.kind}
            pkg = group.split(".")[0] if group else "core"
            sname = (f"dev.openchoreo.{version}.{rt.kind}" if rt.is_crd else f"io.k8s.api.{pkg}.{version}.{rt.kind}")
            schemas[sname] = {"type": "object", "x-kubernetes-group-version-kind": [gvk], "properties": {
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}},
                "x-kubernetes-preserve-unknown-fields": True}
            ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{sname}"}}}}}
            base = f"/{rel}/" + ("namespaces/{namespace}/" if rt.namespaced else "") + rt.plural + "/{name}"
            for suffix in ("", "/status") if rt.has_status else ("",):
                paths[base + suffix] = {
                    "get": {"operationId": f"read{rt.kind}", "x-kubernetes-action": "get",
                            "x-kubernetes-group-version-kind": gvk, "responses": ok},
                    "patch": {"operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                              "x-kubernetes-group-version-kind": gvk, "parameters": params,
                              "requestBody": {"content": {ct: patch_ref for ct in (
                                  "application/apply-patch+yaml", "application/json-patch+json",
                                  "application/merge-patch+json")}, "required": True},
                              "responses": ok}}
        return self.respond({"openapi": "3.0.0", "info": {"title": "Kubernetes (fake)", "version": "v1.32.0"},
                             "paths": paths, "components": {"schemas": schemas}})

    # -- tables (kubectl's default output) -------------------------------------------------------

    @staticmethod
    def wants_table(request):
        return "as=Table" in request.headers.get("Accept", "")

    @staticmethod
    def table(rt, objs, rv, include, columns=True):
        cols = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                 "description": "Name must be unique within a namespace."}]
        if rt is ks.SECRETS:
            cols += [{"name": "Type", "type": "string", "format": "", "priority": 0, "description": "The type of the secret"},
                     {"name": "Data", "type": "string", "format": "", "priority": 0, "description": "The number of entries"}]
        if rt is ks.NAMESPACES:
            cols += [{"name": "Status", "type": "string", "format": "", "priority": 0, "description": "The phase"}]
        if rt is ks.LEASES:
            cols += [{"name": "Holder", "type": "string", "format": "", "priority": 0,
                      "description": "holderIdentity contains the identity of the holder of a current lease."}]
        if rt is ks.ENDPOINTSLICES:
            cols += [{"name": "AddressType", "type": "string", "format": "", "priority": 0,
                      "description": "addressType specifies the type of address carried by this EndpointSlice."},
                     {"name": "Ports", "type": "string", "format": "", "priority": 0,
                      "description": "ports specifies the list of network ports exposed by each endpoint in this slice."},
                     {"name": "Endpoints", "type": "string", "format": "", "priority": 0,
                      "description": "endpoints is a list of unique endpoints in this slice."}]
        cols.append({"name": "Age", "type": "date" if rt.is_crd else "string", "format": "", "priority": 0,
                     "description": "CreationTimestamp is a timestamp representing the server time when this object was created."})
        rows = []
        for o in objs:
            m = o.get("metadata", {})
            cells = [m.get("name", "")]
            if rt is ks.SECRETS:
                cells += [o.get("type", ""), len(o.get("data") or {})]
            if rt is ks.NAMESPACES:
                cells.append(o.get("status", {}).get("phase", ""))
            if rt is ks.LEASES:
                cells.append((o.get("spec") or {}).get("holderIdentity", ""))
            if rt is ks.ENDPOINTSLICES:
                ports = [str(p["port"]) if "port" in p else (p.get("name") or "*") for p in o.get("ports") or []]
                addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
                cells += [o.get("addressType", ""), list_with_more(ports), list_with_more(addrs)]
            cells.append(human_age(m.get("creationTimestamp")))
            row = {"cells": cells}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m}
            rows.append(row)
        t = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)}, "rows": rows}
        if columns:
            t["columnDefinitions"] = cols
        return t

    # -- resources -----------------------------------------------------------------------------

    async def _body(self, request, info):
        raw = await request.read()
        ct = request.content_type
        if request.method == "PATCH":
            ptype = PATCH_TYPES.get(ct)
            if ptype is None:
                accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                if not info.rt.is_crd or self.args.lenient_smp:
                    accepted += ", application/strategic-merge-patch+json"
                raise ks.ApiError(415, "UnsupportedMediaType",
                                  f"the body of the request was in an unknown format - accepted media types include: {accepted}")
            try:
                if ptype == "apply":
                    docs = load_yaml_docs(raw.decode())
                    if len(docs) != 1:
                        raise ValueError("expected exactly one object")
                    return ptype, docs[0]
                return ptype, json.loads(raw)
            except (ValueError, yaml.YAMLError) as e:
                raise ks.bad_request(f"error decoding patch: {e}")
        if ct in ("application/yaml", "application/x-yaml"):
            try:
                docs = load_yaml_docs(raw.decode())
                return None, docs[0] if docs else None
            except yaml.YAMLError as e:
                raise ks.bad_request(f"error decoding YAML: {e}")
        if ct == "application/vnd.kubernetes.protobuf" and not info.rt.is_crd:
            try:
                return None, kube_protobuf.decode(raw)
            except (kube_protobuf.ProtobufError, UnicodeDecodeError, IndexError) as e:
                raise ks.ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {e}")
        if ct not in ("application/json", "", "application/octet-stream"):
            raise ks.ApiError(415, "UnsupportedMediaType",
                              'the body of the request was in an unknown format - accepted media types include: '
                              'application/json, application/yaml')
        if not raw:
            return None, None
        try:
            return None, json.loads(raw)
        except ValueError as e:
            raise ks.bad_request(f"couldn't get version/kind; json parse error: {e}")

    def _write_opts(self, request):
        q = request.query
        mgr = q.get("fieldManager")
        if mgr is None:
            ua = request.headers.get("User-Agent", "")
            mgr = ua.split("/")[0][:128] if ua else "unknown"
        elif len(mgr) > 128:
            raise ks.invalid_error(ks.NAMESPACES, "", [ks.too_long("fieldManager", 128)])
        dry = q.get("dryRun")
        if dry not in (None, "", "All"):
            raise ks.bad_request(f'dryRun: Unsupported value: "{dry}": supported values: "All"')
        fv = q.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Ignore", "Warn", "Strict"):
            raise ks.bad_request(f'fieldValidation: Unsupported value: "{fv}"')
        return ks.WriteOptions(mgr, dry == "All", fv, q.get("force") in TRUE)

    async def resource(self, request, info):
        rt, ns, name, sub = info.rt, info.ns, info.name, info.sub
        q = request.query
        verb = info.verb
        if not verb:
            raise ks.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
        if verb == "watch":
            return await self.watch(request, info)
        if verb == "get":
            obj = self.store.get(rt, ns, name)
            if self.wants_table(request):
                return self.respond(self.table(rt, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject", "Metadata")))
            return self.respond(obj)
        if verb == "list":
            items, meta = self.list_page(rt, ns, q)
            if self.wants_table(request):
                t = self.table(rt, items, meta["resourceVersion"], q.get("includeObject", "Metadata"))
                t["metadata"] = meta
                return self.respond(t)
            if not rt.is_crd:  # typed lists carry no per-item TypeMeta
                for it in items:
                    it.pop("kind", None)
                    it.pop("apiVersion", None)
            return self.respond({"apiVersion": rt.api_version, "kind": rt.kind + "List", "metadata": meta,
                                 "items": items})
        opts = self._write_opts(request)
        if verb == "create":
            if rt.namespaced and ns is None:
                raise ks.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
            _, body = await self._body(request, info)
            if body is None:
                raise ks.bad_request("the body of the request was empty")
            obj = self.store.create(rt, ns, body, opts)
            return self.respond(obj, 201, warnings=opts.warnings)
        if verb == "update":
            _, body = await self._body(request, info)
            if body is None:
                raise ks.bad_request("the body of the request was empty")
            obj = self.store.update(rt, ns, name, body, opts, sub)
            return self.respond(obj, warnings=opts.warnings)
        if verb == "patch":
            ptype, body = await self._body(request, info)
            if ptype == "apply" and not q.get("fieldManager"):
                raise ks.bad_request("PATCH, application/apply-patch+yaml: fieldManager must be set")
            if ptype != "apply" and q.get("force"):
                raise ks.bad_request("force: Invalid value: force may not be specified for non-apply patch")
            obj, created = self.store.patch(rt, ns, name, ptype, body, opts, sub)
            return self.respond(obj, 201 if created else 200, warnings=opts.warnings)
        if verb == "delete":
            _, body = await self._body(request, info)
            options = body if isinstance(body, dict) else {}
            obj, _ = self.store.delete(rt, ns, name, options, opts.dry_run)
            self._schedule_ns_finalize()
            # Built-in kinds answer an immediate delete with a Status; CRs (and pending deletes) with the object.
            if not rt.is_crd and obj["metadata"].get("deletionTimestamp") is None:
                details = {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural,
                           "uid": obj["metadata"]["uid"]}
                return self.respond(ks.status_success(details))
            return self.respond(obj)
        if verb == "deletecollection":
            _, body = await self._body(request, info)
            options = body if isinstance(body, dict) else {}
            items = self.store.delete_collection(rt, ns, q.get("labelSelector"), q.get("fieldSelector"), options, opts.dry_run)
            self._schedule_ns_finalize()
            return self.respond({"apiVersion": rt.api_version, "kind": rt.kind + "List",
                                 "metadata": {"resourceVersion": str(self.store.rv)}, "items": items})
        raise ks.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})

    def list_page(self, rt, ns, q):
        """(items, ListMeta) of a LIST, with `limit`/`continue` paging as etcd serves it: items in key
        order, a page of at most `limit` items, `continue` while more remain (`remainingItemCount`
        without selectors), later pages read at the first page's resourceVersion; a continue token
        older than the compacted history gets 410 Expired with a token to go on inconsistently."""
        rv = q.get("resourceVersion", "")
        cont = q.get("continue", "")
        lsel, fsel = q.get("labelSelector"), q.get("fieldSelector")
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise ks.bad_request(f"limit: Invalid value: \"{q.get('limit')}\": must be an integer")

        def key_of(o):  # the etcd key below the request's prefix
            m = o["metadata"]
            return m["name"] if ns is not None or not rt.namespaced else f"{m.get('namespace', '')}/{m['name']}"

        if cont:
            if rv != "":
                raise ks.bad_request("specifying resource version is not allowed when using continue")
            start, list_rv = decode_continue(cont)
            if list_rv == -1:  # the inconsistent token of a 410: the rest of the current state
                items, list_rv = self.store.list(rt, ns, lsel, fsel)
            else:
                items = self.store.list_at(rt, list_rv, ns, lsel, fsel)
                if items is None:
                    err = ks.ApiError(410, "Expired", CONTINUE_EXPIRED)
                    err.list_meta = {"continue": encode_continue(-1, start)}
                    raise err
            items = sorted((o for o in items if key_of(o) >= start), key=key_of)
        else:
            if rv not in ("", "0"):
                try:
                    rvn = int(rv)
                except ValueError:
                    raise ks.bad_request(f"invalid resource version: {rv}")
                if rvn > self.store.rv:
                    raise ks.ApiError(504, "Timeout", f"Too large resource version: {rvn}, current: {self.store.rv}",
                                      {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                                       "retryAfterSeconds": 1}, {"Retry-After": "1"})
                if q.get("resourceVersionMatch") == "Exact" and rvn < self.store.floor:
                    raise ks.ApiError(410, "Expired", f"too old resource version: {rvn} ({self.store.floor})")
            items, list_rv = self.store.list(rt, ns, lsel, fsel)
            items.sort(key=key_of)
            if rv == "0":
                limit = 0  # served from the watch cache, which ignores limit
        meta = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            meta["continue"] = encode_continue(list_rv, key_of(items[-1]) + "\x00")
            if not lsel and not fsel:
                meta["remainingItemCount"] = rest
        return items, meta

    def _schedule_ns_finalize(self):
        loop = asyncio.get_running_loop()
        while self.store.terminating_namespaces:
            name = self.store.terminating_namespaces.pop(0)
            loop.call_later(0.1, self.store.finalize_namespace, name)

    # -- watch ---------------------------------------------------------------------------------

    @staticmethod
    def bookmark(rt, rv, initial_end=False):
        meta = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    async def _start_stream(self, request, info):
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private",
                                                       "Audit-Id": str(uuid.uuid4())})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.log_request(request, info, 200, time.monotonic())
        request["logged"] = True
        return resp

    async def _watch_error_only(self, request, info, err):
        resp = await self._start_stream(request, info)
        await resp.write((json.dumps({"type": "ERROR", "object": err.status()}) + "\n").encode())
        await resp.write_eof()
        return resp

    async def watch(self, request, info):
        q = request.query
        rt = info.rt
        lsel = ks.parse_label_selector(q.get("labelSelector"))
        fsel = ks.parse_field_selector(rt, q.get("fieldSelector"))
        if info.name is not None:  # legacy /watch/<plural>/<name>
            by_name = ks.parse_field_selector(rt, f"metadata.name={info.name}")
            fsel = (lambda a, b: (lambda o: a(o) and b(o)))(fsel, by_name)
        rv_param = q.get("resourceVersion", "")
        send_initial = q.get("sendInitialEvents") in TRUE
        bookmarks = q.get("allowWatchBookmarks") in TRUE
        rvm = q.get("resourceVersionMatch", "")
        if send_initial:
            errs = []
            if rvm != "NotOlderThan":
                errs.append(ks.forbidden("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
            if not bookmarks:
                errs.append(ks.forbidden("allowWatchBookmarks", "sendInitialEvents requires setting allowWatchBookmarks to true"))
            if errs:
                raise ks.ApiError(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: " + ", ".join(str(e) for e in errs),
                                  {"group": "meta.k8s.io", "kind": "ListOptions",
                                   "causes": [{"reason": e.reason, "message": e.summary, "field": e.field} for e in errs]})
        elif rvm:
            raise ks.ApiError(422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                              'resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided',
                              {"group": "meta.k8s.io", "kind": "ListOptions"})
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else float(self.args.watch_timeout)
        except ValueError:
            raise ks.bad_request(f"invalid timeoutSeconds: {q.get('timeoutSeconds')}")
        table = self.wants_table(request)
        include = q.get("includeObject", "Metadata")

        # Snapshot and registration happen in one synchronous step: no event can fall in between.
        watcher = Watcher(info, lsel, fsel, q)
        initial, gone = [], None
        if send_initial or rv_param in ("", "0"):
            items, cur = self.store.list(rt, info.ns)
            initial = [("ADDED", o) for o in items if watcher._match(o)]
            if send_initial:
                initial.append(("BOOKMARK", self.bookmark(rt, cur, initial_end=True)))
        else:
            try:
                rv = int(rv_param)
            except ValueError:
                raise ks.bad_request(f"invalid resource version: {rv_param}")
            events = self.store.events_since(rv)
            if events is None:
                gone = ks.ApiError(410, "Expired", f"too old resource version: {rv} ({self.store.floor})")
            else:
                initial = [t for t in (watcher.translate(ev) for ev in events) if t is not None]
        if gone is None:
            self.hub.watchers.add(watcher)
        try:
            resp = await self._start_stream(request, info)
            if gone is not None:
                await resp.write((json.dumps({"type": "ERROR", "object": gone.status()}) + "\n").encode())
                await resp.write_eof()
                return resp
            if self._take_stall_new(rt):
                watcher.stalled = True
            first = [True]

            def encode(ev_type, obj):
                if table and ev_type != "BOOKMARK":
                    obj = self.table(rt, [obj], obj["metadata"].get("resourceVersion", ""), include, columns=first[0])
                    first[0] = False
                watcher.sent += 1
                return (json.dumps({"type": ev_type, "object": obj}, separators=(",", ":")) + "\n").encode()

            async def send(events):
                """Writes events: one HTTP chunk each, or as the watch-chunking control says (all in
                one buffer, cut into pieces of `split` bytes, each its own chunk, `gap` s apart)."""
                ch = self.chunking
                if not ch["split"] and not ch["coalesce"]:
                    for t, o in events:
                        await resp.write(encode(t, o))
                    return
                data = b"".join(encode(t, o) for t, o in events)
                step = ch["split"] or len(data)
                for k in range(0, len(data), step):
                    if k and ch["gap"]:
                        await asyncio.sleep(ch["gap"])
                    await resp.write(data[k:k + step])

            async def stalled_until_dropped():
                # A hung server: nothing more is sent, timeoutSeconds does not end it; the
                # connection stays open until the client gives up (or /fake/drop-watches). aiohttp
                # does not cancel a handler whose client left: look for that every 0.1 s.
                while True:
                    try:
                        item = await asyncio.wait_for(watcher.queue.get(), timeout=0.1)
                    except asyncio.TimeoutError:
                        if request.transport is None or request.transport.is_closing():
                            return resp
                        continue
                    if item is DROP_CLOSE:
                        await resp.write_eof()
                        return resp
                    if item is DROP_ABORT:
                        if request.transport is not None:
                            request.transport.abort()
                        return resp

            if watcher.stalled:
                return await stalled_until_dropped()
            if initial:
                await send(initial)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                # At most 0.5 s at a time: aiohttp does not cancel a handler whose client left, and a
                # real server ends such a watch at once (the request's context is cancelled).
                wait = min(deadline - now, 0.5)
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    if bookmarks and loop.time() >= next_bookmark:
                        if watcher.queue.empty():
                            await send([("BOOKMARK", self.bookmark(rt, self.store.rv))])
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                batch, marker = [], None
                if item is DROP_CLOSE or item is DROP_ABORT or item is STALL:
                    marker = item
                else:
                    batch.append(item)
                    window = self.chunking["coalesce"]
                    end = loop.time() + window
                    while window > 0 and marker is None:  # several events in one chunk
                        left = end - loop.time()
                        if left <= 0:
                            break
                        try:
                            nxt = await asyncio.wait_for(watcher.queue.get(), timeout=left)
                        except asyncio.TimeoutError:
                            break
                        if nxt is DROP_CLOSE or nxt is DROP_ABORT or nxt is STALL:
                            marker = nxt
                        else:
                            batch.append(nxt)
                if batch and not watcher.stalled:
                    await send(batch)
                if marker is DROP_CLOSE:
                    break
                if marker is DROP_ABORT:
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                if watcher.stalled:
                    return await stalled_until_dropped()
            await resp.write_eof()
            return resp
        except (ConnectionResetError, ConnectionError):
            return web.Response(status=200)
        finally:
            self.hub.watchers.discard(watcher)

    def _take_stall_new(self, rt):
        for rule in self.stall_new:
            if rule["remaining"] > 0 and rule["resource"] in (None, rt.plural):
                rule["remaining"] -= 1
                self.stall_new = [r for r in self.stall_new if r["remaining"] > 0]
                return True
        return False

    @staticmethod
    def _chunking_defaults():
        return {"split": 0, "coalesce": 0.0, "gap": 0.0}

    # -- control API ---------------------------------------------------------------------------

    async def control(self, request):
        path = request.path.rstrip("/")
        m = request.method
        body = {}
        if m in ("POST", "PUT", "PATCH"):
            raw = await request.read()
            if raw.strip():
                body = json.loads(raw)
        q = request.query

        def count_or_duration(spec):
            if spec.get("count") is not None:
                spec["count"] = int(spec["count"])
            return spec

        if path == "/fake/healthz":
            return web.Response(text="ok")
        if path == "/fake/reset" and m == "POST":
            self.reset()
            return self.respond({"ok": True, "resourceVersion": str(self.store.rv)})
        if path == "/fake/requests":
            if m == "DELETE":
                n = len(self.requests)
                self.requests.clear()
                return self.respond({"cleared": n})
            items = self.requests
            for k in ("method", "verb", "resource", "subresource", "namespace", "name", "contentType"):
                if k in q:
                    items = [e for e in items if str(e.get(k, "")) == q[k]]
            if "pathContains" in q:
                items = [e for e in items if q["pathContains"] in e["path"]]
            if "since" in q:
                since = float(q["since"])
                items = [e for e in items if e["receivedAt"] >= since]
            return self.respond({"items": items, "count": len(items)})
        if path == "/fake/faults":
            if m == "GET":
                self.faults = [f for f in self.faults if f.active()]
                return self.respond({"items": [f.describe() for f in self.faults]})
            if m == "DELETE":
                n = len(self.faults)
                self.faults.clear()
                return self.respond({"cleared": n})
            if m == "POST":
                rule = FaultRule(count_or_duration(body))
                self.faults.append(rule)
                return self.respond(rule.describe(), 201)
        if path.startswith("/fake/faults/") and m == "DELETE":
            fid = int(path.rsplit("/", 1)[1])
            before = len(self.faults)
            self.faults = [f for f in self.faults if f.id != fid]
            return self.respond({"cleared": before - len(self.faults)})
        if m == "POST" and path in ("/fake/delay", "/fake/errors", "/fake/throttle", "/fake/conflict-status"):
            spec = dict(body)
            spec.setdefault("match", {})
            for k in ("method", "path", "verb", "resource", "subresource", "namespace", "name", "watch"):
                if k in spec and k not in spec["match"]:
                    spec["match"][k] = spec.pop(k)
            if path == "/fake/delay":
                spec["delay"] = float(spec.get("seconds", spec.get("delay", 0)))
                spec.pop("code", None)
            elif path == "/fake/errors":
                spec["code"] = int(spec.get("code", 500))
            elif path == "/fake/throttle":
                spec["code"] = 429
                spec["retryAfter"] = int(spec.get("retryAfter", 1))
            else:
                spec["code"] = 409
                spec["match"].setdefault("subresource", "status")
                spec["match"].setdefault("method", ["PUT", "PATCH"])
                spec.setdefault("count", 1)
            if spec.get("count") is None and spec.get("duration") is None and path != "/fake/delay":
                spec["count"] = 1
            rule = FaultRule(spec)
            self.faults.append(rule)
            return self.respond(rule.describe(), 201)
        if path == "/fake/jitter" and m == "POST":
            spec = dict(body)
            spec.setdefault("match", {})
            for k in ("method", "path", "verb", "resource", "subresource", "namespace", "name", "watch"):
                if k in spec and k not in spec["match"]:
                    spec["match"][k] = spec.pop(k)
            fraction = float(spec.get("fraction", 0.2))
            if not 0.0 <= fraction <= 1.0:
                raise ks.bad_request("control API: fraction must be within [0, 1]")
            spec["fraction"] = fraction
            spec["codes"] = [int(c) for c in spec.get("codes") or (500, 429, 503)]
            spec["retryAfter"] = int(spec.get("retryAfter", 1))
            spec.pop("code", None)
            rule = FaultRule(count_or_duration(spec))
            self.faults.append(rule)
            return self.respond(rule.describe(), 201)
        if path == "/fake/stall-watches" and m == "POST":
            resource = body.get("resource") or None
            n = self.hub.stall(resource)
            if int(body.get("new", 0) or 0) > 0:
                self.stall_new.append({"resource": resource, "remaining": int(body["new"])})
            await asyncio.sleep(0)
            return self.respond({"stalled": n, "stallNew": [dict(r) for r in self.stall_new]})
        if path == "/fake/watch-chunking":
            if m == "DELETE":
                self.chunking = self._chunking_defaults()
            elif m in ("POST", "PUT"):
                ch = self._chunking_defaults()
                ch["split"] = int(body.get("split", 0) or 0)
                ch["coalesce"] = float(body.get("coalesce", 0) or 0)
                ch["gap"] = float(body.get("gap", 0) or 0)
                if ch["split"] < 0 or ch["coalesce"] < 0 or ch["gap"] < 0:
                    raise ks.bad_request("control API: split, coalesce and gap must not be negative")
                self.chunking = ch
            return self.respond(dict(self.chunking))
        if path == "/fake/drop-watches" and m == "POST":
            n = self.hub.drop(body.get("mode", "close"), body.get("resource"))
            await asyncio.sleep(0)
            return self.respond({"dropped": n})
        if path == "/fake/compact" and m == "POST":
            floor = self.store.compact(body.get("resourceVersion"))
            return self.respond({"compactedTo": str(floor), "resourceVersion": str(self.store.rv)})
        if path == "/fake/watches" and m == "GET":
            return self.respond({"items": [w.describe() for w in self.hub.watchers], "count": len(self.hub.watchers)})
        if path == "/fake/state" and m == "GET":
            counts = {rt.plural: len(self.store.objects[rt.key]) for rt in ks.RESOURCE_TYPES}
            return self.respond({"resourceVersion": str(self.store.rv), "historyFloor": str(self.store.floor),
                                 "historySize": len(self.store.history), "historyLimit": self.store.history_size,
                                 "bookmarkInterval": self.bookmark_interval, "objects": counts,
                                 "openWatches": len(self.hub.watchers), "faults": len(self.faults),
                                 "requests": len(self.requests), "watchChunking": dict(self.chunking),
                                 "idleTimeout": self.idle_timeout, "idleCloseDelay": self.idle_close_delay,
                                 **self.counters})
        if path == "/fake/config" and m in ("PUT", "POST", "PATCH"):
            if "bookmarkInterval" in body:
                self.bookmark_interval = float(body["bookmarkInterval"])
            if "history" in body:
                self.store.set_history_size(int(body["history"]))
            if "statusSchema" in body:
                self.store.status_schema = bool(body["statusSchema"])
            if "lenientStrategicMergePatch" in body:
                self.store.lenient_smp = bool(body["lenientStrategicMergePatch"])
            if "logBodies" in body:
                self.log_bodies = bool(body["logBodies"])
            if "idleTimeout" in body:
                self.idle_timeout = max(0.0, float(body["idleTimeout"] or 0))
            if "idleCloseDelay" in body:
                self.idle_close_delay = max(0.0, float(body["idleCloseDelay"] or 0))
            return self.respond({"bookmarkInterval": self.bookmark_interval, "history": self.store.history_size,
                                 "statusSchema": self.store.status_schema,
                                 "lenientStrategicMergePatch": self.store.lenient_smp, "logBodies": self.log_bodies,
                                 "idleTimeout": self.idle_timeout, "idleCloseDelay": self.idle_close_delay})
        raise ks.ApiError(404, "NotFound", f"no control endpoint {m} {path}", {})


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--cert", help="server certificate (PEM)")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--ca", help="CA bundle for --write-kubeconfig (default: the server certificate)")
    p.add_argument("--token", help="bearer token required on every API request")
    p.add_argument("--plain", action="store_true", help="serve plain HTTP instead of HTTPS")
    p.add_argument("--plain-port", type=int, default=None, help="also serve plain HTTP on this port (0 = pick)")
    p.add_argument("--port-file", help="write the chosen port number here (atomically)")
    p.add_argument("--seed-dir", action="append", help="load every *.yaml/*.yml/*.json here at startup (multi-doc)")
    p.add_argument("--seed", action="append", help="load one YAML/JSON file at startup")
    p.add_argument("--history", type=int, default=1000, help="watch events retained; older RVs get 410 Gone")
    p.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds between BOOKMARK events")
    p.add_argument("--watch-timeout", type=float, default=1800.0, help="server-side watch timeout without timeoutSeconds")
    p.add_argument("--initial-rv", type=int, default=1000)
    p.add_argument("--write-kubeconfig", help="write a kubeconfig for this server here")
    p.add_argument("--kubeconfig-namespace", default="default")
    p.add_argument("--no-status-schema", action="store_true", help="do not validate/prune status against the CRD status schema")
    p.add_argument("--lenient-smp", action="store_true",
                   help="accept strategic-merge-patch on the CRs as a merge patch (the real server answers 415)")
    p.add_argument("--no-openapi", action="store_true", help="answer 404 on /openapi/v3 too (kubectl then needs --validate=false)")
    p.add_argument("--legacy-discovery", action="store_true", help="serve only legacy (non-aggregated) discovery")
    p.add_argument("--request-log-limit", type=int, default=100000)
    p.add_argument("--log-bodies", action="store_true",
                   help="keep each request's body (first 64 KiB, as text) in the request log")
    p.add_argument("--fault", action="append", metavar="JSON",
                   help='a fault rule active from the first request, as for POST /fake/faults '
                        '(e.g. \'{"code": 503, "duration": 5}\'); repeatable')
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="close a kept-alive connection after this many idle seconds (0: only aiohttp's own 75 s)")
    p.add_argument("--idle-close-delay", type=float, default=0.0,
                   help="send that close this much later; a request arriving in between is dropped unanswered")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not args.plain and not (args.cert and args.key):
        p.error("--cert and --key are required unless --plain")
    return args


def bind(host, port):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(args):
    server = FakeApiServer(args)
    lowlevel = web.Server(server.handle, access_log=None)
    runner = web.ServerRunner(lowlevel, access_log=None)
    await runner.setup()
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    ssl_ctx = None
    if not args.plain:
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(args.cert, args.key)
        ssl_ctx.set_alpn_protocols(["http/1.1"])
    site = web.SockSite(runner, sock, ssl_context=ssl_ctx, shutdown_timeout=0.5)
    await site.start()
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host
    scheme = "http" if args.plain else "https"
    server.address = f"{host_for_url}:{port}"
    out = {"port": port, "url": f"{scheme}://{host_for_url}:{port}"}
    if args.plain_port is not None and not args.plain:
        psock = bind(args.host, args.plain_port)
        out["plainPort"] = psock.getsockname()[1]
        await web.SockSite(runner, psock, shutdown_timeout=0.5).start()
    if args.write_kubeconfig:
        ca = None
        if not args.plain:
            with open(args.ca or args.cert, "rb") as f:
                ca = f.read()
        write_kubeconfig(args.write_kubeconfig, out["url"], ca, args.token, args.kubeconfig_namespace)
        out["kubeconfig"] = args.write_kubeconfig
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(json.dumps(out), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.hub.drop("close")
    await asyncio.sleep(0.05)
    await runner.cleanup()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s fake-apiserver %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
