// One agent's WebSocket session: accepts the upgrade, registers with the registry, sends pings
// every heartbeat interval and drops the peer when no pong arrives within the timeout, closes
// when the client certificate expires, serializes writes, and hands inbound frames to a handler.
// Sessions live on their own strand; nothing here blocks an io thread. Every lifecycle decision is
// made by the pure next() of session/session_machine.hpp; the session performs its actions.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "common/time.hpp"
#include "session/registry.hpp"
#include "session/session_machine.hpp"
#include "tls/verifier.hpp"

namespace boost::beast {
template <class NextLayer>
class ssl_stream;
}

namespace cg::session {

// Upgrade request header where an agent lists capability tokens (comma or space separated).
inline constexpr const char* kCapabilitiesHeader = "X-Cluster-Agent-Capabilities";

// Receives what agents send. Implemented by the tunnel layer; the default logs and drops.
class FrameHandler {
 public:
  virtual ~FrameHandler() = default;
  virtual void on_text(AgentHandle& session, std::string_view text) = 0;
  virtual void on_closed(AgentHandle& session) = 0;
};

// How the agent's TLS session began: a full handshake (the chain was sent in it), or the resumption of a
// session the gateway kept (--tls-session-cache; the chain is the one that session began with). Either
// way the chain was verified against the current CRs before the upgrade.
enum class TlsStart : uint8_t { full, resumed };

struct AgentIdentity {
  std::string connection_id;
  std::string plane_type;
  std::string plane_id;
  std::string remote;
  tls::PeerChain peer;
  std::set<std::string> authorized;
  TlsStart tls_start = TlsStart::full;
};

// Opaque handoff of an accepted TLS stream plus its upgrade request (defined in agent_session.cpp's
// world: see common/net.hpp). Created by the agent listener.
struct UpgradeHandoff;
struct UpgradeHandoffDeleter {
  void operator()(UpgradeHandoff* p) const;
};
using UpgradeHandoffPtr = std::unique_ptr<UpgradeHandoff, UpgradeHandoffDeleter>;

// Completes the WebSocket upgrade and runs the session until it closes.
void start_agent_session(UpgradeHandoffPtr handoff, AgentIdentity identity, const AgentSessionOptions& options,
                         SessionRegistry& registry, std::shared_ptr<FrameHandler> handler);

}  // namespace cg::session
