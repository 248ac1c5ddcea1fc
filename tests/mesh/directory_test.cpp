// The session directory of the other replicas: the wire codec (hostile bytes refused), the update
// sequence (snapshot, deltas, resync, bye), expiry, routing candidates, and the cluster-wide sum of
// per-replica reports (no false disconnect when an agent moves between replicas).
#include <catch2/catch.hpp>

#include "mesh/directory.hpp"
#include "mesh/summing_registry.hpp"

using namespace cg;
using namespace cg::mesh;
using namespace std::chrono_literals;

namespace {
SysTime at(int s) { return SysTime{} + std::chrono::hours(24 * 365 * 50) + std::chrono::seconds(s); }
session::SessionReport rep(int n, std::optional<int> rise, std::optional<int> zero, std::optional<int> seen = std::nullopt) {
  session::SessionReport r;
  r.connected_agents = n;
  if (rise) r.last_rise = at(*rise);
  if (zero) r.last_zero = at(*zero);
  if (seen) r.last_seen = at(*seen);
  if (n > 0 && rise) r.earliest_connected = at(*rise);
  return r;
}
Update snapshot(const std::string& replica, const std::string& instance) {
  Update u;
  u.kind = UpdateKind::snapshot;
  u.replica = replica;
  u.instance = instance;
  u.up.push_back({"c1", "workflowplane", "p1", {"/wp1"}, {"http-stream/v1"}});
  u.reports.push_back({ReportScope::cr, "workflowplane", "/wp1", rep(1, 10, std::nullopt, 12)});
  u.reports.push_back({ReportScope::plane, "workflowplane", "p1", rep(1, 10, std::nullopt, 12)});
  return u;
}
Update delta(const std::string& replica, const std::string& instance, uint64_t seq) {
  Update u;
  u.kind = UpdateKind::delta;
  u.replica = replica;
  u.instance = instance;
  u.seq = seq;
  return u;
}
}  // namespace

TEST_CASE("sum_reports: counts add, and the total's zero is kept only when every replica was at zero then") {
  // One replica's agent left (zero at 20) while another replica's agent stayed since 5: the total
  // never reached zero, so no disconnect may be derived from the sum.
  auto s = sum_reports({rep(0, 5, 20), rep(1, 5, std::nullopt)});
  CHECK(s.connected_agents == 1);
  CHECK_FALSE(s.last_zero);
  // An agent moved from a dead replica (departed: zero at 30, when it was dropped) to a survivor at 25.
  s = sum_reports({rep(0, 10, 30), rep(1, 25, 3)});
  CHECK(s.connected_agents == 1);
  CHECK_FALSE(s.last_zero);
  CHECK(s.last_rise == at(25));
  // Everyone gone at 20, then one back at 40 on another replica: a real disconnect and reconnect.
  s = sum_reports({rep(0, 10, 20), rep(1, 40, 15)});
  CHECK(s.last_zero == at(20));
  CHECK(s.last_rise == at(40));
  // No agent anywhere: the latest zero and the latest rise.
  s = sum_reports({rep(0, 10, 20), rep(0, 12, 18)});
  CHECK(s.connected_agents == 0);
  CHECK(s.last_zero == at(20));
  CHECK(s.last_rise == at(12));
  // movingUntil (agents the gateway moved, expected back) is the latest.
  auto moving = rep(0, 10, 20);
  moving.moving_until = at(30);
  s = sum_reports({moving, rep(0, 5, 8)});
  CHECK(s.moving_until == at(30));
  // lastSeen is the latest, earliestConnected the earliest among replicas with agents.
  s = sum_reports({rep(2, 10, std::nullopt, 50), rep(1, 7, std::nullopt, 60), rep(0, 1, 2, 70)});
  CHECK(s.connected_agents == 3);
  CHECK(s.last_seen == at(70));
  CHECK(s.earliest_connected == at(7));
}

