#include "gateway/caller_response.hpp"

#include <boost/beast/core/string.hpp>

#include "gateway/proxy_rules.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {
template <class Message>
void copy_headers(Message& m, const std::vector<std::pair<std::string, std::string>>& headers) {
  for (const auto& [k, v] : headers)
    if (!connection_field(k)) m.insert(k, v);
}
}  // namespace

std::shared_ptr<ProxyResponse> make_proxy_response(session::TunnelReply&& r, bool head_request) {
  auto res = std::make_shared<ProxyResponse>(static_cast<http::status>(r.status_code), 11);
  copy_headers(*res, r.headers);
  const bool no_body = head_request || r.status_code == 204 || r.status_code == 304 || r.status_code < 200;
  if (!no_body) res->body() = std::move(r.body);
  return res;
}

std::shared_ptr<StreamHead> make_stream_head(int status, const std::vector<std::pair<std::string, std::string>>& headers) {
  auto res = std::make_shared<StreamHead>(static_cast<http::status>(status), 11);
  copy_headers(*res, headers);
  return res;
}

std::shared_ptr<ProxyResponse> make_text_error(unsigned status, std::string_view message) {
  auto res = std::make_shared<ProxyResponse>(static_cast<http::status>(status), 11);
  res->set(http::field::content_type, "text/plain; charset=utf-8");
  res->set("X-Content-Type-Options", "nosniff");
  res->body().reserve(message.size() + 1);
  res->body().append(message.data(), message.size());
  res->body() += '\n';
  return res;
}

FailureAnswer failure_answer(Surface surface, session::TunnelReply::Outcome outcome, const std::string& agent_error,
                             const std::string& plane, const std::string& cr_key) {
  using O = session::TunnelReply::Outcome;
  const std::string no_agents = "no agents found for plane " + plane;
  const char* failed = surface == Surface::sse           ? "wirelogs stream failed"
                       : surface == Surface::http_stream ? "HTTP stream request failed"
                                                         : "HTTP tunnel request failed";
  auto answer = [&](unsigned status, std::string message, std::string reason, const char* log_msg = nullptr) {
    return FailureAnswer{status, std::move(message), log_msg ? log_msg : failed, std::move(reason)};
  };
  if (surface == Surface::sse) {
    switch (outcome) {
      case O::no_agent: return answer(503, "no agent available: " + no_agents, no_agents);
      case O::not_authorized:
        return answer(503, "no agent available: no agents authorized for CR " + cr_key, "no agents authorized for CR");
      case O::timeout: return answer(504, "timeout waiting for agent", "timeout");
      case O::response: return answer(502, "agent rejected stream: " + agent_error, "agent rejected stream");
      case O::overloaded: return answer(503, "no agent available: " + agent_error, agent_error);
      case O::send_failed: return answer(502, "failed to start stream: " + agent_error, agent_error);
      case O::cancelled: return {};
      default: return answer(502, "stream closed before start", agent_error.empty() ? "agent connection closed" : agent_error);
    }
  }
  switch (outcome) {
    case O::response: break;  // an HTTP stream that ended before its head (proxy: never a failure)
    case O::no_agent: return answer(502, "proxy request failed: " + no_agents, "no agents found");
    case O::not_authorized:
      return answer(403, "Forbidden: Agent not authorized for CR " + cr_key, "no agents authorized for CR",
                    "CR authorization failed");
    case O::not_capable:
      return surface == Surface::http_stream ? answer(501, kStreamingNotSupported, "no connected agent supports streaming")
                                             : FailureAnswer{};
    case O::overloaded:
      return answer(503, "proxy request failed: " + agent_error, agent_error,
                    surface == Surface::proxy ? "HTTP tunnel request refused" : nullptr);
    case O::timeout: return answer(502, "proxy request failed: HTTP tunnel request timeout", "timeout");
    case O::connection_closed:
      return answer(502, "proxy request failed: agent connection closed before responding",
                    "agent connection closed before responding");
    case O::cancelled: return {};
    case O::send_failed:
      if (surface == Surface::proxy)
        return answer(502,
                      "proxy request failed: " +
                          (agent_error.empty() ? std::string("failed to send HTTP tunnel request: agent connection is closing")
                                               : agent_error),
                      agent_error.empty() ? "agent connection is closing" : agent_error);
      break;
  }
  std::string why = agent_error.empty() ? std::string("agent closed the stream before responding") : agent_error;
  return answer(502, "proxy request failed: " + why, why);
}

}  // namespace cg::gateway
