// The flag table: every flag's name, environment variable, help text and parser in one place; the
// defaults are Config's (config.hpp). Syntax and environment rules are upstream's (go_flag.hpp).
#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <set>
#include <thread>

#include "gateway/config.hpp"
#include "gateway/go_flag.hpp"

namespace cg::gateway {

int effective_io_threads(const Config& c) {
  return c.io_threads > 0 ? static_cast<int>(c.io_threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

uint64_t effective_max_concurrent_handshakes(const Config& c) {
  return c.max_concurrent_handshakes ? c.max_concurrent_handshakes
                                     : kHandshakesPerIoThread * static_cast<uint64_t>(effective_io_threads(c));
}

namespace {

const char* level_name(log::Level l) {
  switch (l) {
    case log::Level::debug: return "debug";
    case log::Level::info: return "info";
    case log::Level::warn: return "warn";
    default: return "error";
  }
}

std::string float_text(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Values that need a check or a mapping after parsing (kept as given until then).
struct Pending {
  std::string log_level, log_format, agent_auth_mode;
  bool version = false;
};

// One row of the table. `env` rows follow upstream's cmdutil rules for their type.
struct Spec {
  goflag::Flag flag;
  const char* env = nullptr;
  // Applies a set, non-empty environment value; returns a warning when upstream's rule ignores it or
  // reads it differently from how it looks.
  std::function<std::optional<std::string>(const std::string&)> from_env;
};

class Table {
 public:
  Table(Config& c, Pending& p) : c_(c), p_(p) {}
  std::vector<Spec> specs;

  void add_int(const char* name, const char* env, int64_t Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), std::to_string(Config{}.*m), std::function<void(int64_t)>([&c, m](int64_t v) { c.*m = v; })},
        env, [&c, m, env](const std::string& v) -> std::optional<std::string> {
          auto n = goflag::env_int(v);
          if (!n)
            return std::string(env) + "=" + goflag::quote(v) + " is not a number: ignored, the default is used (as upstream)";
          c.*m = *n;
          if (std::to_string(*n) != v)
            return std::string(env) + "=" + goflag::quote(v) + " is read as " + std::to_string(*n) + " (as upstream)";
          return std::nullopt;
        });
  }
  void add_uint(const char* name, const char* env, uint64_t Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), std::to_string(Config{}.*m), std::function<void(uint64_t)>([&c, m](uint64_t v) { c.*m = v; })},
        env, [&c, m, env](const std::string& v) -> std::optional<std::string> {
          auto n = goflag::env_int(v);
          if (!n || *n < 0)
            return std::string(env) + "=" + goflag::quote(v) + " is not a number of at least 0: ignored, the default is used";
          c.*m = static_cast<uint64_t>(*n);
          if (std::to_string(*n) != v) return std::string(env) + "=" + goflag::quote(v) + " is read as " + std::to_string(*n);
          return std::nullopt;
        });
  }
  void add_bool(const char* name, const char* env, bool Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), Config{}.*m ? "true" : "false", std::function<void(bool)>([&c, m](bool v) { c.*m = v; })}, env,
        [&c, m, env](const std::string& v) -> std::optional<std::string> {
          c.*m = goflag::env_bool(v);
          if (v != "true" && v != "1" && v != "false" && v != "0")
            return std::string(env) + "=" + goflag::quote(v) +
                   " is read as false: only \"true\" and \"1\" are true (as upstream)";
          return std::nullopt;
        });
  }
  void add_string(const char* name, const char* env, std::string Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), Config{}.*m,
         std::function<void(const std::string&)>([&c, m](const std::string& v) { c.*m = v; })},
        env, [&c, m](const std::string& v) -> std::optional<std::string> {
          c.*m = v;
          return std::nullopt;
        });
  }
  void add_duration(const char* name, Duration Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), goflag::format_duration(Config{}.*m),
         std::function<void(Duration)>([&c, m](Duration v) { c.*m = v; })},
        nullptr, {});
  }
  void add_float(const char* name, double Config::*m, std::string usage) {
    Config& c = c_;
    add({name, std::move(usage), float_text(Config{}.*m), std::function<void(double)>([&c, m](double v) { c.*m = v; })}, nullptr,
        {});
  }
  // A string flag kept in Pending until it is checked.
  void add_pending(const char* name, const char* env, std::string Pending::*m, std::string default_text, std::string usage) {
    Pending& p = p_;
    p.*m = default_text;
    add({name, std::move(usage), std::move(default_text),
         std::function<void(const std::string&)>([&p, m](const std::string& v) { p.*m = v; })},
        env, [&p, m](const std::string& v) -> std::optional<std::string> {
          p.*m = v;
          return std::nullopt;
        });
  }
  void add_version() {
    Pending& p = p_;
    add({"version", "Print the version and exit", "false", std::function<void(bool)>([&p](bool v) { p.version = v; })}, nullptr,
        {});
  }

 private:
  void add(goflag::Flag f, const char* env, std::function<std::optional<std::string>(const std::string&)> from_env) {
    if (env) f.usage += " (env " + std::string(env) + ")";
    specs.push_back({std::move(f), env, env ? std::move(from_env) : nullptr});
  }
  Config& c_;
  Pending& p_;
};

