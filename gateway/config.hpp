// The gateway's configuration (flags and environment variables; see cli.cpp and docs/operations.md).
#pragma once
#include <cstdint>
#include <string>

#include "common/log.hpp"
#include "common/time.hpp"

namespace cg::gateway {

struct Config {
  std::string bind = "0.0.0.0";
  uint16_t port = 8443;         // agent listener; 0 picks a free port
  uint16_t health_port = 8080;  // /health, /ready, /metrics
  uint16_t internal_port = 8444;  // internal API for control-plane callers
  bool internal_mtls = true;
  std::string internal_client_ca;
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
  std::string planes_dir;  // empty: the Kubernetes plane source
  std::string kubeconfig;  // empty: $KUBECONFIG, ~/.kube/config, else in-cluster
  std::string kube_context;
  double kube_api_qps = 20;
  int kube_api_burst = 30;
  std::string status_dir;  // default: <planes_dir>/status
  size_t max_message_size = 64u << 20;
  int io_threads = 0;  // 0: one per core
  // Limits (each refusal is logged and counted in cluster_gateway_limit_refusals_total).
  size_t max_sessions = 100000;          // agent sessions in this gateway
  size_t max_sessions_per_plane = 64;    // agent sessions per planeType/planeID
  size_t max_concurrent_handshakes = 0;  // TLS handshakes in progress at once (0: 64 per io thread)
  size_t max_pending_per_agent = 1000;   // proxied requests waiting for one agent connection
  size_t max_streams_per_agent = 100;    // open streams (watch, logs -f, exec, wirelogs) per agent connection
  log::Level log_level = log::Level::info;
  log::Format log_format = log::Format::json;
};

// Parses argv (and environment variables). Returns -1 to continue, else the exit code
// (0 after --help/--version, 2 after a usage error, with a one-line message on stderr).
int parse_cli(int argc, char** argv, Config& cfg);

}  // namespace cg::gateway
