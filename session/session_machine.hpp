// An agent session's lifecycle as a pure function: next(state, event) → {state, actions}. No I/O, no
// locks, no clock reads: the owner (AgentSession, agent_session.cpp) reads the clock and puts the
// time into the event, applies next() atomically (SessionLifecycle::apply) and performs the actions
// in order. Unit-tested in tests/session/session_machine_test.cpp.
#pragma once
#include <boost/container/static_vector.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/time.hpp"
#include "session/registry.hpp"

namespace cg::session {

struct AgentSessionOptions {
  Duration heartbeat_interval = std::chrono::seconds(30);
  Duration heartbeat_timeout = std::chrono::seconds(90);
  size_t max_message_size = 64u << 20;  // inbound WebSocket message limit
  size_t max_write_queue_bytes = 256u << 20;  // outbound bytes queued before send_text refuses
  Duration handshake_timeout = std::chrono::seconds(10);  // WebSocket upgrade handshake
  // Once a close starts, how long the session waits for the agent's close frame before it closes the
  // socket. After that frame (or without one) it sends TLS close_notify and closes at once: it waits
  // neither for the agent's close_notify (RFC 8446 §6.1 lets the closer skip it) nor for its end of
  // stream. Upstream's agent never closes its old socket after a close frame.
  Duration close_timeout = std::chrono::seconds(1);
};

// A session's lifecycle. The only moves are
//   upgrading → open     the upgrade succeeded (registered right after)
//   upgrading → closed   the upgrade failed
//   open → closing       a close started, whatever its cause: the session leaves routing and status
//   closing → closed     the socket's last operation has ended; the session is forgotten
enum class SessionPhase : uint8_t { upgrading, open, closing, closed };
std::string_view to_string(SessionPhase p);
bool phase_move_allowed(SessionPhase from, SessionPhase to);

// The whole lifecycle state: the phase and, from closing on, why the session closes (decided by the
// event that made the open → closing move, never changed afterwards). Aligned to its size: clang
// calls libatomic's generic __atomic_load for an under-aligned type (the fuzz build failed to link).
struct alignas(2) SessionState {
  SessionPhase phase = SessionPhase::upgrading;
  CloseCause cause = CloseCause::connection_lost;
  bool operator==(const SessionState&) const = default;
};

using SteadyTime = std::chrono::steady_clock::time_point;

// What happens to a session. All arrive on the session's strand except GatewayClose (any thread).
namespace ev {
struct UpgradeFailed {
  std::string why;
};  // the TLS takeover or the WebSocket handshake failed
struct Upgraded {
  SteadyTime now;
};  // the WebSocket handshake is done
struct Registered {};  // the registry took the session
struct AdmissionRefused {};  // the registry refused it: the gateway is draining
struct PingDue {
  SteadyTime now;
};  // the ping timer fired
struct PingWritten {
  std::string error;
};  // a ping's write ended (error empty: written)
struct Pong {
  SteadyTime now;
  std::optional<SteadyTime> ping_sent;
};  // ping_sent: the unanswered ping
struct DeadlineDue {
  SteadyTime now;
  SteadyTime last_pong;
};  // the pong deadline timer fired
struct ExpiryDue {
  SysTime now;
  SysTime not_after;
};  // the certificate expiry timer fired
struct GatewayClose {
  uint16_t code;
  std::string reason;
  CloseCause cause;
};  // AgentHandle::close
struct CloseFrameDue {
  uint16_t code;
  std::string reason;
};  // on the strand: the gateway's close frame goes now
struct CloseFrameSent {
  std::string error;
};  // the gateway's close handshake ended
struct AgentCloseFrame {
  uint16_t code;
  std::string reason;
};  // the agent's close frame arrived
struct Received {
  size_t buffered;
  bool message_done;
};  // a read added to the message buffer
struct ReadClosed {
  uint16_t code;
  std::string reason;
};  // the read ended: the close handshake is over
struct ReadFailed {
  std::string error;
};  // the read ended: the connection is lost
struct WriteFailed {
  std::string error;
};
struct CloseTimeout {};  // the close timer fired
struct SocketDone {};  // the socket's last operation has ended
}  // namespace ev
using SessionEvent =
    std::variant<ev::UpgradeFailed, ev::Upgraded, ev::Registered, ev::AdmissionRefused, ev::PingDue, ev::PingWritten, ev::Pong,
                 ev::DeadlineDue, ev::ExpiryDue, ev::GatewayClose, ev::CloseFrameDue, ev::CloseFrameSent, ev::AgentCloseFrame,
                 ev::Received, ev::ReadClosed, ev::ReadFailed, ev::WriteFailed, ev::CloseTimeout, ev::SocketDone>;

// What the owner does, in the order given.
enum class Do : uint8_t {
  note,  // log `note` (text: the error, when there is one)
  register_session,  // log the connection, add it to the registry: then Registered or AdmissionRefused
  count_opened,  // metrics: handshake accepted, session opened
  read,  // read on (the rest of the message, or the next one)
  deliver,  // hand the complete message to the FrameHandler, then empty the buffer
  discard_input,  // empty the message buffer unread
  arm_ping,
  arm_deadline,
  arm_expiry,
  arm_close_timer,
  stop_timers,  // all four
  send_ping,  // at: remembered until the pong, for the RTT
  record_pong,  // at: last seen, and the pong deadline counts from here
  record_rtt,  // span: the ping is answered
  send_goaway,  // {"type":"goaway","reason":"gateway draining"}, ahead of the close frame
  leave_routing,  // the close starts (cause, text): registry begin_close, metric, FrameHandler::on_closed
  post_close_frame,  // code, text: CloseFrameDue on the strand, behind what is already posted there
  send_close_frame,  // code, text: the close handshake while the read loop runs; then CloseFrameSent
  close_and_wait,  // code, text: the close handshake reads on to the agent's close frame; then SocketDone
  teardown,  // TCP shutdown and close: pending operations on the socket fail
  done,  // the socket's last operation has ended: SocketDone
  forget,  // cause: registry remove, log the disconnection, teardown
};
enum class Note : uint8_t {
  none,
  upgrade_failed,
  draining,
  too_big,
  heartbeat_timeout,
  certificate_expired,
  close_timeout,
  ping_failed
};

struct SessionAction {
  Do what = Do::note;
  Note note = Note::none;
  uint16_t code = 0;
  CloseCause cause = CloseCause::connection_lost;
  std::string text;
  SteadyTime at{};
  Duration span{};
};
// No transition has more than six actions: they stay inline, no heap allocation per event.
using SessionActions = boost::container::static_vector<SessionAction, 8>;

struct Transition {
  SessionState state;
  SessionActions actions;
};

// The lifecycle's one decision function. Events that do not fit the phase change nothing.
Transition next(SessionState s, const SessionEvent& e, const AgentSessionOptions& o);

// The state, shared between the session's strand and threads that close it. Thread-safe.
class SessionLifecycle {
 public:
  SessionState state() const { return state_.load(std::memory_order_acquire); }
  SessionPhase phase() const { return state().phase; }
  // next() applied atomically: the transition is computed from the state it replaces, so of
  // concurrent events each sees the other's move (of concurrent closers exactly one starts the close).
  Transition apply(const SessionEvent& e, const AgentSessionOptions& o);

 private:
  std::atomic<SessionState> state_{SessionState{}};
  static_assert(sizeof(SessionState) == 2);
  static_assert(alignof(SessionState) == 2);
  static_assert(std::atomic<SessionState>::is_always_lock_free);
};

// Heartbeat timers of all sessions are rounded up to a shared grid (1/8 of the interval, at most
// 250 ms; none below 8 ms intervals) so pings leave and pongs return in bursts: fewer thread wakeups.
SteadyTime heartbeat_align(SteadyTime t, Duration interval);

}  // namespace cg::session
