// The gateway's configuration. The defaults below are the only ones: the flag table in cli.cpp
// reads them for --help and docs/operations.md, and the components take their values from here
// (gateway.cpp hands each its slice; their option structs have no defaults of their own).
// Integer flags are int64_t as Go's `int` is; cli.cpp checks their ranges.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "common/time.hpp"
#include "gateway/agent_auth.hpp"

namespace cg::gateway {

struct Config {
  std::string bind = "0.0.0.0";
  int64_t port = 8443;  // agent listener; 0 picks a free port
  int64_t health_port = 8080;  // /health, /ready, /metrics
  int64_t internal_port = 8444;  // internal API for control-plane callers
  bool internal_mtls = true;
  std::string internal_client_ca;
  bool skip_client_cert_verify = false;  // deprecated, no effect (as upstream)
  // Agent authentication (upstream PR #4340, plus the trusted proxy ranges).
  AgentAuthMode agent_auth_mode = AgentAuthMode::mtls;
  std::string agent_auth_forwarded_header = kDefaultForwardedHeader;
  std::string agent_auth_trusted_proxies = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,127.0.0.0/8,::1/128,fc00::/7";
  Duration request_timeout = std::chrono::seconds(30);
  Duration read_timeout = std::chrono::seconds(60);
  Duration write_timeout = std::chrono::seconds(60);
  Duration idle_timeout = std::chrono::seconds(120);
  std::string server_cert = "/certs/tls.crt";
  std::string server_key = "/certs/tls.key";
  Duration heartbeat_interval = std::chrono::seconds(30);
  Duration heartbeat_timeout = std::chrono::seconds(90);
  Duration shutdown_timeout = std::chrono::seconds(30);
  Duration status_heartbeat_interval = std::chrono::seconds(30);
  Duration startup_grace = std::chrono::seconds(15);
  Duration handshake_timeout = std::chrono::seconds(10);
  bool write_status = true;  // false: upstream's plane controllers stay the only status writer
  std::string planes_dir;  // empty: the Kubernetes plane source
  std::string kubeconfig;  // empty: $KUBECONFIG, ~/.kube/config, else in-cluster
  std::string kube_context;
  double kube_api_qps = 20;
  int64_t kube_api_burst = 30;
  std::string status_dir;  // default: <planes_dir>/status
  uint64_t max_message_size = 64u << 20;
  int64_t io_threads = 0;  // 0: one per core (effective_io_threads)
  // Limits (each refusal is logged and counted in cluster_gateway_limit_refusals_total).
  uint64_t max_sessions = 100000;  // agent sessions in this gateway
  uint64_t max_sessions_per_plane = 64;  // agent sessions per planeType/planeID
  uint64_t max_concurrent_handshakes = 0;  // TLS handshakes in progress at once (0: effective_max_concurrent_handshakes)
  uint64_t tls_session_cache = 20000;  // agent port: TLS sessions kept for resumption (0: none)
  Duration tls_session_lifetime = std::chrono::hours(1);  // how long a kept session may be resumed
  uint64_t max_pending_per_agent = 1000;  // proxied requests waiting for one agent connection
  uint64_t max_streams_per_agent = 100;  // open streams (watch, logs -f, exec, wirelogs) per agent connection
  uint64_t max_internal_connections = 1000;  // open caller connections on the internal port
  std::string proxy_policy_file;  // --proxy-policy-file: allow/deny rules per caller (empty: built-in deny-list only)
  log::Level log_level = log::Level::info;
  log::Format log_format = log::Format::json;
  // Several replicas (docs/operations.md, "Replicas"): upstream's chart flags, plus static peers.
  bool mesh = false;
  int64_t mesh_port = 8445;  // peer links and forwarded requests (mTLS); 0 picks a free port
  std::string mesh_service;  // headless Service whose EndpointSlices list the peers (Kubernetes mode)
  std::string mesh_ca_cert = "/mesh-certs/ca.crt";  // verifies peers, both ways
  std::string mesh_cert;  // this replica's peer certificate; empty: --server-cert
  std::string mesh_key;  // empty: --server-key
  std::string mesh_peers;  // "host:port,…": static peers (file source, demo, tests) instead of --mesh-service
  std::string mesh_server_name;  // name peer certificates are checked against; empty: the peer's host (static) or <svc>.<ns>.svc
  std::string replica_id;  // empty: $POD_NAME, else the host name
  std::string pod_namespace;  // empty: $POD_NAMESPACE, else the service account's namespace
  Duration mesh_lease_duration = std::chrono::seconds(15);  // a replica silent this long is dead; writer failover bound
  double mesh_rebalance_margin = 0.25;  // shed agents above (1 + margin) × fair share; negative: off
};

// --io-threads 0: one per core.
int effective_io_threads(const Config& c);
// --max-concurrent-handshakes 0: 64 per io thread.
inline constexpr uint64_t kHandshakesPerIoThread = 64;
uint64_t effective_max_concurrent_handshakes(const Config& c);

// What parse_cli decided.
enum class CliAction { run, exit_ok, exit_usage };
struct CliResult {
  CliAction action = CliAction::run;
  int exit_code() const { return action == CliAction::exit_ok ? 0 : 2; }
  // Not errors, to be logged once logging is set up: environment values upstream's rules ignore or
  // read partly, an unknown --log-level (info, as upstream), arguments after the flags (ignored).
  std::vector<std::string> warnings;
};

// Parses the arguments (argv without the program name) and the environment (`getenv`), as upstream's
// Go flags and environment rules do (see go_flag.hpp and docs/operations.md). Usage and errors go to
// `err` (Go's flag package: stderr), --version to `out`.
using GetEnv = std::function<std::optional<std::string>(const char* name)>;
CliResult parse_cli(const std::vector<std::string>& args, const GetEnv& getenv, Config& cfg, std::ostream& out, std::ostream& err,
                    const std::string& program = "cluster-gateway");
// The process's own argv and environment.
CliResult parse_cli(int argc, char** argv, Config& cfg);

}  // namespace cg::gateway
