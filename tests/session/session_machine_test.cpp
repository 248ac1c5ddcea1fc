// The agent session's lifecycle decisions (session/session_machine.hpp): every transition of next(),
// the texts and causes a close gets, and whole sessions driven event by event on a manual clock.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "session/session_machine.hpp"

using namespace std::chrono_literals;
using namespace cg::session;
using P = SessionPhase;

namespace {

const SteadyTime t0 = SteadyTime(1000h);  // the manual clock's origin
const cg::SysTime sys0 = cg::SysTime(std::chrono::hours(500000));

AgentSessionOptions options() {
  AgentSessionOptions o;
  o.heartbeat_interval = 30s;
  o.heartbeat_timeout = 90s;
  o.max_message_size = 100;
  return o;
}

std::vector<Do> kinds(const Transition& t) {
  std::vector<Do> v;
  for (const auto& a : t.actions) v.push_back(a.what);
  return v;
}

const SessionAction* find(const Transition& t, Do d) {
  for (const auto& a : t.actions)
    if (a.what == d) return &a;
  return nullptr;
}

// One representative of every event kind; where the payload decides (deadline, expiry, size, error),
// both sides. The names key the transition table below.
std::vector<std::pair<std::string, SessionEvent>> all_events() {
  return {
      {"upgrade_failed", ev::UpgradeFailed{"bad handshake"}},
      {"upgraded", ev::Upgraded{t0}},
      {"registered", ev::Registered{}},
      {"admission_refused", ev::AdmissionRefused{}},
      {"ping_due", ev::PingDue{t0 + 30s}},
      {"ping_written", ev::PingWritten{""}},
      {"ping_failed", ev::PingWritten{"broken pipe"}},
      {"pong", ev::Pong{t0 + 31s, t0 + 30s}},
      {"pong_unasked", ev::Pong{t0 + 31s, std::nullopt}},
      {"deadline_early", ev::DeadlineDue{t0 + 90s - 1ns, t0}},
      {"deadline_passed", ev::DeadlineDue{t0 + 90s, t0}},
      {"expiry_early", ev::ExpiryDue{sys0 - 1ns, sys0}},
      {"expiry_passed", ev::ExpiryDue{sys0, sys0}},
      {"gateway_close", ev::GatewayClose{1008, "revoked", CloseCause::revoked}},
      {"close_frame_due", ev::CloseFrameDue{1008, "revoked"}},
      {"close_frame_sent", ev::CloseFrameSent{""}},
      {"close_frame_failed", ev::CloseFrameSent{"reset"}},
      {"agent_close_frame", ev::AgentCloseFrame{1000, "bye"}},
      {"received_part", ev::Received{50, false}},
      {"received_message", ev::Received{100, true}},
      {"received_too_big", ev::Received{101, false}},
      {"read_closed", ev::ReadClosed{1000, "bye"}},
      {"read_failed", ev::ReadFailed{"stream truncated"}},
      {"write_failed", ev::WriteFailed{"broken pipe"}},
      {"close_timeout", ev::CloseTimeout{}},
      {"socket_done", ev::SocketDone{}},
  };
}

const P all_phases[] = {P::upgrading, P::open, P::closing, P::closed};

struct Row {
  P from;
  std::string event;
  P to;
  std::vector<Do> actions;
};

// The whole table: every (phase, event) pair not listed here changes nothing and does nothing.
const std::vector<Row>& table() {
  static const std::vector<Row> rows = {
      // upgrading
      {P::upgrading, "upgrade_failed", P::closed, {Do::note}},
      {P::upgrading, "upgraded", P::open, {Do::record_pong, Do::register_session}},
      // open: registration, heartbeats, reads
      {P::open, "registered", P::open, {Do::count_opened, Do::read, Do::arm_ping, Do::arm_deadline, Do::arm_expiry}},
      {P::open, "admission_refused", P::closing, {Do::note, Do::send_goaway, Do::leave_routing, Do::post_close_frame, Do::read}},
      {P::open, "ping_due", P::open, {Do::send_ping}},
      {P::open, "ping_written", P::open, {Do::arm_ping}},
      {P::open, "ping_failed", P::open, {Do::note, Do::arm_ping}},
      {P::open, "pong", P::open, {Do::record_pong, Do::record_rtt}},
      {P::open, "pong_unasked", P::open, {Do::record_pong}},
      {P::open, "deadline_early", P::open, {Do::arm_deadline}},
      {P::open, "deadline_passed", P::closing, {Do::note, Do::leave_routing, Do::teardown}},
      {P::open, "expiry_early", P::open, {Do::arm_expiry}},
      {P::open, "expiry_passed", P::closing, {Do::note, Do::leave_routing, Do::post_close_frame}},
      {P::open, "gateway_close", P::closing, {Do::leave_routing, Do::post_close_frame}},
      {P::open, "agent_close_frame", P::closing, {Do::leave_routing, Do::arm_close_timer}},
      {P::open, "received_part", P::open, {Do::read}},
      {P::open, "received_message", P::open, {Do::deliver, Do::read}},
      {P::open,
       "received_too_big",
       P::closing,
       {Do::note, Do::discard_input, Do::leave_routing, Do::stop_timers, Do::arm_close_timer, Do::close_and_wait}},
      {P::open, "read_closed", P::closing, {Do::leave_routing, Do::done}},
      {P::open, "read_failed", P::closing, {Do::leave_routing, Do::done}},
      {P::open, "write_failed", P::closing, {Do::leave_routing, Do::teardown}},
      {P::open, "socket_done", P::closing, {Do::leave_routing, Do::done}},
      // closing: the close runs to its end, bounded by the close timer
      {P::closing, "registered", P::closing, {Do::count_opened, Do::read}},
      {P::closing, "admission_refused", P::closing, {Do::read}},
      {P::closing, "ping_failed", P::closing, {Do::note}},
      {P::closing, "pong", P::closing, {Do::record_pong, Do::record_rtt}},
      {P::closing, "pong_unasked", P::closing, {Do::record_pong}},
      {P::closing, "close_frame_due", P::closing, {Do::stop_timers, Do::arm_close_timer, Do::send_close_frame}},
      {P::closing, "close_frame_failed", P::closing, {Do::teardown}},
      {P::closing, "received_part", P::closing, {Do::discard_input, Do::read}},
      {P::closing, "received_message", P::closing, {Do::discard_input, Do::read}},
      {P::closing, "received_too_big", P::closing, {Do::discard_input, Do::read}},
      {P::closing, "read_closed", P::closing, {Do::done}},
      {P::closing, "read_failed", P::closing, {Do::done}},
      {P::closing, "close_timeout", P::closing, {Do::note, Do::teardown}},
      {P::closing, "socket_done", P::closed, {Do::stop_timers, Do::forget}},
  };
  return rows;
}

// Feeds events to a SessionLifecycle like AgentSession does: `done` becomes SocketDone and
// `register_session` becomes Registered (or AdmissionRefused when the registry is draining).
struct Run {
  SessionLifecycle life;
  AgentSessionOptions o = options();
  bool registry_draining = false;
  std::vector<SessionAction> performed;