TEST_CASE("the update codec round-trips and refuses malformed or oversized bodies") {
  Update u = snapshot("gw-1", "abc");
  u.draining = true;
  u.reports[0].report.moving_until = at(99);
  std::string err;
  auto back = decode(encode(u), err);
  REQUIRE(back);
  CHECK(err.empty());
  CHECK(back->kind == UpdateKind::snapshot);
  CHECK(back->replica == "gw-1");
  CHECK(back->draining);
  REQUIRE(back->up.size() == 1);
  CHECK(back->up[0] == u.up[0]);
  REQUIRE(back->reports.size() == 2);
  CHECK(back->reports[0].report.last_rise == at(10));
  CHECK(back->reports[1].scope == ReportScope::plane);
  CHECK(back->reports[0].report.moving_until == at(99));
  CHECK_FALSE(back->reports[1].report.moving_until);

  for (
      const char* bad :
      {"", "[]", "{}", R"({"kind":"snapshot"})", R"({"kind":"nope","replica":"a","instance":"b","seq":0})",
       R"({"kind":"delta","replica":"a","instance":"b","seq":-1})",
       R"({"kind":"delta","replica":"a","instance":"b","seq":1,"up":[{"id":"c"}]})",
       R"({"kind":"delta","replica":"a","instance":"b","seq":1,"down":[7]})",
       R"({"kind":"heartbeat","replica":"a","instance":"b","seq":1,"down":["c"]})",
       R"({"kind":"snapshot","replica":"a","instance":"b","seq":0,"down":["c"]})",
       R"({"kind":"delta","replica":"a","instance":"b","seq":1,"reports":[{"scope":"cr","planeType":"t","key":"k","count":-3}]})",
       R"({"kind":"delta","replica":"a","instance":"b","seq":1,"reports":[{"scope":"cr","planeType":"t","key":"k","count":1,"lastSeen":"yesterday"}]})",
       R"({"kind":"delta","replica":"","instance":"b","seq":1})"}) {
    INFO(bad);
    CHECK_FALSE(decode(bad, err));
    CHECK_FALSE(err.empty());
  }
  std::string huge = R"({"kind":"delta","replica":")" + std::string(kMaxName + 1, 'a') + R"(","instance":"b","seq":1})";
  CHECK_FALSE(decode(huge, err));
  CHECK_FALSE(decode(std::string(kMaxUpdateBytes + 1, ' '), err));
}

TEST_CASE("deltas apply in sequence, and a gap, a repeat or an unknown instance asks for a resync") {
  Directory d;
  DirectoryChange ch;
  const auto now = Directory::Clock::now();
  // A delta before any snapshot: resync.
  CHECK(d.apply(delta("gw-2", "i1", 1), now, at(0), ch) == ApplyResult::resync);
  CHECK(d.apply(snapshot("gw-2", "i1"), now, at(0), ch) == ApplyResult::applied);
  CHECK(ch.crs.count({"workflowplane", "/wp1"}));
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "").size() == 1);
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "http-stream/v1").size() == 1);
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "other/v1").empty());
  CHECK(d.candidates("workflowplane", "p1", "/other", "").empty());
  CHECK(d.plane_has_sessions("workflowplane", "p1"));
  CHECK_FALSE(d.any_draining());

  Update u = delta("gw-2", "i1", 1);
  u.up.push_back({"c2", "workflowplane", "p1", {"/wp1", "ns/wp2"}, {}});
  CHECK(d.apply(u, now, at(1), ch) == ApplyResult::applied);
  CHECK(d.session_count("gw-2") == 2);
  // A session that got GOAWAY (rebalancer) is never a candidate, the replica's others still are.
  Update g = delta("gw-2", "i1", 2);
  SessionEntry shed{"c1", "workflowplane", "p1", {"/wp1"}, {"http-stream/v1"}};
  shed.draining = true;
  g.up.push_back(shed);
  std::string err;
  auto back = decode(encode(g), err);
  REQUIRE(back);
  CHECK(back->up[0].draining);
  CHECK(d.apply(*back, now, at(1), ch) == ApplyResult::applied);
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "http-stream/v1").empty());
  REQUIRE(d.candidates("workflowplane", "p1", "/wp1", "").size() == 1);
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "")[0].sessions == 1);
  CHECK(d.apply(u, now, at(1), ch) == ApplyResult::resync);  // seq 1 again
  CHECK(d.apply(delta("gw-2", "i1", 5), now, at(1), ch) == ApplyResult::resync);  // gap
  CHECK(d.apply(delta("gw-2", "other", 2), now, at(1), ch) == ApplyResult::resync);  // restarted publisher

  Update down = delta("gw-2", "i1", 3);
  down.down.push_back("c1");
  down.draining = true;
  ch = {};
  CHECK(d.apply(down, now, at(2), ch) == ApplyResult::applied);
  CHECK(d.session_count("gw-2") == 1);
  CHECK(d.any_draining());
  // Draining: its sessions are no longer candidates, but still count as the plane's sessions.
  CHECK(d.candidates("workflowplane", "p1", "ns/wp2", "").empty());
  CHECK(d.plane_has_sessions("workflowplane", "p1"));
}

