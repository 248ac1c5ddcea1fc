#!/usr/bin/env bash
# The command line is a contract: wrong flags or values exit non-zero with one line naming the flag.
set -u
bin="$1"
fail=0
expect() {  # expect <exit-code> <pattern> -- args...
  local code="$1" pattern="$2"; shift 3
  local out rc
  out=$("$bin" "$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" != "$code" ]; then echo "FAIL: $* exited $rc, want $code ($out)"; fail=1; return; fi
  if [ "$code" != 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" != 1 ]; then echo "FAIL: $*: not one line: $out"; fail=1; fi
  if ! printf '%s' "$out" | grep -q -- "$pattern"; then echo "FAIL: $*: '$out' lacks '$pattern'"; fail=1; return; fi
  echo "ok: $*"
}
d=$(mktemp -d)
nm=--internal-mtls=false
expect 2 "--heartbeat-interval" -- --planes-dir "$d" $nm --heartbeat-interval abc
expect 2 "--heartbeat-timeout" -- --planes-dir "$d" $nm --heartbeat-timeout 10
expect 2 "--shutdown-timeout" -- --planes-dir "$d" $nm --shutdown-timeout -5s
expect 2 "--log-level" -- --planes-dir "$d" $nm --log-level loud
expect 2 "--port" -- --planes-dir "$d" $nm --port 70000
expect 2 "--no-such-flag" -- --planes-dir "$d" $nm --no-such-flag
expect 2 "--status-dir" -- $nm --status-dir "$d/status"
expect 2 "--kube-api-burst" -- $nm --kube-api-burst 0
# Without --planes-dir and without any reachable Kubernetes configuration: a clear startup error.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=t \
  -keyout "$d/k.pem" -out "$d/c.pem" 2>/dev/null
HOME="$d" KUBERNETES_SERVICE_HOST= expect 1 "no plane source" -- $nm --kubeconfig "$d/missing-kubeconfig" \
  --server-cert "$d/c.pem" --server-key "$d/k.pem" --port 0 --health-port 0 --internal-port 0
expect 2 "--internal-client-ca-cert" -- --planes-dir "$d"
expect 2 "--internal-port" -- --planes-dir "$d" $nm --internal-port -1
expect 2 "--request-timeout" -- --planes-dir "$d" $nm --request-timeout 5
expect 1 "server certificate" -- --planes-dir "$d" $nm --server-cert /nonexistent --port 0 --health-port 0
out=$("$bin" --help); rc=$?
for f in --port --server-cert --server-key --heartbeat-interval --heartbeat-timeout --shutdown-timeout --log-level \
         --health-port --bind --planes-dir --status-dir --status-heartbeat-interval --internal-port --internal-mtls \
         --internal-client-ca-cert --request-timeout; do
  printf '%s' "$out" | grep -q -- "$f" || { echo "FAIL: --help lacks $f"; fail=1; }
done
[ "$rc" = 0 ] || { echo "FAIL: --help exited $rc"; fail=1; }
# Environment variables as upstream names them.
out=$(AGENT_SERVER_PORT=notaport "$bin" --planes-dir "$d" $nm 2>&1 >/dev/null); rc=$?
[ "$rc" = 2 ] && printf '%s' "$out" | grep -q -- "--port" || { echo "FAIL: AGENT_SERVER_PORT=notaport: rc=$rc $out"; fail=1; }
rm -rf "$d"
if [ "$fail" = 0 ]; then echo "cli: 1 passed, 0 failed"; exit 0; fi
echo "cli: 0 passed, 1 failed"; exit 1
