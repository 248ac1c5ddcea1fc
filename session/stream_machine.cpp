#include "session/stream_machine.hpp"

#include <algorithm>

#include "common/base64.hpp"

namespace cg::session {

const char* to_string(StreamEnd e) {
  switch (e) {
    case StreamEnd::completed: return "completed";
    case StreamEnd::agent_error: return "agent_error";
    case StreamEnd::flow_control: return "flow_control";
    case StreamEnd::too_slow: return "too_slow";
    case StreamEnd::timeout: return "timeout";
    case StreamEnd::connection_closed: return "connection_closed";
    case StreamEnd::send_failed: return "send_failed";
    case StreamEnd::caller_gone: return "caller_gone";
  }
  return "unknown";
}

StreamChunk decode_stream_chunk(AgentFrame& f) {
  StreamChunk c;
  c.kind = f.is_close ? StreamChunk::Kind::close : StreamChunk::Kind::data;
  c.stream_id = f.stream_id;
  if (f.data == Member::value) {
    auto d = base64_decode(f.data_b64);
    if (!d) {
      c.kind = StreamChunk::Kind::malformed;
      c.error = "stream chunk data is not valid base64";
      return c;
    }
    c.data = std::move(*d);
    std::string().swap(f.data_b64);
  } else if (f.data == Member::wrong_type) {
    c.kind = StreamChunk::Kind::malformed;
    c.error = "stream chunk data is not a base64 string";
  }
  return c;
}

StreamMachine::StreamMachine(StreamConfig c) : cfg_(std::move(c)), granted_(cfg_.window) {}

StreamActions StreamMachine::start(StreamActions a) {
  if (state_ == StreamState::awaiting_first) {
    state_ = StreamState::open;
    a.started = true;
  }
  return a;
}

StreamActions StreamMachine::end(StreamActions a, StreamEnd reason, TunnelReply::Outcome o, std::string error, bool tell_agent) {
  state_ = StreamState::ended;
  a.ended = reason;
  a.close_chunk = tell_agent;
  if (reason == StreamEnd::caller_gone) return a;  // the caller asked: it wants no end event
  StreamEvent ev;
  ev.kind = StreamEvent::Kind::end;
  ev.outcome = o;
  ev.error = std::move(error);
  ev.connection_id = cfg_.connection_id;
  a.events.push_back(std::move(ev));
  return a;
}

namespace {
// The agent broke the protocol: the caller gets a failure, the agent a close chunk.
constexpr auto kAgentFault = TunnelReply::Outcome::send_failed;
}  // namespace

StreamActions StreamMachine::on_response(TunnelReply r, bool streamed) {
  StreamActions a;
  if (state_ == StreamState::ended) return a;
  if (cfg_.mode != StreamMode::http || state_ != StreamState::awaiting_first) {
    a.dropped = true;
    return a;
  }
  a = start(std::move(a));
  if (streamed && (r.status_code == 204 || r.status_code == 304))
    return end(std::move(a), StreamEnd::agent_error, kAgentFault,
               "malformed response from agent: status " + std::to_string(r.status_code) + " cannot start a stream", true);
  StreamEvent head;
  head.kind = StreamEvent::Kind::head;
  head.status_code = r.status_code;
  head.headers = std::move(r.headers);
  head.connection_id = cfg_.connection_id;
  a.events.push_back(std::move(head));
  if (!r.body.empty()) {
    // A complete answer's body: not sent under credit, but the caller still consumes it, so it is
    // credited like stream data.
    received_ += r.body.size();
    granted_ += r.body.size();
    StreamEvent d;
    d.kind = StreamEvent::Kind::data;
    d.data = std::move(r.body);
    a.events.push_back(std::move(d));
  }
  if (!streamed) return end(std::move(a), StreamEnd::completed, TunnelReply::Outcome::response, "", false);
  return a;
}

StreamActions StreamMachine::on_malformed_response(const std::string& error) {
  StreamActions a;
  if (state_ == StreamState::ended) return a;
  if (cfg_.mode != StreamMode::http || state_ != StreamState::awaiting_first) {
    a.dropped = true;
    return a;
  }
  return end(start(std::move(a)), StreamEnd::agent_error, kAgentFault, "malformed response from agent: " + error, true);
}

StreamActions StreamMachine::on_chunk(StreamChunk c) {
  StreamActions a;
  if (state_ == StreamState::ended) return a;
  const bool before_head = cfg_.mode == StreamMode::http && state_ == StreamState::awaiting_first;
  a = start(std::move(a));
  switch (c.kind) {
    case StreamChunk::Kind::malformed: return end(std::move(a), StreamEnd::agent_error, kAgentFault, std::move(c.error), true);
    case StreamChunk::Kind::close: {
      // A close chunk's data is the agent's error text (empty: a normal end).
      const bool failed = !c.data.empty();
      return end(std::move(a), failed ? StreamEnd::agent_error : StreamEnd::completed,
                 failed && before_head ? kAgentFault : TunnelReply::Outcome::response, std::move(c.data), false);
    }
    case StreamChunk::Kind::data: break;
  }
  if (before_head)
    return end(std::move(a), StreamEnd::agent_error, kAgentFault, "agent sent stream data before the response head", true);
  received_ += c.data.size();
  const uint64_t unconsumed = received_ - consumed_;
  if (cfg_.flow_controlled && received_ > granted_)
    return end(std::move(a), StreamEnd::flow_control, kAgentFault, "agent exceeded the stream's flow-control window", true);
  if (!cfg_.flow_controlled && unconsumed > std::max(cfg_.max_unconsumed, cfg_.window))
    return end(std::move(a), StreamEnd::too_slow, TunnelReply::Outcome::overloaded,
               "caller too slow: " + std::to_string(unconsumed) + " bytes not yet consumed", true);
  StreamEvent d;
  d.kind = StreamEvent::Kind::data;
  d.data = std::move(c.data);
  d.stream_id = c.stream_id;
  a.events.push_back(std::move(d));
  return a;
}

StreamActions StreamMachine::on_consumed(size_t n) {
  StreamActions a;
  if (state_ == StreamState::ended) return a;
  consumed_ += n;
  if (!cfg_.flow_controlled) return a;
  credit_pending_ += n;
  // Credit goes back in batches of a quarter window, so that small chunks do not cost a frame each.
  if (credit_pending_ < std::max<size_t>(1, cfg_.window / 4)) return a;
  a.credit = credit_pending_;
  granted_ += credit_pending_;
  credit_pending_ = 0;
  return a;
}

StreamActions StreamMachine::on_caller_gone() {
  if (state_ == StreamState::ended) return {};
  return end({}, StreamEnd::caller_gone, TunnelReply::Outcome::cancelled, "", true);
}

StreamActions StreamMachine::on_timer(std::chrono::steady_clock::time_point now) {
  if (state_ != StreamState::awaiting_first || now < cfg_.deadline) return {};
  return end({}, StreamEnd::timeout, TunnelReply::Outcome::timeout, "no answer from the agent in time", true);
}

StreamActions StreamMachine::on_session_lost() {
  if (state_ == StreamState::ended) return {};
  return end({}, StreamEnd::connection_closed, TunnelReply::Outcome::connection_closed, "agent connection closed", false);
}

StreamActions StreamMachine::on_send_failed() {
  if (state_ == StreamState::ended) return {};
  return end({}, StreamEnd::send_failed, TunnelReply::Outcome::send_failed,
             "failed to send stream request: agent connection is closing", false);
}

}  // namespace cg::session