TEST_CASE("a replica that goes silent or says bye leaves routing and the sum, with a departed zero") {
  Directory d;
  DirectoryChange ch;
  const auto t0 = Directory::Clock::now();
  REQUIRE(d.apply(snapshot("gw-2", "i1"), t0, at(0), ch) == ApplyResult::applied);
  REQUIRE(d.apply(snapshot("gw-3", "j1"), t0 + 4s, at(4), ch) == ApplyResult::applied);
  CHECK(d.reports("workflowplane", "/wp1", ReportScope::cr).size() == 2);

  ch = {};
  auto dropped = d.expire(t0 + 6s, 5s, at(60), ch);
  REQUIRE(dropped == std::vector<std::string>{"gw-2"});
  CHECK(ch.crs.count({"workflowplane", "/wp1"}));
  auto parts = d.reports("workflowplane", "/wp1", ReportScope::cr);
  // gw-3's live report, and gw-2's departed one (no agents, zero when it was dropped).
  REQUIRE(parts.size() == 2);
  auto s = sum_reports(parts);
  CHECK(s.connected_agents == 1);
  CHECK_FALSE(s.last_zero);  // gw-3's agent has been there all along
  CHECK(d.replicas().size() == 1);

  // A Kubernetes Lease gone: dropped although it was heard a moment ago.
  std::set<std::string> alive{"gw-9"};
  ch = {};
  CHECK(d.expire(t0 + 6s, 5s, at(70), ch, &alive) == std::vector<std::string>{"gw-3"});
  auto gone = sum_reports(d.reports("workflowplane", "/wp1", ReportScope::cr));
  CHECK(gone.connected_agents == 0);
  CHECK(gone.last_zero == at(70));
  CHECK_FALSE(d.plane_has_sessions("workflowplane", "p1"));

  // bye: dropped at once; a bye of another instance is ignored.
  REQUIRE(d.apply(snapshot("gw-4", "k1"), t0, at(7), ch) == ApplyResult::applied);
  Update bye;
  bye.kind = UpdateKind::bye;
  bye.replica = "gw-4";
  bye.instance = "old";
  d.apply(bye, t0, at(8), ch);
  CHECK(d.session_count("gw-4") == 1);
  bye.instance = "k1";
  d.apply(bye, t0, at(8), ch);
  CHECK(d.session_count("gw-4") == 0);
  CHECK(d.replicas().empty());

  // What k1 sent before its bye and arrives after it (the other connection of the pair) does not bring
  // it back: not a snapshot, not a delta, not a heartbeat. A new instance of gw-4 is welcome.
  ch = {};
  CHECK(d.apply(snapshot("gw-4", "k1"), t0 + 1s, at(9), ch) == ApplyResult::departed);
  CHECK(d.apply(delta("gw-4", "k1", 1), t0 + 1s, at(9), ch) == ApplyResult::departed);
  Update hb;
  hb.kind = UpdateKind::heartbeat;
  hb.replica = "gw-4";
  hb.instance = "k1";
  CHECK(d.apply(hb, t0 + 1s, at(9), ch) == ApplyResult::departed);
  CHECK(d.replicas().empty());
  CHECK(ch.empty());
  CHECK(d.apply(snapshot("gw-4", "k2"), t0 + 2s, at(10), ch) == ApplyResult::applied);
  CHECK(d.replicas() == std::map<std::string, std::string>{{"gw-4", "k2"}});
}

