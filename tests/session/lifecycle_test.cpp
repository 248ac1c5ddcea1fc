// The agent session's lifecycle: the allowed phase moves, SessionLifecycle::apply following next(),
// and that of concurrent closers exactly one starts the close (the one that makes the session leave
// routing and status) and decides its cause.
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "session/agent_session.hpp"

using namespace cg::session;

namespace {
bool starts_close(const Transition& t) {
  for (const auto& a : t.actions)
    if (a.what == Do::leave_routing) return true;
  return false;
}
}  // namespace

TEST_CASE("session phases move only forward, one step at a time", "[session][lifecycle]") {
  const SessionPhase all[] = {SessionPhase::upgrading, SessionPhase::open, SessionPhase::closing, SessionPhase::closed};
  std::set<std::pair<SessionPhase, SessionPhase>> allowed;
  for (auto from : all)
    for (auto to : all)
      if (phase_move_allowed(from, to)) allowed.insert({from, to});
  CHECK(allowed == std::set<std::pair<SessionPhase, SessionPhase>>{
                       {SessionPhase::upgrading, SessionPhase::open},
                       {SessionPhase::upgrading, SessionPhase::closed},  // the upgrade failed
                       {SessionPhase::open, SessionPhase::closing},  // every close starts here
                       {SessionPhase::closing, SessionPhase::closed},
                   });
  // Notably: an open session never ends without passing through closing (where it leaves routing
  // and status), and nothing leaves closed.
  CHECK_FALSE(phase_move_allowed(SessionPhase::open, SessionPhase::closed));
  CHECK_FALSE(phase_move_allowed(SessionPhase::closed, SessionPhase::open));
  CHECK(to_string(SessionPhase::closing) == "closing");
}

TEST_CASE("SessionLifecycle::apply follows next()", "[session][lifecycle]") {
  const AgentSessionOptions o;
  SessionLifecycle life;
  CHECK(life.phase() == SessionPhase::upgrading);
  CHECK(life.apply(ev::GatewayClose{1001, "x", CloseCause::shutdown}, o).actions.empty());  // not open yet
  CHECK(life.phase() == SessionPhase::upgrading);
  CHECK(life.apply(ev::Upgraded{}, o).state.phase == SessionPhase::open);
  CHECK(life.apply(ev::Upgraded{}, o).actions.empty());  // once
  CHECK(life.apply(ev::CloseTimeout{}, o).actions.empty());
  CHECK(life.phase() == SessionPhase::open);
  CHECK(starts_close(life.apply(ev::GatewayClose{1008, "revoked", CloseCause::revoked}, o)));
  CHECK_FALSE(starts_close(life.apply(ev::GatewayClose{1001, "again", CloseCause::shutdown}, o)));  // not a new close
  CHECK(life.state() == SessionState{SessionPhase::closing, CloseCause::revoked});
  CHECK(life.apply(ev::SocketDone{}, o).state.phase == SessionPhase::closed);
  CHECK(life.apply(ev::ReadFailed{"late"}, o).actions.empty());
  CHECK(life.state() == SessionState{SessionPhase::closed, CloseCause::revoked});

  SessionLifecycle failed;
  CHECK(failed.apply(ev::UpgradeFailed{"bad"}, o).state.phase == SessionPhase::closed);  // never open, never closing
  CHECK(failed.apply(ev::Upgraded{}, o).actions.empty());
  CHECK(failed.phase() == SessionPhase::closed);
}

TEST_CASE("of concurrent closers exactly one starts the close", "[session][lifecycle][concurrency]") {
  // A revoke, a reconnect request, the session's own heartbeat timeout and a failed write can race;
  // only one of them may take the session out of the registry and count it in the metric, and the
  // cause the session ends with is that one's.
  const AgentSessionOptions o;
  const SessionEvent closers[] = {
      ev::GatewayClose{1008, "revoked", CloseCause::revoked},
      ev::GatewayClose{1001, "reconnect", CloseCause::gateway_closed},
      ev::DeadlineDue{SteadyTime(std::chrono::hours(10)), SteadyTime()},
      ev::WriteFailed{"broken pipe"},
  };
  for (int round = 0; round < 200; ++round) {
    SessionLifecycle life;
    REQUIRE(life.apply(ev::Upgraded{}, o).state.phase == SessionPhase::open);
    std::atomic<int> winners{0};
    std::atomic<bool> go{false};
    std::atomic<CloseCause> winner_cause{CloseCause::connection_lost};
    std::vector<std::thread> ts;
    for (const auto& e : closers)
      ts.emplace_back([&, e] {
        while (!go.load()) std::this_thread::yield();
        Transition t = life.apply(e, o);
        if (starts_close(t)) {
          ++winners;
          winner_cause = t.state.cause;
        }
      });
    go = true;
    for (auto& t : ts) t.join();
    REQUIRE(winners == 1);
    REQUIRE(life.phase() == SessionPhase::closing);
    REQUIRE(life.state().cause == winner_cause.load());
  }
}
