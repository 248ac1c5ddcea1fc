#include "gateway/gateway.hpp"
#include "gateway/io_loop.hpp"

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/control_timer.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "gateway/agent_listener.hpp"
#include "gateway/authorizer.hpp"
#include "gateway/http_server.hpp"
#include "gateway/internal_api.hpp"
#include "gateway/proxy_policy.hpp"
#include "session/tunnel.hpp"
#include "k8s_status_writer/file_sink.hpp"
#include "k8s_status_writer/kube_sink.hpp"
#include "kube/client.hpp"
#include "kube/config.hpp"
#include "plane_index/kube_source.hpp"
#include "plane_index/file_source.hpp"
#include "session/frames.hpp"
#include "tls/server_context.hpp"

namespace cg::gateway {
using namespace cg::net;

struct Gateway::Impl {
  Config cfg;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  // The control thread: one thread running control_ioc, for the timer-driven control work that
  // blocks (file reads, YAML and CA parsing, PlaneIndex::replace, the file status sink's synchronous
  // writes, TLS context builds) and must not hold up an io thread. Each object's timer is a
  // ControlTimer on a strand of this executor (docs/architecture.md, "Threads"). Declared before the
  // objects using it so that it outlives them.
  asio::io_context control_ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> control_work;
  std::thread control_thread;
  plane::PlaneIndex index;
  std::unique_ptr<session::SessionRegistry> registry = session::make_local_registry();
  std::unique_ptr<kube::KubeClient> kube;
  std::unique_ptr<plane::PlaneSource> source;
  std::unique_ptr<status::StatusSink> sink;
  std::unique_ptr<status::StatusWriter> writer;
  std::shared_ptr<session::Tunnel> tunnel_ref;
  std::unique_ptr<AgentListener> agent_listener;
  std::unique_ptr<InternalApi> internal_api;
  std::unique_ptr<PolicyFile> proxy_policy;  // --proxy-policy-file (polled every second)
  std::unique_ptr<HttpServer> health;
  std::atomic<bool> started{false}, draining{false}, stopped{false};

  explicit Impl(Config c) : cfg(std::move(c)) {}

  // Certificate reload (cert-manager renewals): the server certificate, key and internal CA files are
  // checked every 2 s; on a change new contexts are built and used by new connections, live sessions
  // keep theirs. A bad new file is logged and the previous certificates stay in use. Runs on the
  // control thread; tls_stamp is touched there only (and in start() before the timer is armed).
  std::optional<ControlTimer> reloader;
  std::string tls_stamp;

  void start_control() {
    if (control_thread.joinable()) return;
    control_work.emplace(control_ioc.get_executor());
    control_thread = std::thread([this] { run_io(control_ioc); });
  }
  // Every control object is stopped before this (their stop() waits on the control thread).
  void stop_control() {
    if (!control_thread.joinable()) return;
    control_work.reset();
    control_ioc.stop();
    control_thread.join();
  }