  void operator()(const SessionEvent& e) {
    for (const auto& a : life.apply(e, o).actions) {
      performed.push_back(a);
      if (a.what == Do::done) (*this)(ev::SocketDone{});
      if (a.what == Do::register_session) {
        if (registry_draining) (*this)(ev::AdmissionRefused{});
        else (*this)(ev::Registered{});
      }
    }
  }
  std::vector<Do> take() {
    std::vector<Do> v;
    for (const auto& a : performed) v.push_back(a.what);
    performed.clear();
    return v;
  }
  const SessionAction* last(Do d) const {
    for (auto it = performed.rbegin(); it != performed.rend(); ++it)
      if (it->what == d) return &*it;
    return nullptr;
  }
};

}  // namespace

TEST_CASE("next: every phase and event gives the transition of the table, and nothing else acts", "[session][machine]") {
  const auto o = options();
  std::set<std::pair<P, std::string>> listed;
  for (const auto& row : table()) listed.insert({row.from, row.event});
  for (const auto& [name, e] : all_events()) {
    for (P from : all_phases) {
      std::string phase(to_string(from));
      CAPTURE(name, phase);
      Transition t = next({from, CloseCause::connection_lost}, e, o);
      const Row* row = nullptr;
      for (const auto& r : table())
        if (r.from == from && r.event == name) row = &r;
      if (row) {
        CHECK(t.state.phase == row->to);
        CHECK(kinds(t) == row->actions);
      } else {
        CHECK(t.state.phase == from);
        CHECK(t.actions.empty());
      }
    }
  }
  // Every row names an event that exists.
  std::set<std::string> names;
  for (const auto& [name, e] : all_events()) names.insert(name);
  for (const auto& row : table()) CHECK(names.count(row.event) == 1);
}

