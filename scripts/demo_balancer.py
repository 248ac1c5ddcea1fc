#!/usr/bin/python3
"""The demo's stand-in for the Kubernetes Service in front of several gateway replicas: a TCP
round-robin balancer. Each connection goes to the next backend (a backend that refuses is skipped),
then bytes are relayed both ways untouched (TLS ends at the gateway, as behind a Service).

    demo_balancer.py --listen 127.0.0.1:18440 --backends 127.0.0.1:18441,127.0.0.1:18442 [--log FILE]

Each connection is logged as one line ("connection N from HOST:PORT -> BACKEND"). SIGTERM or
SIGINT stops it."""
import argparse
import itertools
import select
import signal
import socket
import sys
import threading
import time


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


class Balancer:
    def __init__(self, listen, backends, log):
        self.backends = backends
        self.counter = itertools.count()
        self.log = log
        self.log_lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(128)

    def note(self, text):
        with self.log_lock:
            self.log.write(time.strftime("%H:%M:%S ") + text + "\n")
            self.log.flush()

    def serve_forever(self):
        while True:
            client, peer = self.sock.accept()
            n = next(self.counter)
            threading.Thread(target=self.relay, args=(n, client, peer), daemon=True).start()

    def relay(self, n, client, peer):
        upstream, chosen = None, None
        for i in range(len(self.backends)):
            chosen = self.backends[(n + i) % len(self.backends)]
            try:
                upstream = socket.create_connection(chosen, timeout=2)
                upstream.settimeout(None)
                break
            except OSError:
                upstream = None
        if upstream is None:
            self.note(f"connection {n} from {peer[0]}:{peer[1]}: no backend accepts it")
            client.close()
            return
        self.note(f"connection {n} from {peer[0]}:{peer[1]} -> {chosen[0]}:{chosen[1]}")
        pair = (client, upstream)
        try:
            while True:
                readable, _, _ = select.select(pair, [], [])
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--backends", required=True, help="HOST:PORT,HOST:PORT,...")
    ap.add_argument("--log", help="file for one line per connection (default: stderr)")
    a = ap.parse_args()
    log = open(a.log, "a") if a.log else sys.stderr
    backends = [parse_addr(b) for b in a.backends.split(",") if b]
    b = Balancer(parse_addr(a.listen), backends, log)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    b.note(f"listening on {a.listen}, round-robin over {a.backends}")
    try:
        b.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
