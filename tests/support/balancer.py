"""A round-robin TCP balancer for tests of several gateway replicas: the Kubernetes Service's role in
front of their agent or internal ports (a backend that refuses a connection is skipped; bytes are
relayed untouched, so TLS ends at the gateway)."""
import select
import socket
import threading


class Balancer:
    """A round-robin TCP balancer: each connection goes to the next backend that accepts it (a
    stopped replica refuses, the next one is tried), then bytes are relayed both ways."""

    def __init__(self, backends):
        self.backends = backends
        self.next = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self.lock:
            start = self.next
            self.next += 1
        upstream = None
        for i in range(len(self.backends)):
            port = self.backends[(start + i) % len(self.backends)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                upstream.settimeout(None)
                break
            except OSError:
                upstream = None
        if upstream is None:
            c.close()
            return
        pair = [c, upstream]
        try:
            while True:
                r, _, _ = select.select(pair, [], [], 1.0)
                if self.stopped:
                    break
                done = False
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        done = True
                        break
                    (upstream if s is c else c).sendall(data)
                if done:
                    break
        except OSError:
            pass
        finally:
            c.close()
            upstream.close()

    def close(self):
        self.stopped = True
        self.sock.close()