TEST_CASE("next: phases move only along allowed moves, and only open to closing starts a close", "[session][machine]") {
  const auto o = options();
  const CloseCause causes[] = {CloseCause::connection_lost, CloseCause::revoked};
  for (const auto& [name, e] : all_events())
    for (P from : all_phases)
      for (CloseCause c : causes) {
        std::string phase(to_string(from));
        CAPTURE(name, phase);
        Transition t = next({from, c}, e, o);
        CHECK((t.state.phase == from || phase_move_allowed(from, t.state.phase)));
        const SessionAction* leave = find(t, Do::leave_routing);
        const bool starts_close = from == P::open && t.state.phase == P::closing;
        CHECK((leave != nullptr) == starts_close);
        if (starts_close) {
          // The cause is decided once, with the move, and the close has a text for the logs.
          CHECK(t.state.cause == leave->cause);
          CHECK_FALSE(leave->text.empty());
        } else {
          CHECK(t.state.cause == c);
        }
        // The session is forgotten (registry remove, log) exactly when it becomes closed after open.
        CHECK((find(t, Do::forget) != nullptr) == (from == P::closing && t.state.phase == P::closed));
      }
}

TEST_CASE("next: a gateway close, from any thread, only leaves routing and posts the close frame", "[session][machine]") {
  Transition t = next({P::open}, ev::GatewayClose{1001, std::string(200, 'x'), CloseCause::gateway_closed}, options());
  REQUIRE(kinds(t) == std::vector<Do>{Do::leave_routing, Do::post_close_frame});
  CHECK(t.state == SessionState{P::closing, CloseCause::gateway_closed});
  // The reason is cut to 120 bytes (a close frame's payload is at most 125).
  CHECK(t.actions[1].code == 1001);
  CHECK(t.actions[1].text == std::string(120, 'x'));
  CHECK(t.actions[0].cause == CloseCause::gateway_closed);
  CHECK(t.actions[0].text == "closed by gateway (code 1001): " + std::string(120, 'x'));

  Transition r = next({P::open}, ev::GatewayClose{1008, "no CR left", CloseCause::revoked}, options());
  CHECK(r.state.cause == CloseCause::revoked);
  CHECK(r.actions[0].text == "closed by gateway (code 1008): no CR left");
}

TEST_CASE("next: the close frame goes from the strand with the code and reason decided", "[session][machine]") {
  Transition t = next({P::closing, CloseCause::revoked}, ev::CloseFrameDue{1008, "no CR left"}, options());
  const SessionAction* f = find(t, Do::send_close_frame);
  REQUIRE(f);
  CHECK(f->code == 1008);
  CHECK(f->text == "no CR left");
  CHECK(t.state.cause == CloseCause::revoked);
  // A close frame that cannot be written: the socket goes now.
  CHECK(kinds(next({P::closing}, ev::CloseFrameSent{"broken pipe"}, options())) == std::vector<Do>{Do::teardown});
  CHECK(next({P::closing}, ev::CloseFrameSent{""}, options()).actions.empty());
}