TEST_CASE("a replica that just started holds only the disconnected writes of CRs it has seen nothing of since") {
  const SysTime started = at(100), until = at(108);
  // Nothing since the start: the CR's agent may be on its way from a replica drained before it.
  auto unseen = rep(0, 10, 50);
  hold_unseen_since_start(unseen, started, until);
  REQUIRE(unseen.moving_until);
  CHECK(*unseen.moving_until == until);
  auto never = rep(0, std::nullopt, std::nullopt);
  hold_unseen_since_start(never, started, until);
  CHECK(never.moving_until == until);
  // A later movingUntil (the gateway moved the agent) is kept.
  auto moved = rep(0, 10, 50);
  moved.moving_until = at(120);
  hold_unseen_since_start(moved, started, until);
  CHECK(moved.moving_until == at(120));
  // Evidence since the start: an agent now, or a rise or a fall seen after the start; a close this
  // replica saw is written as promptly as ever.
  for (auto r : {rep(1, 10, std::nullopt), rep(0, 101, 102), rep(0, 10, 103)}) {
    hold_unseen_since_start(r, started, until);
    CHECK_FALSE(r.moving_until);
  }
}

TEST_CASE("summed pick: an agent held by another replica is moving there, never a 403 here") {
  auto local = session::make_local_registry();
  Directory d;
  SummingRegistry reg(*local, d);
  DirectoryChange ch;
  session::PickMiss miss{};
  CHECK(reg.pick("workflowplane", "p1", "/wp1", miss) == nullptr);
  CHECK(miss == session::PickMiss::no_agent);
  REQUIRE(d.apply(snapshot("gw-2", "i1"), Directory::Clock::now(), at(0), ch) == ApplyResult::applied);
  // gw-2 holds the CR's agent: forwarded there, nothing is refused here.
  CHECK(reg.pick("workflowplane", "p1", "/wp1", miss) == nullptr);
  CHECK(miss == session::PickMiss::moving);
  CHECK(reg.pick("workflowplane", "p1", "/wp1", miss, "http-stream/v1") == nullptr);
  CHECK(miss == session::PickMiss::moving);
  // Only other CRs' sessions of the plane anywhere: 403; another plane: no agent.
  CHECK(reg.pick("workflowplane", "p1", "/other", miss) == nullptr);
  CHECK(miss == session::PickMiss::not_authorized);
  CHECK(reg.pick("workflowplane", "p9", "/wp1", miss) == nullptr);
  CHECK(miss == session::PickMiss::no_agent);
  CHECK(reg.pick("workflowplane", "p1", "/wp1", miss, "other/v1") == nullptr);
  CHECK(miss == session::PickMiss::not_capable);
  // gw-2 drains: its session is no candidate any more, but the agent is on its way, not forbidden.
  Update down = delta("gw-2", "i1", 1);
  down.draining = true;
  REQUIRE(d.apply(down, Directory::Clock::now(), at(1), ch) == ApplyResult::applied);
  CHECK(d.candidates("workflowplane", "p1", "/wp1", "").empty());
  CHECK(reg.pick("workflowplane", "p1", "/wp1", miss) == nullptr);
  CHECK(miss == session::PickMiss::moving);
  CHECK(reg.pick("workflowplane", "p1", "/other", miss) == nullptr);
  CHECK(miss == session::PickMiss::not_authorized);
}
