// The internal API for control-plane callers (upstream §2.3–2.6): TLS with client certificates
// required and verified in the handshake (--internal-client-ca-cert), /api/proxy tunnelling, and
// the plane lifecycle/status endpoints.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/time.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"
#include "mesh/mesh.hpp"
#include "session/tunnel.hpp"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace cg::gateway {

struct Policy;

struct InternalApiDeps {
  plane::PlaneIndex& index;
  session::SessionRegistry& registry;
  session::Tunnel& tunnel;
  // From Config (gateway.cpp fills them; no defaults here).
  Duration request_timeout;
  Duration read_timeout;
  Duration idle_timeout;
  Duration write_timeout;
  Duration handshake_timeout;  // TLS handshake, and exec's WebSocket upgrade
  size_t max_connections;  // open caller connections (exec WebSockets leave the count once handed over)
  // The --proxy-policy-file policy in force (empty function or null: the built-in deny-list only).
  std::function<std::shared_ptr<const Policy>()> proxy_policy = {};
  // Several replicas (docs/architecture.md, "Replicas"). The entry listener: requests for a CR without
  // a local session go one hop to a replica that has one (`mesh`), and answers carry
  // X-Cluster-Gateway-Entry-Pod. The mesh listener (peers only, --mesh-ca-cert): `mesh_receive` takes
  // POST /mesh/v1/directory, the internal API is served from local sessions only (never forwarded
  // again), and answers carry X-Cluster-Gateway-Served-By.
  mesh::Mesh* mesh = nullptr;
  std::function<mesh::Mesh::Answer(std::string_view body)> mesh_receive = {};
  std::string replica_id = {};  // set with either of the two above
  // The mesh listener: true once this replica is shutting down (forwarded requests get 503 with
  // X-Cluster-Gateway-Draining, and the entry replica tries again elsewhere).
  std::function<bool()> draining = {};
  // The entry listener with a mesh: true once the shutdown's drain window is over; a request waiting
  // for an agent that moves to another replica stops waiting and is answered (no agent: 502).
  std::function<bool()> stop_waiting = {};
  // Connections accepted and not yet answered once, and requests being served (from the header read to
  // the answer written; streams until handed over); not kept-alive connections waiting idle.
  std::shared_ptr<std::atomic<int64_t>> active = std::make_shared<std::atomic<int64_t>>(0);
  // Links of their own held by caller connections to other replicas (gateway/mesh_hop.*).
  std::shared_ptr<std::atomic<int64_t>> hop_links = std::make_shared<std::atomic<int64_t>>(0);
};

class InternalApi {
 public:
  InternalApi(boost::asio::io_context& ioc, std::shared_ptr<boost::asio::ssl::context> ssl, const std::string& bind,
              uint16_t port, InternalApiDeps deps);
  ~InternalApi();
  uint16_t port() const;
  void start();
  void stop();
  // New connections use `ctx` from now on (certificate reload); live connections keep theirs.
  void set_ssl_context(std::shared_ptr<boost::asio::ssl::context> ctx);
  // Requests being served right now (InternalApiDeps::active).
  int64_t active() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::gateway