TEST_CASE("next: heartbeats on a manual clock", "[session][machine][heartbeat]") {
  const auto o = options();
  const SessionState open{P::open};
  Transition ping = next(open, ev::PingDue{t0 + 30s}, o);
  REQUIRE(kinds(ping) == std::vector<Do>{Do::send_ping});
  CHECK(ping.actions[0].at == t0 + 30s);

  Transition pong = next(open, ev::Pong{t0 + 30s + 7ms, t0 + 30s}, o);
  REQUIRE(kinds(pong) == std::vector<Do>{Do::record_pong, Do::record_rtt});
  CHECK(pong.actions[0].at == t0 + 30s + 7ms);
  CHECK(pong.actions[1].span == 7ms);

  // The deadline counts from the last pong: due at exactly last pong + timeout, not a tick before.
  CHECK(kinds(next(open, ev::DeadlineDue{t0 + 30s + 90s, t0 + 30s}, o)) != std::vector<Do>{Do::arm_deadline});
  CHECK(kinds(next(open, ev::DeadlineDue{t0 + 30s + 90s - 1ns, t0 + 30s}, o)) == std::vector<Do>{Do::arm_deadline});
  Transition late = next(open, ev::DeadlineDue{t0 + 200s, t0 + 30s}, o);
  CHECK(late.state == SessionState{P::closing, CloseCause::heartbeat_timeout});
  CHECK(late.actions[0].note == Note::heartbeat_timeout);
  CHECK(find(late, Do::leave_routing)->text == "heartbeat timeout: no pong within 1m30s");
  // No close handshake with an agent that answers no pings.
  CHECK(find(late, Do::post_close_frame) == nullptr);
  CHECK(late.actions.back().what == Do::teardown);

  // A ping that cannot be written is logged; the next one is timed from its end.
  Transition failed = next(open, ev::PingWritten{"broken pipe"}, o);
  REQUIRE(kinds(failed) == std::vector<Do>{Do::note, Do::arm_ping});
  CHECK(failed.actions[0].note == Note::ping_failed);
  CHECK(failed.actions[0].text == "broken pipe");
}

TEST_CASE("next: the certificate expiry closes with 1008 at not-after", "[session][machine]") {
  const auto o = options();
  CHECK(kinds(next({P::open}, ev::ExpiryDue{sys0 - 1s, sys0}, o)) == std::vector<Do>{Do::arm_expiry});
  Transition t = next({P::open}, ev::ExpiryDue{sys0 + 1s, sys0}, o);
  CHECK(t.state == SessionState{P::closing, CloseCause::certificate_expired});
  CHECK(t.actions[0].note == Note::certificate_expired);
  CHECK(find(t, Do::leave_routing)->text == "closed by gateway (code 1008): client certificate expired");
  CHECK(find(t, Do::post_close_frame)->code == 1008);
  CHECK(find(t, Do::post_close_frame)->text == "client certificate expired");
}