std::vector<Spec> flag_table(Config& c, Pending& p) {
  Table t(c, p);
  // Upstream's flags (cmd/cluster-gateway/main.go, with PR #4340's agent auth), same names, envs, defaults.
  t.add_int("port", "AGENT_SERVER_PORT", &Config::port,
            "Public server port serving the agent WebSocket endpoint (/ws, TLS); 0 picks a free port");
  t.add_int("internal-port", "AGENT_INTERNAL_PORT", &Config::internal_port,
            "Internal server port serving the caller-facing /api/* endpoints (TLS); 0 picks a free port");
  t.add_string("server-cert", "SERVER_CERT_PATH", &Config::server_cert,
               "Path to the server certificate chain (PEM); reloaded when the file changes");
  t.add_string("server-key", "SERVER_KEY_PATH", &Config::server_key,
               "Path to the server private key (PEM); reloaded with --server-cert");
  t.add_bool("skip-client-cert-verify", "SKIP_CLIENT_CERT_VERIFY", &Config::skip_client_cert_verify,
             "Deprecated: has no effect (as upstream); agent certificates are always verified per plane CR");
  t.add_bool("internal-mtls", "INTERNAL_MTLS_ENABLED", &Config::internal_mtls,
             "Require and verify client certificates on the internal API listener (/api/*)");
  t.add_string("internal-client-ca-cert", "INTERNAL_CLIENT_CA_PATH", &Config::internal_client_ca,
               "Path to the CA bundle that verifies internal API clients (required while --internal-mtls is true)");
  t.add_pending("agent-auth-mode", "AGENT_AUTH_MODE", &Pending::agent_auth_mode, to_string(Config{}.agent_auth_mode),
                "Where the agent's client certificate comes from: 'mtls' (the TLS handshake) or 'forwarded-header' (a "
                "header set by a trusted TLS-terminating proxy, from an address in --agent-auth-trusted-proxies)");
  t.add_string("agent-auth-forwarded-header", "AGENT_AUTH_FORWARDED_HEADER", &Config::agent_auth_forwarded_header,
               "Request header carrying the URL-encoded client certificate chain with --agent-auth-mode=forwarded-header "
               "(X-Amzn-Mtls-Clientcert for AWS ALB mTLS passthrough, X-Forwarded-Client-Cert for Envoy/Istio XFCC)");
  t.add_duration("read-timeout", &Config::read_timeout, "Internal API: deadline to read a request body");
  t.add_duration("write-timeout", &Config::write_timeout, "Internal API: deadline to write a response (streams: each chunk)");
  t.add_duration("idle-timeout", &Config::idle_timeout, "Internal API: how long an idle keep-alive connection stays open");
  t.add_duration("shutdown-timeout", &Config::shutdown_timeout, "Graceful shutdown budget (SIGTERM, SIGINT)");
  t.add_duration("heartbeat-interval", &Config::heartbeat_interval, "WebSocket ping period (> 0)");
  t.add_duration("heartbeat-timeout", &Config::heartbeat_timeout, "Drop an agent when no pong arrives within this time (> 0)");
  t.add_pending("log-level", "LOG_LEVEL", &Pending::log_level, level_name(Config{}.log_level),
                "Log level: debug, info, warn or error (anything else: info, as upstream)");
  // Ours.
  t.add_string("agent-auth-trusted-proxies", "AGENT_AUTH_TRUSTED_PROXIES", &Config::agent_auth_trusted_proxies,
               "With --agent-auth-mode=forwarded-header: comma-separated source CIDRs (or addresses) of the proxies "
               "whose forwarded certificate header is accepted; from any other address such a request gets 401");
  t.add_int("health-port", nullptr, &Config::health_port,
            "Plain HTTP port for /health, /ready and /metrics; 0 picks a free port");
  t.add_string("bind", nullptr, &Config::bind, "Address the agent, internal and health listeners bind to");
  t.add_duration("handshake-timeout", &Config::handshake_timeout,
                 "Agent port: TLS handshake plus upgrade request, and each WebSocket upgrade or close handshake; "
                 "internal API: TLS handshake, and exec's WebSocket upgrade (> 0)");
  t.add_duration("request-timeout", &Config::request_timeout,
                 "How long a proxied request waits for the agent's answer (streams: the head or first chunk) (> 0)");
  t.add_duration("status-heartbeat-interval", &Config::status_heartbeat_interval,
                 "Minimum time between heartbeat-only status writes per CR (> 0)");
  t.add_duration("startup-grace", &Config::startup_grace,
                 "After start, wait this long before writing CRs disconnected that a previous run left connected");
  t.add_bool("write-status", nullptr, &Config::write_status,
             "Write agentConnection status onto the plane CRs (status files with --planes-dir); false leaves status to "
             "upstream's plane controllers");
  t.add_string("planes-dir", nullptr, &Config::planes_dir,
               "Directory of plane CR and Secret YAML files (selects the file plane source; default: the Kubernetes API)");
  t.add_string("status-dir", nullptr, &Config::status_dir, "Where status files go with --planes-dir (default: DIR/status)");
  t.add_string("kubeconfig", nullptr, &Config::kubeconfig,
               "Kubeconfig for the Kubernetes plane source (default: the first file in $KUBECONFIG, else the in-cluster "
               "service account, else ~/.kube/config)");
  t.add_string("kube-context", nullptr, &Config::kube_context, "Kubeconfig context (default: current-context)");
  t.add_float("kube-api-qps", &Config::kube_api_qps, "Client-side rate limit for Kubernetes API calls, requests/s (0: none)");
  t.add_int("kube-api-burst", nullptr, &Config::kube_api_burst, "Burst for --kube-api-qps (>= 1)");
  t.add_uint("max-message-size", nullptr, &Config::max_message_size,
             "Largest WebSocket message accepted from an agent, bytes (>= 1024)");
  t.add_uint("max-agent-sessions", "MAX_AGENT_SESSIONS", &Config::max_sessions,
             "Most agent sessions this gateway holds; more are refused with 503 (>= 1)");
  t.add_uint("max-agents-per-plane", "MAX_AGENTS_PER_PLANE", &Config::max_sessions_per_plane,
             "Most agent sessions per planeType/planeID; more are refused with 503 (>= 1)");
  t.add_uint("max-concurrent-handshakes", "MAX_CONCURRENT_HANDSHAKES", &Config::max_concurrent_handshakes,
             "Most agent TLS handshakes in progress at once; later connections wait their turn (0: " +
                 std::to_string(kHandshakesPerIoThread) + " per io thread)");
  t.add_uint("tls-session-cache", "TLS_SESSION_CACHE", &Config::tls_session_cache,
             "Agent port: most TLS sessions kept for resumption (stateful TLS 1.3 tickets, TLS 1.2 session IDs); only "
             "authorized agents' sessions are kept, and a resumed session is authorized again against the current CRs "
             "(0: every handshake is full)");
  t.add_duration("tls-session-lifetime", &Config::tls_session_lifetime,
                 "Agent port: how long a kept TLS session may be resumed (1s to 168h)");
  t.add_uint("max-pending-per-agent", "MAX_PENDING_PER_AGENT", &Config::max_pending_per_agent,
             "Most proxied requests waiting for one agent connection; more get 503 (>= 1)");
  t.add_uint("max-streams-per-agent", "MAX_STREAMS_PER_AGENT", &Config::max_streams_per_agent,
             "Most open streams (watch, logs -f, exec, wirelogs) per agent connection; more get 503 (>= 1)");
  t.add_uint("max-internal-connections", "MAX_INTERNAL_CONNECTIONS", &Config::max_internal_connections,
             "Most open connections on the internal API port; more are closed at once (>= 1)");
  t.add_string("proxy-policy-file", "PROXY_POLICY_FILE", &Config::proxy_policy_file,
               "YAML policy of allow/deny rules per internal API caller for /api/proxy (reloaded on change; see "
               "docs/operations.md)");
  t.add_int("io-threads", nullptr, &Config::io_threads, "I/O threads (0: one per core)");
  t.add_pending("log-format", nullptr, &Pending::log_format, Config{}.log_format == log::Format::json ? "json" : "text",
                "Log format: json or text");
  // Several replicas (upstream's chart: clusterGateway.mesh.*), and static peers for the file source.
  t.add_bool("mesh", "MESH_ENABLED", &Config::mesh,
             "Join the other replicas: peer links on --mesh-port, requests forwarded one hop to the replica holding "
             "the agent, one status writer summing every replica");
  t.add_int("mesh-port", "MESH_PORT", &Config::mesh_port, "mTLS port for peer links and forwarded requests; 0 picks a free port");
  t.add_string("mesh-service", "MESH_SERVICE", &Config::mesh_service,
               "Headless Service (in the pod's namespace) whose ready EndpointSlice endpoints are the peers");
  t.add_string("mesh-ca-cert", "MESH_CA_CERT_PATH", &Config::mesh_ca_cert,
               "CA bundle that verifies peer certificates, both ways");
  t.add_string("mesh-cert", "MESH_CERT_PATH", &Config::mesh_cert,
               "This replica's peer certificate chain (server and client auth; default: --server-cert)");
  t.add_string("mesh-key", "MESH_KEY_PATH", &Config::mesh_key, "Key of --mesh-cert (default: --server-key)");
  t.add_string("mesh-peers", "MESH_PEERS", &Config::mesh_peers,
               "Static peers host:port,... (without Kubernetes; liveness from the peer links themselves)");
  t.add_string("mesh-server-name", nullptr, &Config::mesh_server_name,
               "Name peer certificates are checked against (default: the peer's host with --mesh-peers, "
               "<mesh-service>.<namespace>.svc with --mesh-service)");
  t.add_string("replica-id", "POD_NAME", &Config::replica_id, "This replica's name among its peers (default: the host name)");
  t.add_string("pod-namespace", "POD_NAMESPACE", &Config::pod_namespace,
               "Namespace of the mesh Service and Leases (default: the service account's namespace)");
  t.add_duration("mesh-lease-duration", &Config::mesh_lease_duration,
                 "A replica not heard from (or whose Lease was not renewed) for this long is dead: its agents leave "
                 "the status sum, and a new status writer may take over (> 0)");
  t.add_float("mesh-rebalance-margin", &Config::mesh_rebalance_margin,
              "Every --mesh-lease-duration, a replica holding more agents than (1 + this) x its fair share sends GOAWAY "
              "to the excess, one every 100 ms (never picked again; closed with 1001 if still open 3 s later); negative: never");
  t.add_version();
  return std::move(t.specs);
}

