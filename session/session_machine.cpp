#include "session/session_machine.hpp"

namespace cg::session {

std::string_view to_string(SessionPhase p) {
  switch (p) {
    case SessionPhase::upgrading: return "upgrading";
    case SessionPhase::open: return "open";
    case SessionPhase::closing: return "closing";
    case SessionPhase::closed: return "closed";
  }
  return "unknown";
}

bool phase_move_allowed(SessionPhase from, SessionPhase to) {
  switch (from) {
    case SessionPhase::upgrading: return to == SessionPhase::open || to == SessionPhase::closed;
    case SessionPhase::open: return to == SessionPhase::closing;
    case SessionPhase::closing: return to == SessionPhase::closed;
    case SessionPhase::closed: return false;
  }
  return false;
}

// Each timer expiry, each loopback send that wakes the peer and each readable event costs a thread
// wakeup, and on this kind of machine the wakeups, not the crypto, were most of the heartbeat CPU
// (docs/benchmarks.md). A ping is at most one grid step late, a timeout at most one step later.
SteadyTime heartbeat_align(SteadyTime t, Duration interval) {
  using namespace std::chrono;
  nanoseconds tick = std::min<nanoseconds>(interval / 8, milliseconds(250));
  if (tick <= milliseconds(1)) return t;
  auto since = duration_cast<nanoseconds>(t.time_since_epoch());
  auto rem = since % tick;
  if (rem == nanoseconds(0)) return t;
  return t + duration_cast<SteadyTime::duration>(tick - rem);
}

namespace {
using P = SessionPhase;

SessionAction act(Do d) {
  SessionAction a;
  a.what = d;
  return a;
}
SessionAction note(Note n, std::string text = {}) {
  SessionAction a = act(Do::note);
  a.note = n;
  a.text = std::move(text);
  return a;
}
SessionAction at(Do d, SteadyTime t) {
  SessionAction a = act(d);
  a.at = t;
  return a;
}
SessionAction frame(Do d, uint16_t code, std::string text) {
  SessionAction a = act(d);
  a.code = code;
  a.text = std::move(text);
  return a;
}

std::string agent_close_text(uint16_t code, const std::string& reason) {
  return "agent closed the connection (code " + std::to_string(code) + (reason.empty() ? "" : ": " + reason) + ")";
}

// One event against one state. Each handler returns the transition for every phase.
struct Step {
  SessionState s;
  const AgentSessionOptions& o;

  P phase() const { return s.phase; }
  Transition stay(SessionActions a = {}) const { return {s, std::move(a)}; }
  // open → closing: `before`, then the session leaves routing and status with `cause`, then `after`.
  Transition start_close(CloseCause cause, std::string text, SessionActions before, const SessionActions& after) const {
    SessionAction leave = act(Do::leave_routing);
    leave.cause = cause;
    leave.text = std::move(text);
    before.push_back(std::move(leave));
    before.insert(before.end(), after.begin(), after.end());
    return {{P::closing, cause}, std::move(before)};
  }
  // A close the gateway decides: its close frame goes from the strand, behind what is posted there.
  Transition gateway_close(uint16_t code, std::string reason, CloseCause cause, SessionActions before = {},
                           SessionActions after = {}) const {
    if (reason.size() > 120) reason.resize(120);
    std::string text = "closed by gateway (code " + std::to_string(code) + "): " + reason;
    after.insert(after.begin(), frame(Do::post_close_frame, code, std::move(reason)));
    return start_close(cause, std::move(text), std::move(before), after);
  }

