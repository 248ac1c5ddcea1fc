"""Helpers for tests that use the fake API server: an openssl-made PKI, a process wrapper, a tiny
HTTPS client and a watch-stream reader. Standard library only (plus the fake's own modules)."""
import http.client
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_apiserver.py")
PYTHON = "/usr/bin/python3"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, **kw)


def make_pki(d, cn="fake-kube-apiserver"):
    """A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.
    Returns {"ca": path, "cert": path, "key": path}."""
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, cert = os.path.join(d, "server.key"), os.path.join(d, "server.csr"), os.path.join(d, "server.crt")
    ext = os.path.join(d, "server.ext")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=fake-kube-ca",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"])
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext])
    return {"ca": ca, "cert": cert, "key": key}


class FakeApiServer:
    """Starts fake_apiserver.py as a subprocess and waits for its {"port": N} line. `port` 0 picks a
    free port; a fixed one lets a client be configured (and started) before the server listens."""

    def __init__(self, workdir, token="test-token", pki=None, extra_args=(), kubeconfig=True, plain=False, port=0):
        self.workdir = workdir
        self.token = token
        self.plain = plain
        self.pki = pki if pki is not None or plain else make_pki(workdir)
        self.kubeconfig = os.path.join(workdir, "kubeconfig") if kubeconfig else None
        self.stderr_path = os.path.join(workdir, "fake-apiserver.stderr")
        cmd = [PYTHON, SERVER, "--port", str(port), "--port-file", os.path.join(workdir, "port")]
        if plain:
            cmd.append("--plain")
        else:
            cmd += ["--cert", self.pki["cert"], "--key", self.pki["key"], "--ca", self.pki["ca"]]
        if token:
            cmd += ["--token", token]
        if self.kubeconfig:
            cmd += ["--write-kubeconfig", self.kubeconfig]
        cmd += list(extra_args)
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = self._readline(15)
        if not line:
            self.stop()
            raise RuntimeError("fake apiserver did not start: " + open(self.stderr_path).read())
        self.info = json.loads(line)
        self.port = self.info["port"]
        self.url = self.info["url"]
        self.host = "127.0.0.1"

    def _readline(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if r else ""

    def ssl_context(self):
        if self.plain:
            return None
        ctx = ssl.create_default_context(cafile=self.pki["ca"])
        return ctx

    def connection(self, timeout=10):
        if self.plain:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context())

    def request(self, method, path, body=None, content_type=None, token=True, headers=None, timeout=10):
        """Returns (status, headers, decoded JSON body or text)."""
        h = dict(headers or {})
        if token is True and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
            h["Content-Type"] = content_type or "application/json"
        c = self.connection(timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = raw.decode(errors="replace")
            return r.status, r.headers, payload
        finally:
            c.close()

    def control(self, method, path, body=None):
        status, _, payload = self.request(method, "/fake/" + path.lstrip("/"), body, token=False)
        if status >= 300:
            raise RuntimeError(f"control {method} {path}: {status} {payload}")
        return payload

    def watch(self, path, timeout=10):
        return WatchStream(self, path, timeout)

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


class WatchStream:
    """Reads newline-delimited watch events from a streaming (chunked) response."""

    def __init__(self, server, path, timeout):
        self.conn = server.connection(timeout)
        h = {"Authorization": f"Bearer {server.token}"} if server.token else {}
        self.conn.request("GET", path, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = self.resp.headers

    def next(self, timeout=5):
        """The next event, or None at the end of the stream. Raises TimeoutError after `timeout` s."""
        self.conn.sock.settimeout(timeout)
        try:
            line = self.resp.readline()
        except (TimeoutError, OSError) as e:
            if "timed out" in str(e) or isinstance(e, TimeoutError):
                raise TimeoutError("no watch event in time")
            raise
        if not line:
            return None
        return json.loads(line)

    def until(self, pred, timeout=5):
        """Events until one satisfies pred (returned last); raises TimeoutError."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; saw {[e and e.get('type') for e in seen]}")
            ev = self.next(left)
            seen.append(ev)
            if ev is None or pred(ev):
                return seen

    def close(self):
        try:
            self.conn.close()
        except OSError:
            pass


class RawConnection:
    """One HTTP/1.1 connection read straight off the socket: keep-alive requests one after the other,
    and chunked bodies chunk by chunk with their boundaries (what http.client hides). A read that
    times out leaves the connection usable."""

    def __init__(self, server, timeout=10):
        self.server = server
        sock = socket.create_connection((server.host, server.port), timeout=timeout)
        if not server.plain:
            sock = server.ssl_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""

    def send(self, method, path, body=None, content_type="application/json"):
        h = [f"{method} {path} HTTP/1.1", f"Host: {self.server.host}:{self.server.port}", "Accept: application/json"]
        if self.server.token:
            h.append(f"Authorization: Bearer {self.server.token}")
        data = b""
        if body is not None:
            data = (body if isinstance(body, (bytes, str)) else json.dumps(body))
            data = data.encode() if isinstance(data, str) else data
            h += [f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
        self.sock.sendall(("\r\n".join(h) + "\r\n\r\n").encode() + data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the server in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError) as e:
            raise TimeoutError("nothing from the server in time") from e
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def _read(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_head(self, timeout=5):
        """(status, {lower-case header: value}); EOFError (or a reset) when the server closed the
        connection before sending anything."""
        deadline = time.monotonic() + timeout
        status = int(self._line(deadline).split()[1])
        headers = {}
        while True:
            line = self._line(deadline)
            if not line:
                return status, headers
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()

    def read_response(self, timeout=5):
        """A whole (Content-Length) response: (status, headers, decoded JSON body)."""
        deadline = time.monotonic() + timeout
        status, headers = self.read_head(timeout)
        body = self._read(int(headers.get("content-length", "0")), deadline)
        return status, headers, json.loads(body) if body else None

    def request(self, method, path, body=None, timeout=5):
        self.send(method, path, body)
        return self.read_response(timeout)

    def read_chunk(self, timeout=5):
        """The next chunk's bytes of a chunked body, None after the last one; TimeoutError when it
        is not complete within `timeout` s (what was read stays buffered)."""
        deadline = time.monotonic() + timeout
        while True:
            head, sep, rest = self.buf.partition(b"\r\n")
            if sep:
                size = int(head.split(b";")[0], 16)
                need = size + 2 if size else 2  # data + CRLF, or the empty trailer's CRLF
                if len(rest) >= need:
                    self.buf = rest[need:]
                    return rest[:size] if size else None
            self._fill(deadline)

    def closed_by_server(self, timeout=5):
        """Waits until the server closes the connection (EOF or reset): True, or False after `timeout`
        s. Any byte the server sends instead is an error."""
        deadline = time.monotonic() + timeout
        try:
            self._fill(deadline)
        except TimeoutError:
            return False
        except (EOFError, ConnectionResetError, ssl.SSLError):
            return True
        raise AssertionError(f"unexpected bytes from the server: {self.buf[:100]!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def quote(s):
    return urllib.parse.quote(s, safe="")


if __name__ == "__main__":
    # Convenience: `harness.py DIR` makes a PKI in DIR (prints the paths as JSON).
    print(json.dumps(make_pki(sys.argv[1] if len(sys.argv) > 1 else ".")))