  std::shared_ptr<boost::asio::ssl::context> internal_context() const {
    tls::ServerTlsOptions o{cfg.server_cert, cfg.server_key, cfg.internal_mtls ? cfg.internal_client_ca : ""};
    o.request_client_cert = cfg.internal_mtls;
    return tls::make_server_context(o);
  }
  std::string tls_files_stamp() const {
    std::string stamp;
    for (const auto& f : {cfg.server_cert, cfg.server_key, cfg.internal_client_ca}) {
      std::ifstream in(f, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      stamp += std::to_string(std::hash<std::string>{}(ss.str())) + ";";
    }
    return stamp;
  }
  void schedule_reload() {
    reloader->run_after(std::chrono::seconds(2), [this] { reload_tick(); });
  }
  void reload_tick() {
    check_tls_files();
    schedule_reload();
  }
  void check_tls_files() {
    std::string stamp = tls_files_stamp();
    if (stamp == tls_stamp) return;
    tls_stamp = stamp;
    {
      try {
        auto agent_ctx = tls::make_server_context({cfg.server_cert, cfg.server_key, ""});
        auto internal_ctx = internal_context();
        agent_listener->set_ssl_context(agent_ctx);
        internal_api->set_ssl_context(internal_ctx);
        metrics::tls_reload("ok");
        log::info("TLS certificates reloaded", {{"serverCert", cfg.server_cert}, {"internalClientCA", cfg.internal_client_ca}});
      } catch (const std::exception& e) {
        metrics::tls_reload("error");
        log::error("TLS certificate reload failed; the previous certificates stay in use", {{"reason", e.what()}});
      }
    }
  }
  void stop_reloader() {
    if (reloader) reloader->stop();
  }
};

Gateway::Gateway(Config cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
Gateway::~Gateway() { shutdown(); }

plane::PlaneIndex& Gateway::index() { return impl_->index; }
session::SessionRegistry& Gateway::registry() { return *impl_->registry; }
status::StatusWriter* Gateway::status_writer() { return impl_->writer.get(); }
const Config& Gateway::config() const { return impl_->cfg; }
uint16_t Gateway::agent_port() const { return impl_->agent_listener ? impl_->agent_listener->port() : 0; }
size_t Gateway::pending_requests() const { return impl_->tunnel_ref ? impl_->tunnel_ref->pending() : 0; }
uint16_t Gateway::internal_port() const { return impl_->internal_api ? impl_->internal_api->port() : 0; }
uint16_t Gateway::health_port() const { return impl_->health ? impl_->health->port() : 0; }

std::string Gateway::not_ready_reason() const {
  if (impl_->draining) return "draining";
  if (!impl_->started) return "starting";
  if (!impl_->index.synced()) return "plane source not synced";
  return "";
}

void Gateway::start() {
  auto& m = *impl_;
  const Config& c = m.cfg;
  auto ssl = tls::make_server_context({c.server_cert, c.server_key, ""});
  m.tls_stamp = m.tls_files_stamp();
  m.start_control();
  const asio::any_io_executor control = m.control_ioc.get_executor();
  if (!c.proxy_policy_file.empty()) {
    try {
      m.proxy_policy = std::make_unique<PolicyFile>(control, c.proxy_policy_file);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("--proxy-policy-file: ") + e.what());
    }
  }

  // Re-verify live sessions whenever a plane's CRs or CAs change.
  m.index.add_listener([&m](const plane::IndexChange& ch) {
    for (const auto& [type, id] : ch.planes) reverify_plane(m.index, *m.registry, type, id);
  });

  if (!c.planes_dir.empty()) {
    // Polled every 250 ms; a changed file is applied once it has stayed the same for 500 ms, so a file
    // caught half-written is never loaded (a change is in force 0.5 to 0.75 s after its last write).
    m.source = std::make_unique<plane::FilePlaneSource>(control, c.planes_dir, m.index, std::chrono::milliseconds(250),
                                                        std::chrono::milliseconds(500));
    if (c.write_status) m.sink = std::make_unique<status::FileStatusSink>(c.status_dir);
  } else {
    kube::KubeConfig kc;
    try {
      kc = kube::load_default(c.kubeconfig, c.kube_context);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("no plane source: pass --planes-dir DIR, or make the Kubernetes API reachable "
                                           "(--kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster): ") +
                               e.what());
    }
    log::info("Kubernetes plane source", {{"api", kc.source}, {"qps", c.kube_api_qps}, {"burst", c.kube_api_burst}});
    kube::ClientOptions co;
    co.qps = c.kube_api_qps;
    co.burst = c.kube_api_burst;
    m.kube = std::make_unique<kube::KubeClient>(m.ioc, std::move(kc), co);
    m.source = std::make_unique<plane::KubePlaneSource>(control, *m.kube, m.index);
    if (c.write_status) m.sink = std::make_unique<status::KubeStatusSink>(*m.kube);
  }
  if (c.write_status) {
    status::StatusWriterOptions so;
    so.heartbeat_interval = c.status_heartbeat_interval;
    so.startup_grace = c.startup_grace;
    m.writer = std::make_unique<status::StatusWriter>(control, m.index, *m.registry, *m.sink, so);
  } else {
    log::info("status writing disabled (--write-status=false): upstream's plane controllers write agentConnection");
  }
  m.source->start();
  if (m.writer) m.writer->start();

