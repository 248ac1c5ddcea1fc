// One tunnelled stream's decisions, as a pure state machine: inputs (the agent's head, chunks and
// close chunks, the caller consuming or leaving, the first-answer deadline, the session ending) go
// in, actions (events for the caller, frames for the agent, the end reason) come out. No I/O, no
// locks, no clock reads: the owner (session::Tunnel) passes the time in, holds its lock around
// each call, sends the frames and posts the events. Unit-tested in tests/session/stream_machine_test.cpp.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "session/frames.hpp"

namespace cg::session {

struct TunnelReply {
  enum class Outcome {
    response,
    no_agent,
    not_authorized,
    send_failed,
    timeout,
    connection_closed,
    cancelled,
    not_capable,  // streams: authorized agents exist but none announced the streaming capability
    overloaded  // the picked session is at its pending-request or stream limit
  };
  Outcome outcome = Outcome::response;
  int status_code = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string agent_error;  // error.message from the agent, if any
  std::string request_id;  // the hop's UUID
  std::string connection_id;
};

struct StreamEvent {
  enum class Kind { head, data, end } kind = Kind::end;
  TunnelReply::Outcome outcome = TunnelReply::Outcome::response;  // end before any head/data: why
  int status_code = 0;  // head
  std::vector<std::pair<std::string, std::string>> headers;  // head
  std::string data;  // data
  int stream_id = 0;  // data (exec channel)
  std::string error;  // end: empty for a normal close, else the agent's or the gateway's reason
  std::string connection_id;
};

// Why a stream ended (the metric label cluster_gateway_stream_ended_total{reason}).
enum class StreamEnd { completed, agent_error, flow_control, too_slow, timeout, connection_closed, send_failed, caller_gone };
const char* to_string(StreamEnd e);

// http: our streamed HTTP extension (head, chunks, close chunk); upgrade: upstream's
// HTTPTunnelStreamInit (exec, wirelogs), chunks both ways. See StreamRequest in tunnel.hpp.
enum class StreamMode { http, upgrade };

// awaiting_first: no head (http) or first chunk (upgrade) yet, the first-answer deadline runs;
// open: data flows under flow control; ended: nothing more happens (every input yields no action).
enum class StreamState { awaiting_first, open, ended };

struct StreamConfig {
  StreamMode mode = StreamMode::http;
  bool flow_controlled = false;  // the agent announced the stream capability: it honours credit
  size_t window = 256 * 1024;  // payload bytes the agent may send before it gets credit
  size_t max_unconsumed = 8u << 20;  // agents without credit: delivered-but-unconsumed bytes allowed
  std::chrono::steady_clock::time_point deadline;  // for the head / first chunk
  std::string connection_id;  // copied into head and end events
};

// A chunk frame ({"requestID","data","isClose","streamId"}) decoded outside any lock.
struct StreamChunk {
  enum class Kind { data, close, malformed } kind = Kind::data;
  std::string data;  // data: the payload; close: the agent's error text (empty: normal end)
  int stream_id = 0;  // data: the exec channel
  std::string error;  // malformed: why
};
// Decodes a stream_chunk frame's base64 data (the frame's data_b64 is consumed).
StreamChunk decode_stream_chunk(AgentFrame& f);

// What the owner does after one input, in this order: stop the first-answer timer when `started`
// or `ended`; forget the stream when `ended`; deliver `events` in order (an end event is last); send
// the agent `credit` (when > 0) and a close chunk (when `close_chunk`).
struct StreamActions {
  std::vector<StreamEvent> events;
  bool started = false;  // this input was the head / first chunk
  std::optional<StreamEnd> ended;  // the stream ended with this input
  bool close_chunk = false;  // tell the agent: {"requestID","data":null,"isClose":true}
  uint64_t credit = 0;  // grant the agent this many more payload bytes
  bool dropped = false;  // the frame does not fit the stream (counted as invalid, logged)
};

class StreamMachine {
 public:
  explicit StreamMachine(StreamConfig c);

  // An HTTPTunnelResponse frame decoded by decode_tunnel_response: a head ("stream":true) or a
  // complete answer. In upgrade mode, or once started, it is dropped.
  StreamActions on_response(TunnelReply r, bool streamed);
  // An HTTPTunnelResponse frame decode_tunnel_response refused (`error` says why).
  StreamActions on_malformed_response(const std::string& error);
  StreamActions on_chunk(StreamChunk c);
  // The caller consumed n bytes of delivered data (credit goes back a quarter window at a time).
  StreamActions on_consumed(size_t n);
  // The caller is done: the agent gets a close chunk, the caller no event.
  StreamActions on_caller_gone();
  // The first-answer timer fired at `now`: ends the stream if still awaiting its first answer.
  StreamActions on_timer(std::chrono::steady_clock::time_point now);
  // The agent session closed.
  StreamActions on_session_lost();
  // The stream request could not be queued on the session.
  StreamActions on_send_failed();

  StreamState state() const { return state_; }
  std::chrono::steady_clock::time_point deadline() const { return cfg_.deadline; }
  uint64_t received() const { return received_; }
  uint64_t consumed() const { return consumed_; }
  uint64_t granted() const { return granted_; }

 private:
  StreamActions end(StreamActions a, StreamEnd reason, TunnelReply::Outcome o, std::string error, bool tell_agent);
  StreamActions start(StreamActions a);

  StreamConfig cfg_;
  StreamState state_ = StreamState::awaiting_first;
  uint64_t received_ = 0, consumed_ = 0, granted_ = 0, credit_pending_ = 0;
};

}  // namespace cg::session
