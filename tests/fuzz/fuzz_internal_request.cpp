// Raw bytes from a caller on the internal API, through what the gateway does with them before any
// network I/O: Beast's request parser (the listener's limits), the RFC 9112 framing rules
// (gateway/http_rules), the router (gateway/internal_routes), the proxy checks, the gatewayRequestID,
// and every reply that needs no agent (errors, the /api/v1/planes endpoints over an empty index and
// registry, the agent's frame).
// Invariants: nothing throws; every answer serializes to exactly one valid HTTP response; JSON replies
// and agent frames are valid JSON (peer bytes never make the serializer throw); a reused X-Request-ID
// is visible ASCII.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "common/json_text.hpp"
#include "common/net.hpp"
#include "gateway/caller_response.hpp"
#include "gateway/http_rules.hpp"
#include "gateway/internal_routes.hpp"
#include "gateway/plane_endpoints.hpp"
#include "gateway/proxy_rules.hpp"
#include "session/tunnel.hpp"
#include "tests/fuzz/fuzz_util.hpp"
#include "tests/fuzz/http_check.hpp"

using namespace cg::gateway;
using namespace cg::net;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

namespace {
void answer(unsigned status, const std::string& message) {
  auto res = make_text_error(status, message);
  res->keep_alive(false);
  const std::string body = message + "\n";
  cg::fuzz::check_one_response(cg::fuzz::wire_bytes(*res), status, &body);
}

void json_answer(const nlohmann::json& j) {
  const std::string text = cg::to_json_text(j);
  FUZZ_CHECK(!nlohmann::json::parse(text, nullptr, false).is_discarded());
  ProxyResponse res(http::status::ok, 11);
  res.set(http::field::content_type, "application/json");
  res.body() = text + "\n";
  const std::string body = res.body();
  cg::fuzz::check_one_response(cg::fuzz::wire_bytes(res), 200, &body);
}

struct Visitor {
  const http::request<http::string_body>& req;
  const RoutedRequest& routed;

  void operator()(const RouteError& e) const { answer(e.status, e.message); }
  void operator()(const ProxyRoute&) const {
    std::optional<uint64_t> clen;
    if (auto n = req.payload_size(); n && req.find(http::field::content_length) != req.end()) clen = *n;
    const bool upgrade = req.count(http::field::upgrade) > 0 || beast::iequals(req[http::field::connection], "upgrade");
    auto c = check_proxy_request(req.method_string(), routed.path, routed.query, clen, upgrade);
    if (c.status) return answer(c.status, c.message);
    cg::session::TunnelRequest tr;
    tr.target = c.target;
    tr.method = std::string(req.method_string());
    tr.path = c.path;
    tr.query = routed.query;
    tr.gateway_request_id = gateway_request_id(req["X-Request-ID"]);
    for (const auto& f : req)
      if (f.name() != http::field::host) tr.headers.emplace_back(canonical_header_key(f.name_string()), std::string(f.value()));
    tr.body = req.body();
    auto frame = nlohmann::json::parse(cg::session::encode_tunnel_request("id", tr), nullptr, false);
    FUZZ_CHECK(frame.is_object() && frame["path"].is_string());
  }
  // The real endpoint functions over an empty index and registry (what a caller can reach without
  // agents): every answer is one valid response.
  void reply(const PlaneAnswer& a) const {
    if (a.status == 200) return json_answer(a.json);
    answer(a.status, a.text);
  }
  void operator()(const NotifyRoute&) const { reply(notify_plane(index(), *registry(), req.body())); }
  void operator()(const AllStatusRoute&) const { reply(all_planes_status(*registry())); }
  void operator()(const PlaneStatusRoute& r) const { reply(plane_status(*registry(), r)); }
  void operator()(const ReconnectRoute& r) const { reply(reconnect_plane(*registry(), r)); }
  static cg::plane::PlaneIndex& index() {
    static cg::plane::PlaneIndex idx;
    return idx;
  }
  static cg::session::SessionRegistry* registry() {
    static auto reg = cg::session::make_local_registry();
    return reg.get();
  }
  void operator()(const ExecRoute& r) const {
    FUZZ_CHECK(!r.pod_namespace.empty() && r.pod_namespace.find('/') == std::string::npos);
    FUZZ_CHECK(!r.pod_name.empty() && r.pod_name.find('/') == std::string::npos);
    if (auto refusal = websocket_upgrade_refusal(req)) answer(refusal->status, refusal->text);
  }
  void operator()(const WirelogsRoute& r) const { FUZZ_CHECK(!r.environment.empty() && !r.ns.empty()); }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  http::request_parser<http::string_body> p;
  p.header_limit(16 * 1024);
  p.body_limit(64 * 1024);
  p.eager(true);
  beast::error_code ec;
  p.put(asio::buffer(data, size), ec);
  if (!ec && !p.is_done()) p.put_eof(ec);
  if (ec) {
    if (ec == http::error::header_limit) return answer(431, "request header fields too large"), 0;
    if (!peer_left(ec)) answer(400, "malformed HTTP request: " + ec.message());
    return 0;
  }
  const auto& req = p.get();
  if (auto prob = framing_problem(req)) return answer(400, prob->message), 0;
  const std::string rid = gateway_request_id(req["X-Request-ID"]);
  FUZZ_CHECK(!rid.empty() && rid.size() <= 128);
  for (unsigned char c : rid) FUZZ_CHECK(c > 0x20 && c < 0x7f);
  auto routed = route_internal(req.method_string(), req.target());
  std::visit(Visitor{req, routed}, routed.route);
  return 0;
}
