// HTTP tunnelling over agent sessions (upstream §4.2–4.4, with post-snapshot reliability):
// a request goes to one session picked round-robin among those authorized for the CR; only that
// session may answer; when it dies every request pending on it fails at once; a timeout or a
// caller that goes away removes the pending entry.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/log_limiter.hpp"
#include "common/time.hpp"
#include "session/agent_session.hpp"
#include "session/frames.hpp"
#include "session/registry.hpp"
#include "session/stream_machine.hpp"

namespace boost::asio {
class io_context;
}

namespace cg::session {

class RequestTable;
class StreamTable;

struct TunnelRequest {
  std::string target;  // "k8s"
  std::string method;
  std::string path;  // absolute backend path
  std::string query;  // raw, without '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string gateway_request_id;  // caller's X-Request-ID or gw-<16 hex>
};

// The JSON frame for one request (exposed for tests and fuzzing).
std::string encode_tunnel_request(const std::string& request_id, const TunnelRequest& r);
// Decodes an HTTPTunnelResponse frame (its base64 body too); false with `error` when it is malformed
// or cannot be passed on as HTTP: a bad statusCode, a 1xx status, a body on 204/304, a header name
// that is not an RFC 9110 token, a control character (CR, LF, NUL) in a value, or headers over
// kMaxAgentHeaderBytes/kMaxAgentHeaderCount. The caller then gets 502, as from a broken upstream.
bool decode_tunnel_response(AgentFrame& frame, TunnelReply& out, std::string& error);

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
  using Mode = StreamMode;
  Mode mode = Mode::http;
  std::string kind = "http";  // metric label: http | exec | wirelogs
  TunnelRequest request;  // target, method, path, query, headers, body, gateway_request_id
  std::string upgrade_proto;  // upgrade mode: "SPDY/3.1" (exec) or "hubble/v1" (wirelogs)
  Duration first_timeout = std::chrono::seconds(30);  // until the head (http) or the first chunk (upgrade)
  size_t window = 256 * 1024;
  size_t max_unconsumed = 8u << 20;
};

struct TunnelLimits {
  size_t max_pending_per_session = 1000;  // requests waiting for one agent's reply
  size_t max_streams_per_session = 100;  // open streams on one agent connection
};

// Callback contract (every async entry point: send, open_stream):
//  - Always posted: a callback never runs inside a Tunnel call (send, open_stream, cancel,
//    stream_send, stream_consumed, stream_close, on_text, on_closed), not even when the answer is
//    known at once (no agent, not authorized, overloaded, send failed). It runs from the Tunnel's
//    io_context: `done` through a plain post, stream events through a strand of that io_context
//    private to the stream (so one stream's events run one at a time, in order). Each request's
//    timeout timer runs on a strand private to that request, each stream's first-answer timer on the
//    stream's strand; neither runs inline.
//  - Exactly once: `done` runs exactly once whatever races (reply, timeout, cancel, session lost);
//    a stream gets exactly one end event, last, unless the caller closed it with stream_close first
//    (then it gets no end event).
// Consumers keep their own state on their own strand and post onto it from the callback
// (gateway/internal_api.cpp, gateway/exec_bridge.cpp). Tested in tests/session/tunnel_test.cpp.
// Requests live in a RequestTable, streams in a StreamTable (internal to session/); the Tunnel reads
// each agent message once and hands it to the table it belongs to.
class Tunnel final : public FrameHandler {
 public:
  Tunnel(boost::asio::io_context& ioc, SessionRegistry& registry, TunnelLimits limits = {});
  ~Tunnel() override;
  // Picks a session and sends. `done` is posted exactly once (see the contract above). Returns the
  // hop requestID (empty when no session could be picked; `done` is then already posted).
  std::string send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                   const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done);
  // The reply is posted as `cancelled` (nothing happens when it was already decided).
  void cancel(const std::string& request_id);
  size_t pending() const;

  // Opens a stream on a session picked like send() (http mode: only stream-capable sessions).
  // `on_event` is posted on the stream's strand, in order; after an end event nothing more arrives.
  // Returns the stream's requestID, empty when it could not start (an end event carrying the
  // outcome is then already posted).
  std::string open_stream(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                          StreamRequest req, std::function<void(StreamEvent)> on_event);
  // Caller → agent payload (exec stdin/resize), as one chunk; false when the stream is gone.
  bool stream_send(const std::string& id, const std::string& data, int stream_id = 0);
  // The caller consumed n bytes of delivered data: returns credit to the agent.
  void stream_consumed(const std::string& id, size_t n);
  // The caller is done (went away or finished): the agent gets a close chunk (once); no event
  // starts after this returns, not even one already posted.
  void stream_close(const std::string& id);
  size_t streams() const;

  void on_text(AgentHandle& session, std::string_view text) override;
  void on_closed(AgentHandle& session) override;

 private:
  void handle_text(AgentHandle& s, std::string_view text);
  void agent_warn(const AgentHandle& s, std::string_view msg, const nlohmann::json& fields);

  log::LogLimiter warn_limit_;  // per connection and message: 10 lines a second, then a count
  // The two halves (session/tunnel_requests.hpp, session/tunnel_streams.hpp), each with its own
  // mutex; a frame is handed to one of them. Lock order: StreamTable -> RequestTable -> LogLimiter.
  std::unique_ptr<RequestTable> requests_;
  std::unique_ptr<StreamTable> streams_;
};

}  // namespace cg::session
