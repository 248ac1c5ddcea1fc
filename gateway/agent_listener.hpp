// The public agent listener: TLS (client certificate requested), `GET /ws?planeID=&planeType=`
// with upstream's 400/401 answers, the client certificate chain from the handshake or, with
// --agent-auth-mode=forwarded-header, from a trusted proxy's header (agent_auth.hpp), per-CR
// verification against the plane index, then the WebSocket upgrade handed to the session layer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/agent_auth.hpp"
#include "gateway/upgrade_target.hpp"
#include "plane_index/index.hpp"
#include "session/agent_session.hpp"
#include "session/registry.hpp"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace cg::gateway {

// Everything the listener takes from Config (gateway.cpp fills it; no defaults here).
struct AgentListenerDeps {
  plane::PlaneIndex& index;
  session::SessionRegistry& registry;
  std::shared_ptr<session::FrameHandler> frames;
  session::AgentSessionOptions session_options;
  Duration handshake_timeout;  // TLS handshake plus reading the upgrade request
  size_t max_sessions;  // agent sessions in this gateway; more get 503
  size_t max_sessions_per_plane;  // per planeType/planeID; more get 503
  size_t max_concurrent_handshakes;  // TLS handshakes in progress at once; more wait their turn
  AgentAuthMode auth_mode;  // where the client certificate chain comes from
  std::string forwarded_header;  // forwarded_header mode: the header carrying the chain
  std::vector<IpRange> trusted_proxies;  // forwarded_header mode: who may send that header
};

class AgentListener {
 public:
  AgentListener(boost::asio::io_context& ioc, std::shared_ptr<boost::asio::ssl::context> ssl, const std::string& bind,
                uint16_t port, AgentListenerDeps deps);
  ~AgentListener();
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