TEST_CASE("next: the agent closing, the connection lost and a failed write get their causes and texts", "[session][machine]") {
  const auto o = options();
  Transition frame = next({P::open}, ev::AgentCloseFrame{1000, "bye"}, o);
  CHECK(frame.state == SessionState{P::closing, CloseCause::agent_closed});
  CHECK(frame.actions[0].text == "agent closed the connection (code 1000: bye)");
  CHECK(next({P::open}, ev::AgentCloseFrame{1005, ""}, o).actions[0].text == "agent closed the connection (code 1005)");
  CHECK(next({P::open}, ev::ReadClosed{1001, ""}, o).actions[0].text == "agent closed the connection (code 1001)");

  Transition lost = next({P::open}, ev::ReadFailed{"stream truncated"}, o);
  CHECK(lost.state == SessionState{P::closing, CloseCause::connection_lost});
  CHECK(lost.actions[0].text == "connection lost: stream truncated");
  CHECK(next({P::open}, ev::SocketDone{}, o).actions[0].text == "connection lost");

  Transition write = next({P::open}, ev::WriteFailed{"broken pipe"}, o);
  CHECK(write.state == SessionState{P::closing, CloseCause::write_failed});
  CHECK(write.actions[0].text == "write failed: broken pipe");

  // A close under way keeps its cause whatever ends it.
  for (const SessionEvent& e : {SessionEvent{ev::ReadFailed{"reset"}}, SessionEvent{ev::WriteFailed{"reset"}},
                                SessionEvent{ev::AgentCloseFrame{1000, ""}}, SessionEvent{ev::SocketDone{}}})
    CHECK(next({P::closing, CloseCause::revoked}, e, o).state.cause == CloseCause::revoked);
  CHECK(find(next({P::closing, CloseCause::revoked}, ev::SocketDone{}, o), Do::forget)->cause == CloseCause::revoked);
}

TEST_CASE("next: a message one byte over the limit closes 1009, one at the limit is delivered", "[session][machine]") {
  const auto o = options();
  CHECK(kinds(next({P::open}, ev::Received{100, true}, o)) == std::vector<Do>{Do::deliver, Do::read});
  CHECK(kinds(next({P::open}, ev::Received{100, false}, o)) == std::vector<Do>{Do::read});
  Transition big = next({P::open}, ev::Received{101, false}, o);
  CHECK(big.state == SessionState{P::closing, CloseCause::message_too_big});
  CHECK(big.actions[0].note == Note::too_big);
  CHECK(find(big, Do::leave_routing)->text == "message larger than the limit of 100 bytes");
  const SessionAction* close = find(big, Do::close_and_wait);
  REQUIRE(close);
  CHECK(close->code == 1009);
  CHECK(close->text == "message too big");
  // No further read: the close handshake reads on to the agent's close frame by itself.
  CHECK(find(big, Do::read) == nullptr);
}

TEST_CASE("next: a session the registry refuses announces GOAWAY before its 1001 close", "[session][machine][drain]") {
  Transition t = next({P::open}, ev::AdmissionRefused{}, options());
  CHECK(t.state == SessionState{P::closing, CloseCause::shutdown});
  REQUIRE(kinds(t) == std::vector<Do>{Do::note, Do::send_goaway, Do::leave_routing, Do::post_close_frame, Do::read});
  CHECK(t.actions[0].note == Note::draining);
  CHECK(t.actions[2].text == "closed by gateway (code 1001): gateway shutting down");
  CHECK(t.actions[3].code == 1001);
  CHECK(t.actions[3].text == "gateway shutting down");
}

TEST_CASE("a whole session: upgrade, heartbeats, then the gateway closes it", "[session][machine][heartbeat]") {
  Run run;
  run(ev::Upgraded{t0});
  CHECK(run.life.phase() == P::open);
  CHECK(run.take() == std::vector<Do>{Do::record_pong, Do::register_session, Do::count_opened, Do::read, Do::arm_ping,
                                      Do::arm_deadline, Do::arm_expiry});
  SteadyTime now = t0;
  SteadyTime last_pong = t0;
  for (int i = 0; i < 3; ++i) {
    now += 30s;
    run(ev::PingDue{now});
    run(ev::PingWritten{""});
    now += 5ms;
    run(ev::Pong{now, now - 5ms});
    last_pong = now;
    run(ev::DeadlineDue{now, last_pong});  // a deadline that fires after a pong is armed again
    CHECK(run.take() == std::vector<Do>{Do::send_ping, Do::arm_ping, Do::record_pong, Do::record_rtt, Do::arm_deadline});
  }
  run(ev::GatewayClose{1001, "reconnect", CloseCause::gateway_closed});
  CHECK(run.life.state() == SessionState{P::closing, CloseCause::gateway_closed});
  run(ev::CloseFrameDue{1001, "reconnect"});
  run(ev::PingDue{now + 30s});  // a timer that had fired already: nothing
  run(ev::AgentCloseFrame{1001, ""});  // the agent's answer: the close is already under way
  run(ev::ReadClosed{1001, ""});
  CHECK(run.take() == std::vector<Do>{Do::leave_routing, Do::post_close_frame, Do::stop_timers, Do::arm_close_timer,
                                      Do::send_close_frame, Do::done, Do::stop_timers, Do::forget});
  CHECK(run.life.state() == SessionState{P::closed, CloseCause::gateway_closed});
  run(ev::CloseFrameSent{""});
  run(ev::CloseTimeout{});
  CHECK(run.take().empty());
}