  Transition operator()(const ev::UpgradeFailed& e) const {
    if (phase() != P::upgrading) return stay();
    return {{P::closed, s.cause}, {note(Note::upgrade_failed, e.why)}};
  }
  Transition operator()(const ev::Upgraded& e) const {
    if (phase() != P::upgrading) return stay();
    return {{P::open, s.cause}, {at(Do::record_pong, e.now), act(Do::register_session)}};
  }
  Transition operator()(const ev::Registered&) const {
    if (phase() == P::open)
      return stay({act(Do::count_opened), act(Do::read), act(Do::arm_ping), act(Do::arm_deadline), act(Do::arm_expiry)});
    // Closed by another thread as soon as the registry published it: it still reads on to its close.
    if (phase() == P::closing) return stay({act(Do::count_opened), act(Do::read)});
    return stay();
  }
  Transition operator()(const ev::AdmissionRefused&) const {
    if (phase() == P::open)
      return gateway_close(1001, "gateway shutting down", CloseCause::shutdown, {note(Note::draining), act(Do::send_goaway)},
                           {act(Do::read)});
    if (phase() == P::closing) return stay({act(Do::read)});
    return stay();
  }
  // One ping at a time: the next is timed from the end of this one's write.
  Transition operator()(const ev::PingDue& e) const {
    if (phase() != P::open) return stay();
    return stay({at(Do::send_ping, e.now)});
  }
  Transition operator()(const ev::PingWritten& e) const {
    SessionActions a;
    if (phase() == P::closed || phase() == P::upgrading) return stay();
    if (!e.error.empty()) a.push_back(note(Note::ping_failed, e.error));
    if (phase() == P::open) a.push_back(act(Do::arm_ping));
    return stay(std::move(a));
  }
  Transition operator()(const ev::Pong& e) const {
    if (phase() != P::open && phase() != P::closing) return stay();
    SessionActions a{at(Do::record_pong, e.now)};
    if (e.ping_sent) {
      SessionAction rtt = act(Do::record_rtt);
      rtt.span = e.now - *e.ping_sent;
      a.push_back(rtt);
    }
    return stay(std::move(a));
  }
  // Only pongs move the deadline. The agent answers no pings: no close handshake, the socket goes now.
  Transition operator()(const ev::DeadlineDue& e) const {
    if (phase() != P::open) return stay();
    if (e.now < e.last_pong + o.heartbeat_timeout) return stay({act(Do::arm_deadline)});
    return start_close(CloseCause::heartbeat_timeout,
                       "heartbeat timeout: no pong within " + format_go_duration(o.heartbeat_timeout),
                       {note(Note::heartbeat_timeout)}, {act(Do::teardown)});
  }
  Transition operator()(const ev::ExpiryDue& e) const {
    if (phase() != P::open) return stay();
    if (e.now < e.not_after) return stay({act(Do::arm_expiry)});
    return gateway_close(1008, "client certificate expired", CloseCause::certificate_expired, {note(Note::certificate_expired)});
  }
  Transition operator()(const ev::GatewayClose& e) const {
    if (phase() != P::open) return stay();
    return gateway_close(e.code, e.reason, e.cause);
  }
  // The close frame, then at most close_timeout for the agent's.
  Transition operator()(const ev::CloseFrameDue& e) const {
    if (phase() != P::closing) return stay();
    return stay({act(Do::stop_timers), act(Do::arm_close_timer), frame(Do::send_close_frame, e.code, e.reason)});
  }
  Transition operator()(const ev::CloseFrameSent& e) const {
    if (phase() != P::closing || e.error.empty()) return stay();
    return stay({act(Do::teardown)});
  }
  // Beast answers the agent's close frame; the read then ends (ReadClosed), bounded by the close timer.
  Transition operator()(const ev::AgentCloseFrame& e) const {
    if (phase() != P::open) return stay();
    return start_close(CloseCause::agent_closed, agent_close_text(e.code, e.reason), {}, {act(Do::arm_close_timer)});
  }
  // Over the limit (one byte past it is read): close 1009, and the close handshake reads and drops
  // what the agent still sends up to its close frame, so the 1009 reaches it. Once a close is under
  // way, what the agent sends is dropped (its requests have failed already) and reading goes on.
  Transition operator()(const ev::Received& e) const {
    if (phase() == P::open && e.buffered > o.max_message_size)
      return start_close(CloseCause::message_too_big,
                         "message larger than the limit of " + std::to_string(o.max_message_size) + " bytes",
                         {note(Note::too_big), act(Do::discard_input)},
                         {act(Do::stop_timers), act(Do::arm_close_timer), frame(Do::close_and_wait, 1009, "message too big")});
    if (phase() == P::open) return e.message_done ? stay({act(Do::deliver), act(Do::read)}) : stay({act(Do::read)});
    if (phase() == P::closing) return stay({act(Do::discard_input), act(Do::read)});
    return stay();
  }
  // A read that ends ends the session; a close already under way keeps its cause.
  Transition operator()(const ev::ReadClosed& e) const {
    if (phase() == P::open) return start_close(CloseCause::agent_closed, agent_close_text(e.code, e.reason), {}, {act(Do::done)});
    return phase() == P::closing ? stay({act(Do::done)}) : stay();
  }
  Transition operator()(const ev::ReadFailed& e) const {
    if (phase() == P::open) return start_close(CloseCause::connection_lost, "connection lost: " + e.error, {}, {act(Do::done)});
    return phase() == P::closing ? stay({act(Do::done)}) : stay();
  }
  // A close under way (its close frame makes later writes fail) goes on, bounded by its timer.
  Transition operator()(const ev::WriteFailed& e) const {
    if (phase() != P::open) return stay();
    return start_close(CloseCause::write_failed, "write failed: " + e.error, {}, {act(Do::teardown)});
  }
  Transition operator()(const ev::CloseTimeout&) const {
    if (phase() != P::closing) return stay();
    return stay({note(Note::close_timeout), act(Do::teardown)});
  }
  Transition operator()(const ev::SocketDone&) const {
    if (phase() == P::open) return start_close(CloseCause::connection_lost, "connection lost", {}, {act(Do::done)});
    if (phase() != P::closing) return stay();
    SessionAction forget = act(Do::forget);
    forget.cause = s.cause;
    return {{P::closed, s.cause}, {act(Do::stop_timers), std::move(forget)}};
  }
};

}  // namespace

Transition next(SessionState s, const SessionEvent& e, const AgentSessionOptions& o) { return std::visit(Step{s, o}, e); }

Transition SessionLifecycle::apply(const SessionEvent& e, const AgentSessionOptions& o) {
  SessionState cur = state_.load(std::memory_order_acquire);
  for (;;) {
    Transition t = next(cur, e, o);
    // Also when the state stays: the exchange checks that it was computed from the current state.
    if (state_.compare_exchange_weak(cur, t.state, std::memory_order_acq_rel, std::memory_order_acquire)) return t;
  }
}

}  // namespace cg::session