bool is_http_token(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f || std::string_view("\"(),/:;<=>?@[\\]{}").find(static_cast<char>(c)) != std::string_view::npos)
      return false;
  return true;
}

}  // namespace

CliResult parse_cli(const std::vector<std::string>& args, const GetEnv& getenv, Config& cfg, std::ostream& out, std::ostream& err,
                    const std::string& program) {
  CliResult res;
  Pending p;
  const std::vector<Spec> specs = flag_table(cfg, p);
  std::vector<goflag::Flag> flags;
  flags.reserve(specs.size());
  for (const auto& s : specs) flags.push_back(s.flag);

  // Environment first: in Go it sets the flags' defaults, which the command line then overrides.
  std::vector<std::pair<std::string, std::string>> env_warnings;  // (flag, warning)
  for (const auto& s : specs) {
    if (!s.env) continue;
    auto v = getenv(s.env);
    if (!v || v->empty()) continue;  // upstream: an empty variable is an unset one
    if (auto w = s.from_env(*v)) env_warnings.emplace_back(s.flag.name, *w);
  }

  goflag::Result r = goflag::parse(flags, args);
  if (r.outcome == goflag::Outcome::help) {
    err << goflag::usage(flags, program);
    res.action = CliAction::exit_ok;
    return res;
  }
  if (r.outcome == goflag::Outcome::error) {
    err << r.error << "\n" << goflag::usage(flags, program);
    res.action = CliAction::exit_usage;
    return res;
  }
  if (p.version) {
    out << "cluster-gateway " << CG_VERSION << "\n";
    res.action = CliAction::exit_ok;
    return res;
  }
  const std::set<std::string> given(r.set.begin(), r.set.end());
  for (auto& [flag, w] : env_warnings)
    if (!given.count(flag)) res.warnings.push_back(w);
  if (!r.args.empty()) {
    std::string rest;
    for (const auto& a : r.args) rest += (rest.empty() ? "" : " ") + goflag::quote(a);
    res.warnings.push_back(
        "arguments after the flags are ignored (Go's flag syntax: the flags end at the first "
        "non-flag argument or \"--\"): " +
        rest);
  }

  auto fail = [&](const std::string& msg) {
    err << "cluster-gateway: " << msg << "\n";
    res.action = CliAction::exit_usage;
    return res;
  };
  for (auto [name, v] :
       {std::pair{"--port", cfg.port}, {"--health-port", cfg.health_port}, {"--internal-port", cfg.internal_port}})
    if (v < 0 || v > 65535) return fail(std::string(name) + ": " + std::to_string(v) + " is not a port number (0 to 65535)");
  for (auto [name, v] : {std::pair{"--heartbeat-interval", cfg.heartbeat_interval},
                         {"--heartbeat-timeout", cfg.heartbeat_timeout},
                         {"--status-heartbeat-interval", cfg.status_heartbeat_interval},
                         {"--handshake-timeout", cfg.handshake_timeout},
                         {"--request-timeout", cfg.request_timeout}})
    if (v <= Duration::zero())
      return fail(std::string(name) + " must be greater than 0 (got " + goflag::format_duration(v) + ")");
  for (auto [name, v] : {std::pair{"--shutdown-timeout", cfg.shutdown_timeout},
                         {"--read-timeout", cfg.read_timeout},
                         {"--write-timeout", cfg.write_timeout},
                         {"--idle-timeout", cfg.idle_timeout},
                         {"--startup-grace", cfg.startup_grace}})
    if (v < Duration::zero()) return fail(std::string(name) + " must not be negative (got " + goflag::format_duration(v) + ")");
  // RFC 8446 4.6.1: a ticket lives at most 7 days; OpenSSL counts whole seconds.
  if (cfg.tls_session_lifetime < std::chrono::seconds(1) || cfg.tls_session_lifetime > std::chrono::hours(168))
    return fail("--tls-session-lifetime must be between 1s and 168h (got " + goflag::format_duration(cfg.tls_session_lifetime) +
                ")");
  // upstream's SetupLogger: anything but the four names is info.
  if (!log::parse_level(p.log_level, cfg.log_level) || p.log_level == "warning") {
    cfg.log_level = log::Level::info;
    res.warnings.push_back("--log-level " + goflag::quote(p.log_level) +
                           " is not one of debug, info, warn, error: info is used (as upstream)");
  }
  if (!log::parse_format(p.log_format, cfg.log_format))
    return fail("--log-format: " + goflag::quote(p.log_format) + " is not one of json, text");
  auto mode = parse_agent_auth_mode(p.agent_auth_mode);
  if (!mode)
    return fail("--agent-auth-mode: invalid agent auth mode " + goflag::quote(p.agent_auth_mode) +
                ": must be \"mtls\" or \"forwarded-header\"");
  cfg.agent_auth_mode = *mode;
  if (cfg.agent_auth_forwarded_header.empty()) cfg.agent_auth_forwarded_header = kDefaultForwardedHeader;  // as upstream
  if (!is_http_token(cfg.agent_auth_forwarded_header))
    return fail("--agent-auth-forwarded-header: " + goflag::quote(cfg.agent_auth_forwarded_header) +
                " is not an HTTP header name");
  std::string why;
  auto proxies = parse_ip_ranges(cfg.agent_auth_trusted_proxies, why);
  if (!proxies) return fail("--agent-auth-trusted-proxies: " + why);
  if (cfg.agent_auth_mode == AgentAuthMode::forwarded_header && proxies->empty())
    return fail("--agent-auth-trusted-proxies is empty: with --agent-auth-mode=forwarded-header every agent would be refused");
  if (cfg.max_message_size < 1024) return fail("--max-message-size must be at least 1024");
  if (cfg.io_threads < 0 || cfg.io_threads > 1024) return fail("--io-threads must be 0 to 1024");
  if (!(cfg.kube_api_qps >= 0) || std::isinf(cfg.kube_api_qps)) return fail("--kube-api-qps must be a number of at least 0");
  if (cfg.kube_api_burst < 1 || cfg.kube_api_burst > INT_MAX) return fail("--kube-api-burst must be at least 1");
  for (auto [name, v] : {std::pair{"--max-agent-sessions", cfg.max_sessions},
                         {"--max-agents-per-plane", cfg.max_sessions_per_plane},
                         {"--max-pending-per-agent", cfg.max_pending_per_agent},
                         {"--max-streams-per-agent", cfg.max_streams_per_agent},
                         {"--max-internal-connections", cfg.max_internal_connections}})
    if (v < 1) return fail(std::string(name) + " must be at least 1");
  if (!cfg.planes_dir.empty() && cfg.status_dir.empty()) cfg.status_dir = cfg.planes_dir + "/status";
  if (cfg.planes_dir.empty() && !cfg.status_dir.empty())
    return fail("--status-dir goes with --planes-dir (with the Kubernetes source, status is written onto the CRs)");
  if (cfg.internal_mtls && cfg.internal_client_ca.empty())
    return fail(
        "--internal-client-ca-cert is required while --internal-mtls is true (use --internal-mtls=false only for development)");
  if (cfg.mesh_port < 0 || cfg.mesh_port > 65535)
    return fail("--mesh-port: " + std::to_string(cfg.mesh_port) + " is not a port number (0 to 65535)");
  if (!std::isfinite(cfg.mesh_rebalance_margin)) return fail("--mesh-rebalance-margin must be a number");
  if (cfg.mesh_lease_duration < std::chrono::seconds(1))
    return fail("--mesh-lease-duration must be at least 1s (got " + goflag::format_duration(cfg.mesh_lease_duration) + ")");
  if (cfg.mesh && cfg.mesh_peers.empty() && cfg.mesh_service.empty() && !cfg.planes_dir.empty())
    res.warnings.push_back("--mesh without --mesh-peers or --mesh-service: this replica has no peers");
  if (!cfg.mesh && (!cfg.mesh_peers.empty() || !cfg.mesh_service.empty()))
    res.warnings.push_back("--mesh-peers and --mesh-service have no effect without --mesh=true");
  if (cfg.skip_client_cert_verify) res.warnings.push_back("--skip-client-cert-verify is deprecated and has no effect");
  return res;
}

CliResult parse_cli(int argc, char** argv, Config& cfg) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto env = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (!v) return std::nullopt;
    return std::string(v);
  };
  return parse_cli(args, env, cfg, std::cout, std::cerr, argc > 0 ? argv[0] : "cluster-gateway");
}

}  // namespace cg::gateway
