#include <CLI/CLI.hpp>
#include <iostream>

#include "gateway/config.hpp"

namespace cg::gateway {
namespace {

struct DurationFlag {
  const char* name;
  Duration* target;
  std::string text;
};

}  // namespace

int parse_cli(int argc, char** argv, Config& cfg) {
  CLI::App app{"cluster-gateway: accepts OpenChoreo cluster agents over mTLS WebSocket, verifies them per plane CR, "
               "watches them with heartbeats and writes their status onto the plane CRs."};
  app.set_version_flag("--version", std::string("cluster-gateway ") + CG_VERSION);
  app.option_defaults()->always_capture_default();

  int port = cfg.port, health_port = cfg.health_port;
  std::string log_level = "info", log_format = "json";
  std::vector<DurationFlag> durations = {
      {"--heartbeat-interval", &cfg.heartbeat_interval, "30s"},
      {"--heartbeat-timeout", &cfg.heartbeat_timeout, "90s"},
      {"--shutdown-timeout", &cfg.shutdown_timeout, "30s"},
      {"--status-heartbeat-interval", &cfg.status_heartbeat_interval, "30s"},
      {"--startup-grace", &cfg.startup_grace, "15s"},
      {"--handshake-timeout", &cfg.handshake_timeout, "10s"},
      {"--request-timeout", &cfg.request_timeout, "30s"},
      {"--read-timeout", &cfg.read_timeout, "60s"},
      {"--write-timeout", &cfg.write_timeout, "60s"},
      {"--idle-timeout", &cfg.idle_timeout, "120s"},
  };
  app.add_option("--port", port, "Agent WebSocket (TLS) port; 0 picks a free port")->envname("AGENT_SERVER_PORT");
  app.add_option("--health-port", health_port, "Plain HTTP port for /health, /ready and /metrics; 0 picks a free port");
  int internal_port = cfg.internal_port;
  bool skip_verify = false;
  app.add_option("--internal-port", internal_port, "Internal API (TLS) port for control-plane callers; 0 picks a free port")
      ->envname("AGENT_INTERNAL_PORT");
  app.add_option("--internal-mtls", cfg.internal_mtls,
                 "Require internal API clients to present a certificate from --internal-client-ca-cert")
      ->envname("INTERNAL_MTLS_ENABLED");
  app.add_option("--internal-client-ca-cert", cfg.internal_client_ca, "CA bundle for internal API client certificates")
      ->envname("INTERNAL_CLIENT_CA_PATH");
  app.add_option("--skip-client-cert-verify", skip_verify, "Deprecated; has no effect (as upstream)")
      ->envname("SKIP_CLIENT_CERT_VERIFY");
  app.add_option("--bind", cfg.bind, "Address to listen on (default: all IPv4 interfaces)");
  app.add_option("--server-cert", cfg.server_cert, "Server certificate chain (PEM)")->envname("SERVER_CERT_PATH");
  app.add_option("--server-key", cfg.server_key, "Server private key (PEM)")->envname("SERVER_KEY_PATH");
  const char* help[] = {"WebSocket ping period", "Drop an agent when no pong arrives within this time",
                        "Graceful shutdown budget (SIGTERM)",
                        "Minimum time between heartbeat-only status writes per CR",
                        "After start, wait this long before writing CRs disconnected that a previous run left connected",
                        "TLS handshake and HTTP upgrade deadline",
                        "How long an internal API proxy request waits for the agent's answer",
                        "Internal API: deadline to read a request body",
                        "Internal API: deadline to write a response",
                        "Internal API: how long an idle keep-alive connection stays open"};
  for (size_t i = 0; i < durations.size(); ++i)
    app.add_option(durations[i].name, durations[i].text, std::string(help[i]) + " (Go duration: 500ms, 30s, 1m30s)");
  app.add_option("--planes-dir", cfg.planes_dir,
                 "Directory of plane CR and Secret YAML files (selects the embedded file plane source)");
  app.add_option("--kubeconfig", cfg.kubeconfig,
                 "Kubeconfig for the Kubernetes plane source (default: the first file in $KUBECONFIG, else the "
                 "in-cluster service account, else ~/.kube/config)");
  app.add_option("--kube-context", cfg.kube_context, "Kubeconfig context (default: current-context)");
  app.add_option("--kube-api-qps", cfg.kube_api_qps, "Client-side rate limit for Kubernetes API calls (requests/s; 0: none)");
  app.add_option("--kube-api-burst", cfg.kube_api_burst, "Burst for --kube-api-qps");
  app.add_option("--status-dir", cfg.status_dir, "Where status files go with --planes-dir (default: DIR/status)");
  app.add_option("--max-message-size", cfg.max_message_size, "Largest WebSocket message accepted from an agent, bytes");
  app.add_option("--max-agent-sessions", cfg.max_sessions, "Most agent sessions this gateway holds; more are refused with 503")
      ->envname("MAX_AGENT_SESSIONS")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-agents-per-plane", cfg.max_sessions_per_plane,
                 "Most agent sessions per planeType/planeID; more are refused with 503")
      ->envname("MAX_AGENTS_PER_PLANE")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-concurrent-handshakes", cfg.max_concurrent_handshakes,
                 "Most agent TLS handshakes in progress at once; later connections wait their turn (0: 64 per io thread)")
      ->envname("MAX_CONCURRENT_HANDSHAKES")->capture_default_str();
  app.add_option("--max-pending-per-agent", cfg.max_pending_per_agent,
                 "Most proxied requests waiting for one agent connection; more get 503")
      ->envname("MAX_PENDING_PER_AGENT")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-streams-per-agent", cfg.max_streams_per_agent,
                 "Most open streams (watch, logs -f, exec, wirelogs) per agent connection; more get 503")
      ->envname("MAX_STREAMS_PER_AGENT")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--io-threads", cfg.io_threads, "I/O threads (0: one per core)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->envname("LOG_LEVEL");
  app.add_option("--log-format", log_format, "json or text");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << app.version() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "cluster-gateway: " << e.what() << " (see --help)\n";
    return 2;
  }
  auto fail = [](const std::string& msg) {
    std::cerr << "cluster-gateway: " << msg << "\n";
    return 2;
  };
  if (port < 0 || port > 65535) return fail("--port: " + std::to_string(port) + " is not a port number");
  if (health_port < 0 || health_port > 65535) return fail("--health-port: " + std::to_string(health_port) + " is not a port number");
  if (internal_port < 0 || internal_port > 65535)
    return fail("--internal-port: " + std::to_string(internal_port) + " is not a port number");
  cfg.internal_port = static_cast<uint16_t>(internal_port);
  if (skip_verify) std::cerr << "cluster-gateway: warning: --skip-client-cert-verify is deprecated and has no effect\n";
  cfg.port = static_cast<uint16_t>(port);
  cfg.health_port = static_cast<uint16_t>(health_port);
  for (auto& d : durations) {
    auto v = parse_go_duration(d.text);
    if (!v) return fail(std::string(d.name) + ": '" + d.text + "' is not a duration (examples: 500ms, 30s, 1m30s)");
    *d.target = *v;
  }
  if (cfg.heartbeat_interval <= Duration::zero()) return fail("--heartbeat-interval must be greater than 0");
  if (cfg.heartbeat_timeout <= Duration::zero()) return fail("--heartbeat-timeout must be greater than 0");
  if (cfg.status_heartbeat_interval <= Duration::zero()) return fail("--status-heartbeat-interval must be greater than 0");
  if (cfg.handshake_timeout <= Duration::zero()) return fail("--handshake-timeout must be greater than 0");
  if (!log::parse_level(log_level, cfg.log_level)) return fail("--log-level: '" + log_level + "' is not one of debug, info, warn, error");
  if (!log::parse_format(log_format, cfg.log_format)) return fail("--log-format: '" + log_format + "' is not one of json, text");
  if (cfg.max_message_size < 1024) return fail("--max-message-size must be at least 1024");
  if (cfg.io_threads < 0) return fail("--io-threads must not be negative");
  if (cfg.request_timeout <= Duration::zero()) return fail("--request-timeout must be greater than 0");
  if (cfg.kube_api_qps < 0) return fail("--kube-api-qps must not be negative");
  if (cfg.kube_api_burst < 1) return fail("--kube-api-burst must be at least 1");
  if (!cfg.planes_dir.empty() && cfg.status_dir.empty()) cfg.status_dir = cfg.planes_dir + "/status";
  if (cfg.planes_dir.empty() && !cfg.status_dir.empty())
    return fail("--status-dir goes with --planes-dir (with the Kubernetes source, status is written onto the CRs)");
  if (cfg.internal_mtls && cfg.internal_client_ca.empty())
    return fail("--internal-client-ca-cert is required while --internal-mtls is true (use --internal-mtls=false only for development)");

  return -1;
}

}  // namespace cg::gateway
