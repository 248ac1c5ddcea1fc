#!/usr/bin/env bash
# The command line is a contract (docs/operations.md#flags): Go's flag syntax as upstream's gateway
# has it. A syntax error prints Go's message, then the usage, and exits 2; a value the gateway
# refuses prints one line naming the flag and exits 2; -h prints the usage and exits 0.
set -u
bin="$1"
fail=0
pass=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
# expect <exit-code> <first line, exactly> <lines: 1 | usage> -- args...
expect() {
  local code="$1" first="$2" shape="$3"; shift 4
  local out rc
  out=$("$bin" "$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" != "$code" ]; then bad "$* exited $rc, want $code ($out)"; return; fi
  if [ "$(printf '%s\n' "$out" | head -n1)" != "$first" ]; then bad "$*: first line '$(printf '%s\n' "$out" | head -n1)', want '$first'"; return; fi
  case "$shape" in
    1) [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || { bad "$*: not one line: $out"; return; } ;;
    usage) printf '%s\n' "$out" | sed -n 2p | grep -qx "Usage of $bin:" || { bad "$*: no usage after the message: $out"; return; } ;;
  esac
  ok "$*"
}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
nm=--internal-mtls=false
# Go's flag package: syntax and value errors (message, then the usage; exit 2).
expect 2 'invalid value "abc" for flag -heartbeat-interval: parse error' usage -- --planes-dir "$d" $nm --heartbeat-interval abc
expect 2 'invalid value "10" for flag -heartbeat-timeout: parse error' usage -- --planes-dir "$d" $nm --heartbeat-timeout 10
expect 2 'flag provided but not defined: -no-such-flag' usage -- --planes-dir "$d" $nm --no-such-flag
expect 2 'flag provided but not defined: -no-such-flag' usage -- -planes-dir="$d" -no-such-flag=1
expect 2 'invalid value "5" for flag -request-timeout: parse error' usage -- --planes-dir "$d" $nm --request-timeout 5
expect 2 'invalid boolean value "yes" for -internal-mtls: parse error' usage -- --planes-dir "$d" --internal-mtls=yes
expect 2 'flag needs an argument: -port' usage -- --planes-dir "$d" $nm --port
expect 2 'bad flag syntax: ---port=1' usage -- ---port=1
expect 2 'invalid value "99999999999999999999" for flag -port: value out of range' usage -- -port=99999999999999999999
# Values the gateway refuses: one line naming the flag, exit 2.
expect 2 'cluster-gateway: --shutdown-timeout must not be negative (got -5s)' 1 -- --planes-dir "$d" $nm --shutdown-timeout -5s
expect 2 'cluster-gateway: --port: 70000 is not a port number (0 to 65535)' 1 -- --planes-dir "$d" $nm -port=70000
expect 2 'cluster-gateway: --internal-port: -1 is not a port number (0 to 65535)' 1 -- --planes-dir "$d" $nm --internal-port -1
expect 2 'cluster-gateway: --status-dir goes with --planes-dir (with the Kubernetes source, status is written onto the CRs)' 1 -- $nm --status-dir "$d/status"
expect 2 'cluster-gateway: --kube-api-burst must be at least 1' 1 -- $nm --kube-api-burst 0
expect 2 'cluster-gateway: --log-format: "xml" is not one of json, text' 1 -- --planes-dir "$d" $nm --log-format xml
expect 2 'cluster-gateway: --internal-client-ca-cert is required while --internal-mtls is true (use --internal-mtls=false only for development)' 1 -- --planes-dir "$d"
expect 2 'cluster-gateway: --agent-auth-mode: invalid agent auth mode "tls": must be "mtls" or "forwarded-header"' 1 -- --planes-dir "$d" $nm --agent-auth-mode=tls
expect 2 "cluster-gateway: --agent-auth-trusted-proxies: '10.0.0.300/8' is not an IP address or CIDR range" 1 -- --planes-dir "$d" $nm --agent-auth-mode=forwarded-header --agent-auth-trusted-proxies=10.0.0.300/8
AGENT_AUTH_MODE=bogus expect 2 'cluster-gateway: --agent-auth-mode: invalid agent auth mode "bogus": must be "mtls" or "forwarded-header"' 1 -- --planes-dir "$d" $nm
# Startup failures: exit 1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=t \
  -keyout "$d/k.pem" -out "$d/c.pem" 2>/dev/null
