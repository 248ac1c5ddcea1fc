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
  enum class Outcome {
    response, no_agent, not_authorized, send_failed, timeout, connection_closed, cancelled,
    not_capable,  // streams: authorized agents exist but none announced the streaming capability
    overloaded    // the picked session is at its pending-request or stream limit
  };
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

// The capability token an agent announces (upgrade header X-Cluster-Agent-Capabilities) to receive
// streamed HTTP requests (watch, logs follow) with per-stream flow control; see docs/protocol.md.
inline constexpr const char* kStreamCapability = "http-stream/v1";

// A stream on one agent session.
//  - http: our extension for stream-capable agents. The request goes out as an HTTPTunnelRequest with
//    "stream":true and "window"; the agent answers with a head ({"requestID","statusCode","headers",
//    "stream":true}), then chunks ({"requestID","data"}), then a close chunk. A plain HTTPTunnelResponse
//    instead of a head is a complete answer (head, its body as one data event, end).
//  - upgrade: upstream's HTTPTunnelStreamInit (exec, wirelogs) with chunks both ways.
// Flow control: the agent may send `window` payload bytes, and more as the gateway grants credit
// ({"requestID","credit":n}) once the caller consumed data. Agents without the capability get no
// credit frames; for them the bytes delivered but not yet consumed are capped (max_unconsumed) and
// the stream is ended when a caller falls that far behind. Either way one slow caller never stalls
// the session's other requests and streams.
struct StreamRequest {
  enum class Mode { http, upgrade } mode = Mode::http;
  std::string kind = "http";  // metric label: http | exec | wirelogs
  TunnelRequest request;      // target, method, path, query, headers, body, gateway_request_id
  std::string upgrade_proto;  // upgrade mode: "SPDY/3.1" (exec) or "hubble/v1" (wirelogs)
  Duration first_timeout = std::chrono::seconds(30);  // until the head (http) or the first chunk (upgrade)
  size_t window = 256 * 1024;
  size_t max_unconsumed = 8u << 20;
};

struct StreamEvent {
  enum class Kind { head, data, end } kind = Kind::end;
  TunnelReply::Outcome outcome = TunnelReply::Outcome::response;  // end before any head/data: why
  int status_code = 0;                                            // head
  std::vector<std::pair<std::string, std::string>> headers;       // head
  std::string data;                                               // data
  int stream_id = 0;                                              // data (exec channel)
  std::string error;  // end: empty for a normal close, else the agent's or the gateway's reason
  std::string connection_id;
};

struct TunnelLimits {
  size_t max_pending_per_session = 1000;  // requests waiting for one agent's reply
  size_t max_streams_per_session = 100;   // open streams on one agent connection
};

class Tunnel final : public FrameHandler {
 public:
  Tunnel(boost::asio::io_context& ioc, SessionRegistry& registry, TunnelLimits limits = {});
  ~Tunnel() override;
  // Picks a session and sends. `done` runs exactly once, on any thread. Returns the hop requestID
  // (empty when no session could be picked; `done` has then already run).
  std::string send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                   const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done);
  void cancel(const std::string& request_id);
  size_t pending() const;

  // Opens a stream on a session picked like send() (http mode: only stream-capable sessions).
  // `on_event` runs on the session's or the timer's thread, in order per source; after an end event
  // nothing more arrives. Returns the stream's requestID, empty when it could not start (an end
  // event carrying the outcome has then already been delivered).
  std::string open_stream(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                          StreamRequest req, std::function<void(StreamEvent)> on_event);
  // Caller → agent payload (exec stdin/resize), as one chunk; false when the stream is gone.
  bool stream_send(const std::string& id, const std::string& data, int stream_id = 0);
  // The caller consumed n bytes of delivered data: returns credit to the agent.
  void stream_consumed(const std::string& id, size_t n);
  // The caller is done (went away or finished): the agent gets a close chunk; no more events.
  void stream_close(const std::string& id);
  size_t streams() const;

  void on_text(AgentHandle& session, std::string_view text) override;
  void on_closed(AgentHandle& session) override;

 private:
  struct Pending;
  struct Stream;
  void complete(const std::string& id, TunnelReply reply, const AgentHandle* from);
  bool on_stream_frame(AgentHandle& s, const std::string& id, const nlohmann::json& body, bool is_chunk);
  void end_stream(const std::string& id, StreamEvent ev, bool tell_agent, const std::string& reason);

  boost::asio::io_context& ioc_;
  SessionRegistry& registry_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending_;
  std::unordered_map<std::string, std::shared_ptr<Stream>> streams_;
  std::unordered_map<uint64_t, std::set<std::string>> by_session_;       // pending ids
  std::unordered_map<uint64_t, std::set<std::string>> streams_by_session_;
  TunnelLimits limits_;
};

}  // namespace cg::session
