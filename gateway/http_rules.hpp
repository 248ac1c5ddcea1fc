// Request rules shared by the gateway's HTTP listeners (internal API, health): what makes a request
// unacceptable before routing (RFC 9112 framing) and which read errors only mean that the peer left.
// Include from .cpp files only (Beast types).
#pragma once
#include <optional>
#include <string>

#include "common/net.hpp"

namespace cg::gateway {

// Why a request was refused before routing (the metric label of cluster_gateway_http_requests_rejected_total).
enum class RequestFault { malformed, no_host, transfer_encoding, header_too_large, body_too_large, target };
const char* to_string(RequestFault f);

struct FramingProblem {
  RequestFault fault;
  const char* message;
};

// Exactly one Host header in HTTP/1.1 (RFC 9112 §3.2); no transfer coding but a single "chunked"
// (§6.1, §6.3: a request whose final coding is not chunked has no reliable length: 400), and never
// together with Content-Length.
std::optional<FramingProblem> framing_problem_of(const net::http::request_header<>& req);
template <class Body>
std::optional<FramingProblem> framing_problem(const net::http::request<Body>& req) {
  return framing_problem_of(req.base());
}

// What gorilla/websocket's Upgrader answers to a request it cannot upgrade, in its order of checks
// (upstream's agent endpoint and exec endpoint): no "upgrade" token in Connection or no "websocket"
// token in Upgrade → 400; a method other than GET → 405; Sec-WebSocket-Version not 13 → 400; a
// Sec-WebSocket-Key that is not the base64 of 16 bytes → 400. The body is the status text and the
// answer carries "Sec-Websocket-Version: 13".
struct UpgradeHeaders {
  std::string_view method, connection, upgrade, version, key;
};
struct UpgradeRefusal {
  unsigned status;
  const char* text;  // "Bad Request" or "Method Not Allowed" (the body, without its newline)
};
std::optional<UpgradeRefusal> websocket_upgrade_refusal(const UpgradeHeaders& h);
template <class Body>
std::optional<UpgradeRefusal> websocket_upgrade_refusal(const net::http::request<Body>& req) {
  using net::http::field;
  return websocket_upgrade_refusal(UpgradeHeaders{req.method_string(), req[field::connection], req[field::upgrade],
                                                  req[field::sec_websocket_version], req[field::sec_websocket_key]});
}

// The gatewayRequestID of a request: the caller's X-Request-ID when it is plain text (1 to 128
// visible ASCII characters), as upstream reuses it; otherwise (absent, control bytes, non-ASCII, very
// long: it would travel into agent frames and log lines) a fresh gw-<16 hex>.
std::string gateway_request_id(std::string_view x_request_id);

// A read error that only means the peer went away or stayed silent past a deadline (no answer is owed);
// any other parser error is a malformed request (400).
bool peer_left(const net::beast::error_code& ec);

}  // namespace cg::gateway