TEST_CASE("a whole session: an agent that stops answering pings is dropped at the deadline", "[session][machine][heartbeat]") {
  Run run;
  run(ev::Upgraded{t0});
  run.take();
  SteadyTime now = t0 + 30s;
  run(ev::PingDue{now});
  run(ev::PingWritten{""});
  run(ev::DeadlineDue{t0 + 90s, t0});
  CHECK(run.life.state() == SessionState{P::closing, CloseCause::heartbeat_timeout});
  // The teardown makes the read fail: the session is forgotten with the heartbeat cause.
  run(ev::ReadFailed{"operation canceled"});
  CHECK(run.last(Do::forget)->cause == CloseCause::heartbeat_timeout);
  CHECK(run.life.phase() == P::closed);
}

TEST_CASE("a whole session: the upgrade completes while the gateway drains", "[session][machine][drain]") {
  Run run;
  run.registry_draining = true;
  run(ev::Upgraded{t0});
  CHECK(run.take() == std::vector<Do>{Do::record_pong, Do::register_session, Do::note, Do::send_goaway, Do::leave_routing,
                                      Do::post_close_frame, Do::read});
  CHECK(run.life.state() == SessionState{P::closing, CloseCause::shutdown});
  // No heartbeat or expiry timer was armed, and nothing the agent still sends is delivered.
  run(ev::CloseFrameDue{1001, "gateway shutting down"});
  run(ev::Received{10, true});
  CHECK(run.take() == std::vector<Do>{Do::stop_timers, Do::arm_close_timer, Do::send_close_frame, Do::discard_input, Do::read});
  // The agent never answers: the close timer tears the socket down and the read ends.
  run(ev::CloseTimeout{});
  run(ev::ReadFailed{"bad descriptor"});
  CHECK(run.take() == std::vector<Do>{Do::note, Do::teardown, Do::done, Do::stop_timers, Do::forget});
  CHECK(run.life.state() == SessionState{P::closed, CloseCause::shutdown});
}

TEST_CASE("a whole session: an oversized message ends in 1009 and the session is done when the close is", "[session][machine]") {
  Run run;
  run(ev::Upgraded{t0});
  run(ev::Received{60, false});
  run.take();
  run(ev::Received{101, false});
  CHECK(run.life.state() == SessionState{P::closing, CloseCause::message_too_big});
  run(ev::SocketDone{});  // the close handshake ended
  CHECK(run.life.phase() == P::closed);
  CHECK(run.last(Do::forget)->cause == CloseCause::message_too_big);
}

TEST_CASE("a failed upgrade never opens, never registers and is never forgotten", "[session][machine]") {
  Run run;
  run(ev::UpgradeFailed{"unsent TLS output left in the handshake stream"});
  CHECK(run.life.phase() == P::closed);
  CHECK(run.take() == std::vector<Do>{Do::note});
  run(ev::Upgraded{t0});
  run(ev::SocketDone{});
  CHECK(run.take().empty());
}
