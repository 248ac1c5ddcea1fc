// /api/exec: bridges a caller's WebSocket (1-byte channel prefix frames, upstream §2.4/§4.5) to an
// exec stream on an agent session. Private to the internal API (Beast types: .cpp files only).
#pragma once
#include <memory>
#include <string>

#include "common/net.hpp"
#include "session/tunnel.hpp"

namespace cg::gateway {

struct ExecTarget {
  std::string plane_type, plane_id, cr_key;
  std::string gateway_request_id;
  std::string path;  // /api/v1/namespaces/{ns}/pods/{pod}/exec
  std::string query;  // stdout=true&stderr=true&stdin=…&tty=…&container=…&command=…
  Duration first_timeout;  // --request-timeout
  Duration write_timeout;  // --write-timeout
  Duration handshake_timeout;  // --handshake-timeout: the caller's WebSocket upgrade
  size_t max_message_size = 1u << 20;  // caller → gateway WebSocket message limit
};

// Completes the caller's WebSocket upgrade, then opens the stream and relays until either side ends.
void start_exec_bridge(net::TlsStream stream, net::http::request<net::http::string_body> request,
                       std::shared_ptr<const void> keep_alive, session::Tunnel& tunnel, ExecTarget target);

}  // namespace cg::gateway
