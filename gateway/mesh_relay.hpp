// Several replicas: an internal API request whose answer is a stream (watch and `logs -f`: chunked
// HTTP; exec: a WebSocket upgrade; wirelogs: server-sent events) for an agent held by another
// replica. The caller's connection is handed over; the request goes to that replica's mesh listener
// (mTLS, --mesh-ca-cert) with X-Cluster-Gateway-Entry-Pod, and bytes are relayed both ways, as they
// come, until either side ends (TCP gives the relay its flow control). The caller's connection ends
// with the stream, as every stream's does. When the replica cannot be reached before anything was
// relayed, the caller gets 502 with the reason.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "common/net.hpp"
#include "common/time.hpp"

namespace cg::gateway {

struct MeshRelayTarget {
  std::string replica;  // for logs and the 502 text
  std::string host;
  uint16_t port = 0;
  std::string server_name;  // the peer certificate is checked against it
  std::shared_ptr<net::asio::ssl::context> tls;  // client context: mesh CA, this replica's peer certificate
  std::string entry;  // this replica's id (X-Cluster-Gateway-Entry-Pod)
  Duration connect_timeout{};  // TCP + TLS + writing the request
  nlohmann::json log_fields = nlohmann::json::object();
};

void start_mesh_relay(net::TlsStream caller, net::http::request<net::http::string_body> request, MeshRelayTarget target);

// Opens `peer` (on `ex`) to the replica at `t`: name resolution, TCP and TLS with the replica's
// certificate checked against t.server_name, the TCP and TLS set-up bounded by t.connect_timeout.
// "" or the reason it failed. `stop` is asked after the name resolution (before `peer` exists, so
// that closing it cannot end the wait): true gives up with "stopped".
net::asio::awaitable<std::string> connect_replica(const net::asio::any_io_executor& ex, const MeshRelayTarget& t,
                                                  std::optional<net::TlsStream>& peer, const std::function<bool()>& stop);

}  // namespace cg::gateway
