// The whole gateway as one object: plane source → index → listeners → sessions → status writer.
// main() and the integration tests both drive it.
#pragma once
#include <memory>
#include <string>

#include "gateway/config.hpp"
#include "k8s_status_writer/status_writer.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"

namespace cg::mesh {
class Mesh;
}

namespace cg::gateway {

class Gateway {
 public:
  explicit Gateway(Config cfg);
  ~Gateway();
  // Loads certificates, applies the first plane snapshot, binds the listeners and starts the io
  // threads. Throws std::runtime_error with a readable message.
  void start();
  // Graceful shutdown within cfg.shutdown_timeout: /ready turns 503, listeners close, agents get a
  // WebSocket close 1001, every CR is written disconnected, threads stop. Idempotent.
  void shutdown();

  uint16_t agent_port() const;
  uint16_t health_port() const;
  uint16_t internal_port() const;
  uint16_t mesh_port() const;  // 0 without --mesh
  mesh::Mesh* mesh();  // null without --mesh
  // Empty when ready; otherwise why not (listeners down, plane source not synced, draining).
  std::string not_ready_reason() const;

  plane::PlaneIndex& index();
  session::SessionRegistry& registry();
  status::StatusWriter* status_writer();  // null with --write-status=false
  size_t pending_requests() const;  // tunnel requests waiting for an agent
  int64_t internal_requests_active() const;  // internal API requests being served (InternalApi::active)
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cg::gateway
