#include "session/tunnel.hpp"
#include "common/json_text.hpp"

#include <algorithm>
#include <cctype>

#include "common/base64.hpp"
#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "session/frames.hpp"
#include "session/tunnel_requests.hpp"
#include "session/tunnel_streams.hpp"

namespace cg::session {
using namespace cg::net;

std::string encode_tunnel_request(const std::string& id, const TunnelRequest& r) {
  nlohmann::json j = {{"requestID", id}, {"target", r.target}, {"method", r.method}, {"path", r.path}};
  if (!r.gateway_request_id.empty()) j["gatewayRequestID"] = r.gateway_request_id;
  if (!r.query.empty()) j["query"] = r.query;
  if (!r.headers.empty()) {
    nlohmann::json h = nlohmann::json::object();
    for (const auto& [k, v] : r.headers) h[k].push_back(v);
    j["headers"] = std::move(h);
  }
  std::string out = to_json_text(j);
  if (!r.body.empty()) {
    // The body goes straight into the frame as base64 (no JSON copy of it): one buffer per request.
    out.pop_back();  // '}'
    out.reserve(out.size() + 11 + 4 * ((r.body.size() + 2) / 3));
    out += ",\"body\":\"";
    base64_append(out, r.body);
    out += "\"}";
  }
  return out;
}

namespace {
// RFC 9110 §5.6.2 tchar.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    switch (c) {
      case '!':
      case '#':
      case '$':
      case '%':
      case '&':
      case '\'':
      case '*':
      case '+':
      case '-':
      case '.':
      case '^':
      case '_':
      case '`':
      case '|':
      case '~': continue;
      default: return false;
    }
  }
  return true;
}
// RFC 9110 §5.5 field-value: VCHAR, obs-text, SP and HTAB; no CR, LF, NUL or other controls.
bool is_field_value(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}
}  // namespace

bool decode_tunnel_response(AgentFrame& f, TunnelReply& out, std::string& error) {
  if (f.status_code != Member::value || f.status_code_value < 100 || f.status_code_value > 999) {
    error = "statusCode missing or not an HTTP status";
    return false;
  }
  out.status_code = static_cast<int>(f.status_code_value);
  if (f.headers == Member::wrong_type) {
    error = "headers is not an object";
    return false;
  }
  if (f.header_member_not_array) {
    error = "header values must be arrays of strings";
    return false;
  }
  if (f.headers_over_limit) {
    error = "response headers exceed " + std::to_string(kMaxAgentHeaderBytes) + " bytes, " +
            std::to_string(kMaxAgentHeaderCount) + " fields or a name of " + std::to_string(kMaxAgentHeaderName) + " bytes";
    return false;
  }
  for (const auto& [k, v] : f.header_list) {
    if (!is_token(k)) {
      error = "response header name is not an HTTP token";
      return false;
    }
    if (!is_field_value(v)) {
      error = "response header " + k + " has a control character (CR, LF, NUL) in its value";
      return false;
    }
  }
  if (f.body == Member::wrong_type) {
    error = "body is not a base64 string";
    return false;
  }
  std::string body;
  if (f.body == Member::value) {
    auto d = base64_decode(f.body_b64);
    if (!d) {
      error = "body is not valid base64";
      return false;
    }
    body = std::move(*d);
    std::string().swap(f.body_b64);
  }
  if (out.status_code < 200) {
    error = "status " + std::to_string(out.status_code) + " is informational, not a final response";
    return false;
  }
  if (!body.empty() && (out.status_code == 204 || out.status_code == 304)) {
    error = "status " + std::to_string(out.status_code) + " must not carry a body";
    return false;
  }
  out.headers = std::move(f.header_list);
  out.body = std::move(body);
  out.agent_error = std::move(f.error_message);
  return true;
}

Tunnel::Tunnel(asio::io_context& ioc, SessionRegistry& registry, TunnelLimits limits)
    : requests_(std::make_unique<RequestTable>(
          ioc, registry, limits.max_pending_per_session,
          [this](const AgentHandle& s, std::string_view msg, const nlohmann::json& f) { agent_warn(s, msg, f); })),
      streams_(std::make_unique<StreamTable>(
          ioc, registry, limits.max_streams_per_session,
          [this](const AgentHandle& s, std::string_view msg, const nlohmann::json& f) { agent_warn(s, msg, f); },
          [r = requests_.get()](const std::string& id) { return r->contains(id); })) {}
Tunnel::~Tunnel() = default;

std::string Tunnel::send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                         const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done) {
  return requests_->send(plane_type, plane_id, cr_key, req, timeout, std::move(done));
}
void Tunnel::cancel(const std::string& id) { requests_->cancel(id); }
size_t Tunnel::pending() const { return requests_->size(); }

std::string Tunnel::open_stream(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                StreamRequest req, std::function<void(StreamEvent)> on_event) {
  return streams_->open(plane_type, plane_id, cr_key, std::move(req), std::move(on_event));
}
bool Tunnel::stream_send(const std::string& id, const std::string& data, int stream_id) {
  return streams_->send(id, data, stream_id);
}
void Tunnel::stream_consumed(const std::string& id, size_t n) { streams_->consumed(id, n); }
void Tunnel::stream_close(const std::string& id) { streams_->close(id); }
size_t Tunnel::streams() const { return streams_->size(); }

void Tunnel::on_text(AgentHandle& s, std::string_view text) {
  try {
    handle_text(s, text);
  } catch (const std::exception& e) {
    // Nothing an agent sends may take more than its own connection down.
    metrics::handler_exception("agent_frame");
    log::error(
        "agent frame handling failed; closing the agent connection",
        {{"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()}, {"reason", e.what()}});
    s.close(1011, "internal error handling a frame");
  }
}

// One agent message: classified without a DOM, then handed to the stream table (heads, answers and
// chunks of open streams) or to the request table (replies).
void Tunnel::handle_text(AgentHandle& s, std::string_view text) {
  auto f = classify_agent_frame(text);
  if (f.kind == FrameKind::invalid) {
    metrics::frames_dropped("invalid");
    agent_warn(
        s, "invalid frame from agent dropped",
        {{"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()}, {"reason", f.error}});
    return;
  }
  if (streams_->on_frame(s, f)) return;
  if (f.kind == FrameKind::stream_chunk) {
    metrics::frames_dropped("unknown_stream");
    agent_warn(s, "stream chunk for an unknown stream dropped",
               {{"planeType", s.plane_type()},
                {"planeID", s.plane_id()},
                {"connectionID", s.connection_id()},
                {"requestID", f.request_id}});
    return;
  }
  requests_->on_reply(s, f);
}

// Warnings an agent's frames cause are limited per connection and message (a flood of bad frames
// costs a summary line with the count, not a line each).
void Tunnel::agent_warn(const AgentHandle& s, std::string_view msg, const nlohmann::json& fields) {
  warn_limit_.warn(s.connection_id() + "|" + std::string(msg), msg, fields,
                   {{"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()}});
}

void Tunnel::on_closed(AgentHandle& s) {
  warn_limit_.flush(s.connection_id() + "|");
  requests_->session_lost(s.serial());
  streams_->session_lost(s.serial());
}

}  // namespace cg::session
