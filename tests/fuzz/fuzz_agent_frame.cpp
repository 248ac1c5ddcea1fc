// WebSocket text frames from an agent, as far as a caller sees them: classify_agent_frame (streaming
// parse, checked against a DOM parse of the same bytes), decode_tunnel_response, then the caller-side
// response (gateway/caller_response) serialized by Beast and parsed back by a strict HTTP parser.
// Invariants: nothing throws; classification agrees with the DOM; whatever reaches a caller is one
// valid HTTP/1.1 response that carries exactly the agent's status and body.
#include <cstddef>
#include <cstdint>
#include <boost/json.hpp>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/net.hpp"
#include "gateway/caller_response.hpp"
#include "session/frames.hpp"
#include "session/tunnel.hpp"
#include "tests/fuzz/fuzz_util.hpp"
#include "tests/fuzz/http_check.hpp"

using namespace cg::session;
using namespace cg::net;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

namespace {
// The reference classification (upstream §4.3) on a DOM. nlohmann differs from RFC 8259 (and from Go's
// encoding/json, which upstream uses) at two edges, found by this target: it reads a raw NUL byte as the
// end of the input (`{"requestID":"r1"}\0garbage` parses), and it refuses a number outside the range of
// a double (`-1.0e+1200`, valid JSON). A raw NUL is never valid JSON (not whitespace, not allowed
// unescaped in a string), so it is refused here; an out-of-range number is grammatical, so for that
// input the DOM comes from Boost.JSON instead (Go decodes it too and fails only the int conversion).
// A third edge is the gateway's own: its streaming parser (Boost.JSON) refuses a number whose exponent
// does not fit an int (`-0.0e+0000…600…892`, valid JSON that nlohmann reads as -0.0); Go fails such a
// frame too, at the int conversion of statusCode. The reference refuses it as the gateway does.
FrameKind classify_dom(const nlohmann::json& j, std::string& rid) {
  if (!j.is_object()) return FrameKind::invalid;
  auto it = j.find("requestID");
  if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) return FrameKind::invalid;
  rid = it->get<std::string>();
  auto d = j.find("data");
  auto c = j.find("isClose");
  const bool has_data = d != j.end() && !d->is_null();
  const bool is_close = c != j.end() && c->is_boolean() && c->get<bool>();
  return has_data || is_close ? FrameKind::stream_chunk : FrameKind::response;
}

FrameKind classify_boost_dom(std::string_view text, std::string& rid) {
  namespace bj = boost::json;
  bj::parse_options opts;
  opts.max_depth = 64;
  bj::error_code ec;
  bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec, {}, opts);
  if (ec || !v.is_object()) return FrameKind::invalid;
  const bj::object& o = v.get_object();
  auto it = o.find("requestID");
  if (it == o.end() || !it->value().is_string() || it->value().get_string().empty()) return FrameKind::invalid;
  rid = std::string(it->value().get_string());
  auto d = o.find("data");
  auto c = o.find("isClose");
  const bool has_data = d != o.end() && !d->value().is_null();
  const bool is_close = c != o.end() && c->value().is_bool() && c->value().get_bool();
  return has_data || is_close ? FrameKind::stream_chunk : FrameKind::response;
}

bool exponent_overflows(std::string_view text) {
  boost::json::parse_options opts;
  opts.max_depth = 64;  // as the gateway's parser: deeper input fails before, in both
  boost::json::error_code ec;
  (void)boost::json::parse(boost::json::string_view(text.data(), text.size()), ec, {}, opts);
  return ec == boost::json::error::exponent_overflow;
}

FrameKind reference_kind(std::string_view text, std::string& rid) {
  if (text.find('\0') != std::string_view::npos) return FrameKind::invalid;
  if (exponent_overflows(text)) return FrameKind::invalid;
  int depth_seen = 0;
  auto cb = [&](int d, nlohmann::json::parse_event_t, nlohmann::json&) {
    depth_seen = std::max(depth_seen, d);
    return d <= 64;
  };
  try {
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), cb, true);
    if (j.is_discarded() || depth_seen > 64) return FrameKind::invalid;
    return classify_dom(j, rid);
  } catch (const nlohmann::json::out_of_range& e) {
    if (e.id != 406) return FrameKind::invalid;  // 406: number overflow
    return classify_boost_dom(text, rid);
  } catch (const nlohmann::json::exception&) {
    return FrameKind::invalid;
  }
}

void check_caller_bytes(TunnelReply r, bool head) {
  const int status = r.status_code;
  const std::string body = r.body;
  auto res = cg::gateway::make_proxy_response(std::move(r), head);
  res->keep_alive(true);
  const std::string wire = cg::fuzz::wire_bytes(*res);
  const bool bodiless = head || status == 204 || status == 304;
  cg::fuzz::check_one_response(wire, static_cast<unsigned>(status), bodiless ? nullptr : &body, head);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  AgentFrame f = classify_agent_frame(text);
  std::string rid;
  const FrameKind ref = reference_kind(text, rid);
  // The streaming parser and the DOM reference (see reference_kind for its two known edges) must agree
  // on the kind and the id.
  FUZZ_CHECK(f.kind == ref);
  if (f.kind == FrameKind::invalid) {
    FUZZ_CHECK(!f.error.empty());
    return 0;
  }
  FUZZ_CHECK(f.request_id == rid && f.error.empty());
  if (f.kind == FrameKind::stream_chunk) return 0;
  TunnelReply r;
  std::string err;
  if (!decode_tunnel_response(f, r, err)) {
    FUZZ_CHECK(!err.empty());
    return 0;
  }
  FUZZ_CHECK(r.status_code >= 200 && r.status_code <= 999);
  check_caller_bytes(r, false);
  check_caller_bytes(std::move(r), true);
  return 0;
}
