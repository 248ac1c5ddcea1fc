#include "gateway/gateway.hpp"
#include "gateway/io_loop.hpp"

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include <unistd.h>

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
#include "kube/lease.hpp"
#include "mesh/kube_membership.hpp"
#include "mesh/mesh.hpp"
#include "plane_index/kube_source.hpp"
#include "plane_index/file_source.hpp"
#include "session/frames.hpp"
#include "tls/server_context.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {
// The label of every replica's own Lease, and the status writer's Lease (deploy/gateway/rbac.yaml).
constexpr std::string_view kReplicaLeaseLabel = "cluster-gateway.openchoreo.dev/role";
constexpr std::string_view kWriterLease = "cluster-gateway-status-writer";

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "cluster-gateway";
  return buf;
}
std::string read_pem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string(flag) + ": cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) throw std::runtime_error(std::string(flag) + ": " + path + " is empty");
  return ss.str();
}
}  // namespace

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
  // Several replicas (--mesh): the mesh, its listener on --mesh-port, and the registry the status
  // writer, the tunnel and the internal API see (local sessions + other replicas' reports).
  std::unique_ptr<mesh::Mesh> mesh;
  std::unique_ptr<InternalApi> mesh_api;
  session::SessionRegistry* view = nullptr;
  // With Kubernetes (--mesh-service): peers from the headless Service's EndpointSlices, a Lease per
  // replica (liveness), and the status writer's Lease.
  std::string kube_namespace;  // the kubeconfig context's or the service account's namespace
  std::unique_ptr<mesh::KubeMembership> membership;
  std::unique_ptr<kube::LeaderElector> own_lease, writer_lease;
  std::unique_ptr<kube::LeaseWatcher> leases;
  std::unique_ptr<PolicyFile> proxy_policy;  // --proxy-policy-file (polled every second)
  std::unique_ptr<HttpServer> health;
  std::atomic<bool> started{false}, stopped{false};
  // Shutdown, one way: draining from SIGTERM (not ready; the mesh listener refuses new forwarded
  // requests), then abandoning_waits once the drain window is over (requests still waiting for an
  // agent that moves are answered now instead of losing their connection when the process stops).
  enum class Drain : uint8_t { none, draining, abandoning_waits };
  std::atomic<Drain> drain{Drain::none};

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

  // The agent port's: a client certificate is requested (verified per CR), sessions kept for resumption.
  // A new context (certificate files changed) starts with an empty session cache.
  std::shared_ptr<boost::asio::ssl::context> agent_context() const {
    tls::ServerTlsOptions o{cfg.server_cert, cfg.server_key, ""};
    o.session_cache_entries = cfg.tls_session_cache;
    o.session_lifetime = std::chrono::duration_cast<std::chrono::seconds>(cfg.tls_session_lifetime);
    return tls::make_server_context(o);
  }
  std::shared_ptr<boost::asio::ssl::context> internal_context() const {
    tls::ServerTlsOptions o{cfg.server_cert, cfg.server_key, cfg.internal_mtls ? cfg.internal_client_ca : ""};
    o.request_client_cert = cfg.internal_mtls;
    return tls::make_server_context(o);
  }
  // The mesh listener's and the peer links' certificate (default: the server certificate).
  const std::string& mesh_cert() const { return cfg.mesh_cert.empty() ? cfg.server_cert : cfg.mesh_cert; }
  const std::string& mesh_key() const { return cfg.mesh_key.empty() ? cfg.server_key : cfg.mesh_key; }
  std::shared_ptr<boost::asio::ssl::context> mesh_server_context() const {
    tls::ServerTlsOptions mt{mesh_cert(), mesh_key(), cfg.mesh_ca_cert};
    mt.request_client_cert = true;
    return tls::make_server_context(mt);
  }
  std::string tls_files_stamp() const {
    std::string stamp;
    std::vector<std::string> files{cfg.server_cert, cfg.server_key, cfg.internal_client_ca};
    if (cfg.mesh) files.insert(files.end(), {mesh_cert(), mesh_key(), cfg.mesh_ca_cert});
    for (const auto& f : files) {
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
        auto agent_ctx = agent_context();
        auto internal_ctx = internal_context();
        // The mesh's material is loaded (and checked) before anything is swapped: a bad file leaves
        // every listener and link on the previous certificates.
        std::shared_ptr<boost::asio::ssl::context> mesh_ctx;
        std::optional<mesh::Credentials> mesh_creds;
        if (mesh) {
          mesh_ctx = mesh_server_context();
          mesh_creds = mesh::Credentials{read_pem(cfg.mesh_ca_cert, "--mesh-ca-cert"), read_pem(mesh_cert(), "--mesh-cert"),
                                         read_pem(mesh_key(), "--mesh-key")};
        }
        if (mesh_creds) mesh->set_credentials(std::move(*mesh_creds));  // throws before changing anything
        agent_listener->set_ssl_context(agent_ctx);
        internal_api->set_ssl_context(internal_ctx);
        if (mesh_ctx) mesh_api->set_ssl_context(mesh_ctx);
        metrics::tls_reload("ok");
        log::info("TLS certificates reloaded", {{"serverCert", cfg.server_cert},
                                                {"internalClientCA", cfg.internal_client_ca},
                                                {"meshCert", mesh ? mesh_cert() : std::string()}});
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
int64_t Gateway::internal_requests_active() const { return impl_->internal_api ? impl_->internal_api->active() : 0; }
uint16_t Gateway::internal_port() const { return impl_->internal_api ? impl_->internal_api->port() : 0; }
uint16_t Gateway::health_port() const { return impl_->health ? impl_->health->port() : 0; }
uint16_t Gateway::mesh_port() const { return impl_->mesh_api ? impl_->mesh_api->port() : 0; }
mesh::Mesh* Gateway::mesh() { return impl_->mesh.get(); }

std::string Gateway::not_ready_reason() const {
  if (impl_->drain.load() != Impl::Drain::none) return "draining";
  if (!impl_->started) return "starting";
  if (!impl_->index.synced()) return "plane source not synced";
  if (impl_->mesh && !impl_->mesh->synced()) return "waiting for the other replicas' session directories";
  return "";
}

void Gateway::start() {
  auto& m = *impl_;
  const Config& c = m.cfg;
  auto ssl = m.agent_context();
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
    m.kube_namespace = kc.default_namespace;
    m.kube = std::make_unique<kube::KubeClient>(m.ioc, std::move(kc), co);
    m.source = std::make_unique<plane::KubePlaneSource>(control, *m.kube, m.index);
    if (c.write_status) m.sink = std::make_unique<status::KubeStatusSink>(*m.kube);
  }
  m.view = m.registry.get();
  std::vector<mesh::PeerAddress> static_peers;
  if (c.mesh) {
    mesh::MeshOptions mo;
    mo.replica_id = c.replica_id.empty() ? host_name() : c.replica_id;
    mo.ca_pem = read_pem(c.mesh_ca_cert, "--mesh-ca-cert");
    mo.cert_pem = read_pem(m.mesh_cert(), "--mesh-cert");
    mo.key_pem = read_pem(m.mesh_key(), "--mesh-key");
    mo.lease_duration = c.mesh_lease_duration;
    mo.rebalance_margin = c.mesh_rebalance_margin;
    try {
      static_peers = mesh::parse_peers(c.mesh_peers);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("--mesh-peers: ") + e.what());
    }
    mo.static_leadership = c.mesh_service.empty();
    mo.expected_peers = static_peers.size();
    mo.server_name = c.mesh_server_name;
    std::string ns = c.pod_namespace.empty() ? m.kube_namespace : c.pod_namespace;
    if (!c.mesh_service.empty()) {
      if (!m.kube)
        throw std::runtime_error(
            "--mesh-service needs the Kubernetes API (the plane source without --planes-dir); with --planes-dir use "
            "--mesh-peers");
      if (ns.empty()) throw std::runtime_error("--mesh-service: no namespace: set --pod-namespace or POD_NAMESPACE");
      if (mo.server_name.empty()) mo.server_name = c.mesh_service + "." + ns + ".svc";
    }
    m.mesh = std::make_unique<mesh::Mesh>(m.ioc, control, *m.registry, mo);
    try {
      m.mesh->client_tls();  // a bad peer certificate or key fails the start, not the first stream
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("--mesh-cert/--mesh-key/--mesh-ca-cert: ") + e.what());
    }
    m.view = &m.mesh->registry();
    if (!c.mesh_service.empty()) {
      // Kubernetes does membership and election (docs/architecture.md, "Replicas").
      const auto lease = std::chrono::duration_cast<std::chrono::milliseconds>(c.mesh_lease_duration);
      const auto renew = lease * 2 / 3;
      const auto retry = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(200), lease * 2 / 15);
      const std::string& me = m.mesh->replica_id();
      m.own_lease = std::make_unique<kube::LeaderElector>(
          control, *m.kube,
          kube::LeaderElectorOptions{ns, me, me, {{std::string(kReplicaLeaseLabel), "replica"}}, lease, renew, retry},
          kube::LeaderCallbacks{});
      m.leases = std::make_unique<kube::LeaseWatcher>(
          control, *m.kube, kube::LeaseWatcherOptions{ns, std::string(kReplicaLeaseLabel) + "=replica"}, [&m] {
            if (!m.leases || !m.leases->synced()) return;
            auto live = m.leases->live();
            m.mesh->set_alive(std::set<std::string>(live.begin(), live.end()));
          });
      kube::LeaderCallbacks writer_cb;
      writer_cb.on_started_leading = [mp = m.mesh.get()] { mp->set_leader(true); };
      writer_cb.on_stopped_leading = [mp = m.mesh.get()] { mp->set_leader(false); };
      m.writer_lease = std::make_unique<kube::LeaderElector>(
          control, *m.kube, kube::LeaderElectorOptions{ns, std::string(kWriterLease), me, {}, lease, renew, retry},
          std::move(writer_cb));
      m.membership = std::make_unique<mesh::KubeMembership>(
          *m.kube, ns, c.mesh_service, me, static_cast<uint16_t>(c.mesh_port),
          [mp = m.mesh.get()](const std::vector<mesh::PeerAddress>& peers) { mp->set_peers(peers); });
    }
  }
  if (c.write_status) {
    status::StatusWriterOptions so;
    so.heartbeat_interval = c.status_heartbeat_interval;
    so.startup_grace = c.startup_grace;
    m.writer = std::make_unique<status::StatusWriter>(control, m.index, *m.view, *m.sink, so);
    if (m.mesh) {
      // Only the elected replica writes; the others keep their writer idle until they are elected.
      m.writer->set_active(false);
      m.mesh->on_leadership([w = m.writer.get()](bool leading) { w->set_active(leading); });
    }
  } else {
    log::info("status writing disabled (--write-status=false): upstream's plane controllers write agentConnection");
  }
  m.source->start();
  if (m.writer) m.writer->start();

  auto tunnel =
      std::make_shared<session::Tunnel>(m.ioc, *m.view, session::TunnelLimits{c.max_pending_per_agent, c.max_streams_per_agent});
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
                           .registry = *m.view,
                           .tunnel = *tunnel,
                           .request_timeout = c.request_timeout,
                           .read_timeout = c.read_timeout,
                           .idle_timeout = c.idle_timeout,
                           .write_timeout = c.write_timeout,
                           .handshake_timeout = c.handshake_timeout,
                           .max_connections = static_cast<size_t>(c.max_internal_connections)};
  if (m.mesh) {
    // The mesh listener: peers only (--mesh-ca-cert both ways); no policy file (the entry replica
    // applied it), no second hop.
    InternalApiDeps mesh_deps = api_deps;
    mesh_deps.active = std::make_shared<std::atomic<int64_t>>(0);
    mesh_deps.draining = [&m] { return m.drain.load() != Impl::Drain::none; };
    mesh_deps.mesh_receive = [mp = m.mesh.get()](std::string_view body) { return mp->receive(body); };
    mesh_deps.replica_id = m.mesh->replica_id();
    try {
      m.mesh_api = std::make_unique<InternalApi>(m.ioc, m.mesh_server_context(), c.bind, c.mesh_port, mesh_deps);
    } catch (const std::exception& e) {
      throw std::runtime_error("--mesh-port " + std::to_string(c.mesh_port) + ": " + e.what());
    }
    api_deps.mesh = m.mesh.get();
    api_deps.replica_id = m.mesh->replica_id();
    api_deps.stop_waiting = [&m] { return m.drain.load() == Impl::Drain::abandoning_waits; };
  }
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
  if (m.mesh) {
    m.mesh_api->start();
    m.mesh->start();
    if (c.mesh_service.empty()) m.mesh->set_peers(static_peers);  // with Kubernetes: the EndpointSlices'
    if (m.own_lease) {
      m.own_lease->start();
      m.leases->start();
      m.writer_lease->start();
      m.membership->start();
    }
  }
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
                                        {"meshPort", mesh_port()},
                                        {"replica", m.mesh ? m.mesh->replica_id() : ""},
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
  m.drain = Impl::Drain::draining;
  metrics::set_scrape_hook({});
  log::info("shutting down", {{"sessions", m.registry->size()}, {"shutdownTimeout", format_go_duration(m.cfg.shutdown_timeout)}});
  m.stop_reloader();
  if (m.proxy_policy) m.proxy_policy->stop();
  // Peers stop picking this replica's sessions; its agents are reported moving (not disconnected)
  // while they reconnect elsewhere.
  if (m.mesh) m.mesh->drain(std::min<Duration>(m.cfg.shutdown_timeout / 4, std::chrono::seconds(2)) + std::chrono::seconds(1));
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
    // With replicas, requests being served count too (a request forwarded to another replica, or one
    // waiting for an agent that moves): the internal API's own count covers both.
    auto busy = [&m] {
      return (m.tunnel_ref ? m.tunnel_ref->pending() : 0) +
             (m.mesh ? static_cast<size_t>(std::max<int64_t>(0, m.internal_api->active())) +
                           static_cast<size_t>(std::max<int64_t>(0, m.mesh_api->active()))
                     : 0);
    };
    size_t waited_for = busy();
    while (busy() > 0 && std::chrono::steady_clock::now() < drain_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (busy() > 0 && m.mesh) {
      // What still waits for an agent on its way to another replica gets its answer now (a 502 the
      // caller sees and the log names) rather than a connection closed without one at the exit.
      m.drain = Impl::Drain::abandoning_waits;
      const auto answer_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (busy() > 0 && std::chrono::steady_clock::now() < answer_deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const size_t left = busy();
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
  // With live peers the next writer takes over after this replica's `bye` (or its Lease release) and
  // writes what its agents became. Alone (no replica in the directory), the last writer writes every
  // CR disconnected, as a single gateway does: its own sessions are going away, whether or not they
  // have finished closing (holds for moving agents do not apply to a flush).
  const bool peers_live = m.mesh && !m.mesh->directory().replicas().empty();
  bool flushed = !m.writer || peers_live || m.writer->flush(deadline, /*as_disconnected=*/true);
  if (m.writer_lease) m.writer_lease->stop(/*release=*/true);  // the next writer takes over at once
  if (m.membership) m.membership->stop();
  if (m.mesh_api) m.mesh_api->stop();
  if (m.mesh) m.mesh->stop(std::min(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(2)));
  if (m.leases) m.leases->stop();
  if (m.own_lease) m.own_lease->stop(/*release=*/true);
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
