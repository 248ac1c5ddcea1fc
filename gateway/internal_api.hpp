// The internal API for control-plane callers (upstream §2.3–2.6): TLS with client certificates
// required and verified in the handshake (--internal-client-ca-cert), /api/proxy tunnelling, and
// the plane lifecycle/status endpoints.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "common/time.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"
#include "session/tunnel.hpp"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace cg::gateway {

struct InternalApiDeps {
  plane::PlaneIndex& index;
  session::SessionRegistry& registry;
  session::Tunnel& tunnel;
  Duration request_timeout = std::chrono::seconds(30);
  Duration read_timeout = std::chrono::seconds(60);
  Duration idle_timeout = std::chrono::seconds(120);
  Duration write_timeout = std::chrono::seconds(60);
  Duration handshake_timeout = std::chrono::seconds(10);
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

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::gateway