out=$(HOME="$d" KUBERNETES_SERVICE_HOST= "$bin" $nm --kubeconfig "$d/missing-kubeconfig" --server-cert "$d/c.pem" \
  --server-key "$d/k.pem" --port 0 --health-port 0 --internal-port 0 2>&1 >/dev/null); rc=$?
[ "$rc" = 1 ] && printf '%s' "$out" | grep -q "no plane source" && ok "no plane source: exit 1" || bad "no plane source: rc=$rc $out"
out=$("$bin" --planes-dir "$d" $nm --server-cert /nonexistent --port 0 --health-port 0 2>&1 >/dev/null); rc=$?
[ "$rc" = 1 ] && printf '%s' "$out" | grep -q "server certificate" && ok "bad server certificate: exit 1" || bad "server certificate: rc=$rc $out"
# -h, -help, --help: Go's usage on stderr, exit 0, nothing on stdout.
for h in -h -help --help --help=false; do
  out=$("$bin" --port=1 "$h" --no-such-flag 2>&1 >/dev/null); rc=$?
  so=$("$bin" "$h" 2>/dev/null)
  if [ "$rc" != 0 ] || [ -n "$so" ] || [ "$(printf '%s\n' "$out" | head -n1)" != "Usage of $bin:" ]; then bad "$h: rc=$rc stdout='$so'"; continue; fi
  missing=""
  for f in port server-cert server-key heartbeat-interval heartbeat-timeout shutdown-timeout log-level health-port bind \
           planes-dir status-dir status-heartbeat-interval internal-port internal-mtls internal-client-ca-cert \
           request-timeout read-timeout write-timeout idle-timeout skip-client-cert-verify agent-auth-mode \
           agent-auth-forwarded-header agent-auth-trusted-proxies write-status version; do
    printf '%s\n' "$out" | grep -Eq -- "^  -$f( |$)" || missing="$missing $f"
  done
  [ -z "$missing" ] && ok "$h lists every flag" || bad "$h lacks:$missing"
done
out=$("$bin" -h 2>&1)
for want in '(env AGENT_SERVER_PORT) (default 8443)' '(env INTERNAL_MTLS_ENABLED) (default true)' \
            '(env AGENT_AUTH_MODE) (default "mtls")' '(env AGENT_AUTH_FORWARDED_HEADER) (default "X-Forwarded-Client-Cert")' \
            '(env LOG_LEVEL) (default "info")'; do
  printf '%s' "$out" | grep -qF -- "$want" && ok "-h shows $want" || bad "-h lacks $want"
done
# --version: stdout, exit 0.
out=$("$bin" -version); rc=$?
[ "$rc" = 0 ] && printf '%s' "$out" | grep -q '^cluster-gateway [0-9]' && ok "-version" || bad "-version: rc=$rc $out"
# Environment variables as upstream reads them: AGENT_SERVER_PORT=notaport is the default port (a
# warning says so), INTERNAL_MTLS_ENABLED=yes is false (so no internal CA is needed). The gateway
# then fails on the missing certificate (exit 1), after logging the warnings.
out=$(AGENT_SERVER_PORT=notaport INTERNAL_MTLS_ENABLED=yes "$bin" --planes-dir "$d" --server-cert /nonexistent \
  --health-port 0 --internal-port 0 2>&1); rc=$?
if [ "$rc" = 1 ] && printf '%s' "$out" | grep -qF 'AGENT_SERVER_PORT=\"notaport\" is not a number: ignored, the default is used (as upstream)' \
   && printf '%s' "$out" | grep -qF 'INTERNAL_MTLS_ENABLED=\"yes\" is read as false'; then ok "env rules"
else bad "env rules: rc=$rc $out"; fi
# Arguments after the flags are ignored, as Go does (with a warning): here "--no-such-flag" is not read.
out=$("$bin" --planes-dir "$d" $nm --server-cert /nonexistent --port 0 --health-port 0 --internal-port 0 \
  stray --no-such-flag 2>&1); rc=$?
[ "$rc" = 1 ] && printf '%s' "$out" | grep -qF 'arguments after the flags are ignored' && ok "arguments after the flags" \
  || bad "arguments after the flags: rc=$rc $out"
echo "cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
