// HTTP tunnelling over agent sessions (upstream §4.2–4.4, with post-snapshot reliability):
// a request goes to one session picked round-robin among those authorized for the CR; only that
// session may answer; when it dies every request pending on it fails at once; a timeout or a
// caller that goes away removes the pending entry.
#pragma once
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/time.hpp"
#include "session/agent_session.hpp"
#include "session/registry.hpp"

namespace boost::asio {
class io_context;
}

namespace cg::session {

struct TunnelRequest {
  std::string target;  // "k8s"
  std::string method;
  std::string path;   // absolute backend path
  std::string query;  // raw, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string gateway_request_id;  // caller's X-Request-ID or gw-<16 hex>
};

struct TunnelReply {
  enum class Outcome { response, no_agent, not_authorized, send_failed, timeout, connection_closed, cancelled };
  Outcome outcome = Outcome::response;
  int status_code = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string agent_error;  // error.message from the agent, if any
  std::string request_id;   // the hop's UUID
  std::string connection_id;
};

// The JSON frame for one request (exposed for tests and fuzzing).
std::string encode_tunnel_request(const std::string& request_id, const TunnelRequest& r);
// Decodes an HTTPTunnelResponse object; false with `error` when malformed (e.g. bad base64).
bool decode_tunnel_response(const nlohmann::json& j, TunnelReply& out, std::string& error);

class Tunnel final : public FrameHandler {
 public:
  Tunnel(boost::asio::io_context& ioc, SessionRegistry& registry);
  ~Tunnel() override;
  // Picks a session and sends. `done` runs exactly once, on any thread. Returns the hop requestID
  // (empty when no session could be picked; `done` has then already run).
  std::string send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                   const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done);
  void cancel(const std::string& request_id);
  size_t pending() const;

  void on_text(AgentHandle& session, std::string_view text) override;
  void on_closed(AgentHandle& session) override;

 private:
  struct Pending;
  void complete(const std::string& id, TunnelReply reply, const AgentHandle* from);

  boost::asio::io_context& ioc_;
  SessionRegistry& registry_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending_;
  std::unordered_map<uint64_t, std::set<std::string>> by_session_;
};

}  // namespace cg::session