  auto tunnel = std::make_shared<session::Tunnel>(m.ioc, *m.registry,
                                                  session::TunnelLimits{c.max_pending_per_agent, c.max_streams_per_agent});
  m.tunnel_ref = tunnel;
  std::string proxies_error;
  auto trusted_proxies = parse_ip_ranges(c.agent_auth_trusted_proxies, proxies_error);
  if (!trusted_proxies) throw std::runtime_error("--agent-auth-trusted-proxies: " + proxies_error);
  AgentListenerDeps deps{.index = m.index,
                         .registry = *m.registry,
                         .frames = tunnel,
                         .session_options = session::AgentSessionOptions{c.heartbeat_interval, c.heartbeat_timeout,
                                                                         c.max_message_size, 256u << 20, c.handshake_timeout},
                         .handshake_timeout = c.handshake_timeout,
                         .max_sessions = c.max_sessions,
                         .max_sessions_per_plane = c.max_sessions_per_plane,
                         .max_concurrent_handshakes = effective_max_concurrent_handshakes(c),
                         .auth_mode = c.agent_auth_mode,
                         .forwarded_header = c.agent_auth_forwarded_header,
                         .trusted_proxies = std::move(*trusted_proxies)};
  const int io_threads = effective_io_threads(c);
  if (c.agent_auth_mode == AgentAuthMode::forwarded_header)
    log::warn("agent authentication using forwarded header",
              {{"mode", to_string(c.agent_auth_mode)},
               {"header", c.agent_auth_forwarded_header},
               {"trustedProxies", c.agent_auth_trusted_proxies},
               {"note",
                "the header is trusted from --agent-auth-trusted-proxies only; the agent port must be "
                "reachable only through the TLS-terminating proxy, and every other ingress path must strip "
                "the header"}});
  try {
    m.agent_listener = std::make_unique<AgentListener>(m.ioc, ssl, c.bind, c.port, deps);
  } catch (const std::exception& e) {
    throw std::runtime_error("--port " + std::to_string(c.port) + ": cannot listen on " + c.bind + ": " + e.what());
  }
  if (!c.internal_mtls)
    log::warn("internal API mTLS is disabled (--internal-mtls=false): any client can call /api/*; use only for development");
  auto internal_ssl = m.internal_context();
  InternalApiDeps api_deps{.index = m.index,
                           .registry = *m.registry,
                           .tunnel = *tunnel,
                           .request_timeout = c.request_timeout,
                           .read_timeout = c.read_timeout,
                           .idle_timeout = c.idle_timeout,
                           .write_timeout = c.write_timeout,
                           .handshake_timeout = c.handshake_timeout,
                           .max_connections = static_cast<size_t>(c.max_internal_connections)};
  if (m.proxy_policy) api_deps.proxy_policy = [p = m.proxy_policy.get()] { return p->current(); };
  try {
    m.internal_api = std::make_unique<InternalApi>(m.ioc, internal_ssl, c.bind, c.internal_port, api_deps);
  } catch (const std::exception& e) {
    throw std::runtime_error("--internal-port " + std::to_string(c.internal_port) + ": cannot listen on " + c.bind + ": " +
                             e.what());
  }
  try {
    m.health =
        std::make_unique<HttpServer>(m.ioc, c.bind, c.health_port, [this](const std::string& method, const std::string& target) {
          std::string path = target.substr(0, target.find('?'));
          if (method != "GET" && method != "HEAD") return HttpReply{405, "text/plain; charset=utf-8", "method not allowed\n"};
          if (path == "/metrics") return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", metrics::serialize()};
          if (path == "/health" || path == "/healthz") return HttpReply{200, "text/plain; charset=utf-8", "OK"};
          if (path == "/ready" || path == "/readyz") {
            auto why = not_ready_reason();
            if (why.empty()) return HttpReply{200, "text/plain; charset=utf-8", "OK"};
            return HttpReply{503, "text/plain; charset=utf-8", "not ready: " + why + "\n"};
          }
          return HttpReply{404, "text/plain; charset=utf-8", "404 page not found\n"};
        });
  } catch (const std::exception& e) {
    throw std::runtime_error("--health-port " + std::to_string(c.health_port) + ": cannot listen on " + c.bind + ": " + e.what());
  }
  metrics::set_scrape_hook([&m] {
    std::optional<SysTime> earliest;
    for (const auto& s : m.registry->all()) {
      auto t = s.handle->peer().not_after();
      if (!earliest || t < *earliest) earliest = t;
    }
    double secs = earliest ? std::chrono::duration<double>(*earliest - std::chrono::system_clock::now()).count() : 0;
    metrics::set_earliest_agent_cert_expiry(secs, earliest.has_value());
  });
  m.work.emplace(m.ioc.get_executor());
  for (int i = 0; i < io_threads; ++i) m.threads.emplace_back([&m] { run_io(m.ioc); });
  m.agent_listener->start();
  m.internal_api->start();
  m.reloader.emplace(control);
  m.schedule_reload();
  if (m.proxy_policy) m.proxy_policy->start();
  m.health->start();
  m.started = true;
  log::info("cluster-gateway started", {{"agentPort", agent_port()},
                                        {"healthPort", health_port()},
                                        {"internalPort", internal_port()},
                                        {"internalMTLS", c.internal_mtls},
                                        {"agentAuthMode", to_string(c.agent_auth_mode)},
                                        {"writeStatus", c.write_status},
                                        {"bind", c.bind},
                                        {"ioThreads", io_threads},
                                        {"planeSource", c.planes_dir.empty() ? "kubernetes" : "file"},
                                        {"planesDir", c.planes_dir},
                                        {"statusDir", c.status_dir},
                                        {"heartbeatInterval", format_go_duration(c.heartbeat_interval)},
                                        {"heartbeatTimeout", format_go_duration(c.heartbeat_timeout)}});
}

void Gateway::shutdown() {
  auto& m = *impl_;
  if (m.stopped.exchange(true)) return;
  if (!m.started) {
    if (m.proxy_policy) m.proxy_policy->stop();
    if (m.writer) m.writer->stop();
    if (m.source) m.source->stop();
    m.stop_control();
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + m.cfg.shutdown_timeout;
  m.draining = true;
  metrics::set_scrape_hook({});
  log::info("shutting down", {{"sessions", m.registry->size()}, {"shutdownTimeout", format_go_duration(m.cfg.shutdown_timeout)}});
  m.stop_reloader();
  if (m.proxy_policy) m.proxy_policy->stop();
  m.agent_listener->stop();
  m.internal_api->stop();
  m.registry->close_admission();
  // Agents that understand GOAWAY (upstream's newer agents, the simulator) reconnect promptly with
  // jitter; older agents ignore the frame and see the close. GOAWAYs are spread over a drain window
  // (at most a quarter of the shutdown budget, 2 s) so that reconnects do not arrive as one storm.
  {
    auto sessions = m.registry->all();
    auto goaway = std::make_shared<const std::string>(R"({"type":"goaway","reason":"gateway draining"})");
    const auto window = std::min<Duration>(m.cfg.shutdown_timeout / 4, std::chrono::seconds(2));
    const auto step = sessions.empty() ? Duration::zero() : window / static_cast<int64_t>(sessions.size());
    for (const auto& s : sessions) {
      s.handle->send_text(goaway);
      if (step > Duration::zero()) std::this_thread::sleep_for(step);
    }
    // In-flight requests finish: replies still flow on the open sessions, and nothing new is
    // dispatched once admission is closed (pick() finds no session). Bounded by a quarter of the
    // budget (at most 5 s) after the GOAWAYs.
    const auto drain_deadline =
        std::chrono::steady_clock::now() + std::min<Duration>(m.cfg.shutdown_timeout / 4, std::chrono::seconds(5));
    size_t waited_for = m.tunnel_ref ? m.tunnel_ref->pending() : 0;
    while (m.tunnel_ref && m.tunnel_ref->pending() > 0 && std::chrono::steady_clock::now() < drain_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const size_t left = m.tunnel_ref ? m.tunnel_ref->pending() : 0;
    log::info("agent sessions drained",
              {{"sessions", sessions.size()}, {"inFlightAtGoaway", waited_for}, {"inFlightLeft", left}});
    for (const auto& s : sessions) s.handle->close(1001, "gateway shutting down", session::CloseCause::shutdown);
  }
  // Each session closes its socket at most its close timeout (1 s) after sending the close frame,
  // whether or not the agent answers (upstream's agent never closes its old socket); this wait is
  // only a backstop, within half the budget.
  const auto sessions_deadline = std::chrono::steady_clock::now() +
                                 std::min<Duration>(m.cfg.shutdown_timeout / 2, session::AgentSessionOptions{}.close_timeout +
                                                                                    std::chrono::milliseconds(500));
  while (m.registry->size() > 0 && std::chrono::steady_clock::now() < sessions_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (m.source) m.source->stop();
  bool flushed = !m.writer || m.writer->flush(deadline, /*as_disconnected=*/true);
  if (!flushed) log::warn("shutdown timeout reached before every status was written");
  if (m.writer) m.writer->stop();
  m.stop_control();
  if (m.kube) m.kube->shutdown();
  m.health->stop();
  m.work.reset();
  m.ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
  log::info("stopped", {{"statusFlushed", flushed}});
}

}  // namespace cg::gateway
