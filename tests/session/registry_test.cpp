// The local session registry with a fake AgentHandle: add/remove, per-CR reports and their rise/zero
// events, authorization changes, round-robin picking and SessionReport summing.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

#include "common/log.hpp"
#include "session/registry.hpp"
#include "tests/support/fake_handle.hpp"

using cg::SysTime;
using cg::session::AgentHandle;
using cg::session::PickMiss;
using cg::session::RegistryEvent;
using cg::session::SessionReport;
using cg::testing::FakeHandle;
using namespace std::chrono_literals;

namespace {

const bool kQuietLogs = [] {
  if (!std::getenv("CG_TEST_LOG")) cg::log::init(cg::log::Level::error, cg::log::Format::json);
  return true;
}();

const SysTime T0 = SysTime{} + std::chrono::hours(24 * 365 * 56);

std::shared_ptr<FakeHandle> handle(uint64_t serial, const std::string& type = "dataplane", const std::string& id = "p1",
                                   SysTime connected = T0, SysTime seen = T0) {
  return std::make_shared<FakeHandle>(serial, type, id, connected, seen);
}

struct Events {
  std::mutex mu;
  std::vector<RegistryEvent> list;
  void attach(cg::session::SessionRegistry& r) {
    r.subscribe([this](const RegistryEvent& e) {
      std::lock_guard lk(mu);
      list.push_back(e);
    });
  }
};

using Keys = std::set<std::string>;

}  // namespace

TEST_CASE("add and remove happen exactly once", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  Events ev;
  ev.attach(*reg);
  auto h = handle(1);
  reg->add(h, {"/cdp", "ns/dp"});
  CHECK(reg->size() == 1);
  REQUIRE(ev.list.size() == 1);
  CHECK(ev.list[0].type == RegistryEvent::Type::connected);
  CHECK(ev.list[0].plane_type == "dataplane");
  CHECK(ev.list[0].plane_id == "p1");
  CHECK(ev.list[0].connection_id == "conn-1");
  CHECK(ev.list[0].crs == Keys{"/cdp", "ns/dp"});

  CHECK(reg->remove(*h));
  CHECK(reg->size() == 0);
  CHECK_FALSE(reg->remove(*h));  // second removal is a no-op
  REQUIRE(ev.list.size() == 2);
  CHECK(ev.list[1].type == RegistryEvent::Type::disconnected);
  CHECK(ev.list[1].crs == Keys{"/cdp", "ns/dp"});

  // Removing a handle that was never added.
  auto stranger = handle(99);
  CHECK_FALSE(reg->remove(*stranger));
  CHECK(ev.list.size() == 2);
}

TEST_CASE("sessions_of, all and plane_report", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  reg->add(handle(1, "dataplane", "p1", T0 + 10s, T0 + 100s), {"ns/a"});
  reg->add(handle(2, "dataplane", "p1", T0 + 5s, T0 + 50s), {});
  reg->add(handle(3, "dataplane", "p2"), {"ns/a"});
  reg->add(handle(4, "workflowplane", "p1"), {"ns/a"});
  CHECK(reg->size() == 4);
  CHECK(reg->all().size() == 4);
  auto p1 = reg->sessions_of("dataplane", "p1");
  REQUIRE(p1.size() == 2);
  std::set<uint64_t> serials;
  for (const auto& v : p1) serials.insert(v.handle->serial());
  CHECK(serials == std::set<uint64_t>{1, 2});
  CHECK(reg->sessions_of("observabilityplane", "p1").empty());
  CHECK(reg->plane_session_count("dataplane", "p1") == 2);
  CHECK(reg->plane_session_count("dataplane", "p2") == 1);
  CHECK(reg->plane_session_count("observabilityplane", "p1") == 0);

  // Plane-level report: every session of type/id, authorized or not.
  auto pr = reg->plane_report("dataplane", "p1");
  CHECK(pr.connected_agents == 2);
  CHECK(pr.last_seen == T0 + 100s);
  CHECK(pr.earliest_connected == T0 + 5s);
  CHECK(reg->plane_report("dataplane", "nope").connected_agents == 0);
}

TEST_CASE("report() is per plane type and CR key", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  auto a = handle(1, "workflowplane", "p1", T0 + 20s, T0 + 200s);
  auto b = handle(2, "workflowplane", "p1", T0 + 10s, T0 + 150s);
  auto c = handle(3, "workflowplane", "p2", T0 + 1s, T0 + 300s);
  reg->add(a, {"/shared", "team-a/wp"});
  reg->add(b, {"team-a/wp"});
  reg->add(c, {"/shared"});

  auto shared = reg->report("workflowplane", "/shared");
  CHECK(shared.connected_agents == 2);  // a (p1) and c (p2) are both authorized for /shared
  CHECK(shared.last_seen == T0 + 300s);
  CHECK(shared.earliest_connected == T0 + 1s);
  CHECK(shared.last_rise.has_value());
  CHECK_FALSE(shared.last_zero.has_value());

  auto team = reg->report("workflowplane", "team-a/wp");
  CHECK(team.connected_agents == 2);
  CHECK(team.last_seen == T0 + 200s);
  CHECK(team.earliest_connected == T0 + 10s);

  // The plane type is part of the key.
  auto other_type = reg->report("dataplane", "/shared");
  CHECK(other_type.connected_agents == 0);
  CHECK_FALSE(other_type.last_rise.has_value());
  CHECK_FALSE(other_type.last_seen.has_value());

  CHECK(reg->report("workflowplane", "unknown/cr").connected_agents == 0);

  reg->remove(*a);
  CHECK(reg->report("workflowplane", "/shared").connected_agents == 1);
  CHECK(reg->report("workflowplane", "team-a/wp").connected_agents == 1);
  CHECK(reg->report("workflowplane", "team-a/wp").earliest_connected == T0 + 10s);
  // The last frame heard for the CR stays the latest, even from a session that left (the CRD's
  // lastHeartbeatTime: when the control plane last received any communication from an agent).
  CHECK(reg->report("workflowplane", "team-a/wp").last_seen == T0 + 200s);
}

TEST_CASE("report() is kept incrementally: heard() raises last_seen of the session's CRs only", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  auto a = handle(1, "dataplane", "p1", T0 + 1s, T0 + 1s);
  auto b = handle(2, "dataplane", "p1", T0 + 2s, T0 + 2s);
  reg->add(a, {"ns/x", "ns/y"});
  reg->add(b, {"ns/y"});
  CHECK(reg->report("dataplane", "ns/x").last_seen == T0 + 1s);
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 2s);

  reg->heard(*a, T0 + 30s);
  CHECK(reg->report("dataplane", "ns/x").last_seen == T0 + 30s);
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 30s);
  reg->heard(*b, T0 + 20s);  // older than what ns/y has: no change
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 30s);
  reg->heard(*b, T0 + 40s);
  CHECK(reg->report("dataplane", "ns/x").last_seen == T0 + 30s);  // b is not authorized for ns/x
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 40s);

  // A revoked CR no longer hears the session; a closing session is heard by none.
  reg->set_authorized(*a, {"ns/y"});
  CHECK(reg->report("dataplane", "ns/x").connected_agents == 0);
  CHECK_FALSE(reg->report("dataplane", "ns/x").last_seen.has_value());
  reg->heard(*a, T0 + 50s);
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 50s);
  reg->begin_close(*b, cg::session::CloseCause::agent_closed);
  reg->heard(*b, T0 + 60s);
  CHECK(reg->report("dataplane", "ns/y").last_seen == T0 + 50s);
  CHECK(reg->report("dataplane", "ns/y").connected_agents == 1);
  CHECK(reg->report("dataplane", "ns/y").earliest_connected == T0 + 1s);

  // Granted again: counted, with its connectedAt, from now on.
  reg->set_authorized(*a, {"ns/x", "ns/y"});
  auto x = reg->report("dataplane", "ns/x");
  CHECK(x.connected_agents == 1);
  CHECK(x.earliest_connected == T0 + 1s);
  CHECK(x.last_seen == T0 + 30s);  // what ns/x heard before, and a's own last_seen (T0 + 1s) is older
  // A stranger is heard by nobody.
  auto stranger = handle(9);
  reg->heard(*stranger, T0 + 99s);
  CHECK(reg->report("dataplane", "ns/x").last_seen == T0 + 30s);
}

TEST_CASE("last_rise and last_zero follow 0→1 and 1→0 transitions only", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  const std::string key = "ns/dp";
  auto h1 = handle(1);
  auto h2 = handle(2);

  CHECK_FALSE(reg->report("dataplane", key).last_rise.has_value());

  reg->add(h1, {key});
  auto r1 = reg->report("dataplane", key);
  REQUIRE(r1.last_rise.has_value());
  CHECK_FALSE(r1.last_zero.has_value());
  const SysTime rise1 = *r1.last_rise;

  // 1 → 2: no new rise.
  reg->add(h2, {key});
  CHECK(reg->report("dataplane", key).last_rise == rise1);
  // 2 → 1: no zero.
  reg->remove(*h1);
  auto r2 = reg->report("dataplane", key);
  CHECK(r2.connected_agents == 1);
  CHECK(r2.last_rise == rise1);
  CHECK_FALSE(r2.last_zero.has_value());

  // 1 → 0: zero stamped, rise kept.
  reg->remove(*h2);
  auto r3 = reg->report("dataplane", key);
  CHECK(r3.connected_agents == 0);
  CHECK(r3.last_rise == rise1);
  REQUIRE(r3.last_zero.has_value());
  CHECK(*r3.last_zero >= rise1);
  CHECK_FALSE(r3.last_seen.has_value());
  CHECK_FALSE(r3.earliest_connected.has_value());
  const SysTime zero1 = *r3.last_zero;

  // 0 → 1 again: a new rise, the zero is remembered (a disconnect+reconnect between two writes).
  auto h3 = handle(3);
  reg->add(h3, {key});
  auto r4 = reg->report("dataplane", key);
  CHECK(r4.connected_agents == 1);
  REQUIRE(r4.last_rise.has_value());
  CHECK(*r4.last_rise >= zero1);
  CHECK(r4.last_zero == zero1);
}

TEST_CASE("set_authorized returns granted and revoked keys", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  Events ev;
  ev.attach(*reg);
  auto h = handle(1, "dataplane", "p1");
  reg->add(h, {"ns/a", "ns/b"});
  REQUIRE(ev.list.size() == 1);

  auto [granted, revoked] = reg->set_authorized(*h, {"ns/b", "ns/c"});
  CHECK(granted == Keys{"ns/c"});
  CHECK(revoked == Keys{"ns/a"});
  REQUIRE(ev.list.size() == 2);
  CHECK(ev.list[1].type == RegistryEvent::Type::authorization_changed);
  CHECK(ev.list[1].crs == Keys{"ns/a", "ns/c"});
  CHECK(ev.list[1].connection_id == "conn-1");

  CHECK(reg->report("dataplane", "ns/a").connected_agents == 0);
  CHECK(reg->report("dataplane", "ns/a").last_zero.has_value());
  CHECK(reg->report("dataplane", "ns/b").connected_agents == 1);
  CHECK(reg->report("dataplane", "ns/c").connected_agents == 1);
  CHECK(reg->report("dataplane", "ns/c").last_rise.has_value());
  REQUIRE(reg->sessions_of("dataplane", "p1").size() == 1);
  CHECK(reg->sessions_of("dataplane", "p1")[0].authorized == Keys{"ns/b", "ns/c"});

  SECTION("the same set again changes nothing") {
    auto [g2, r2] = reg->set_authorized(*h, {"ns/b", "ns/c"});
    CHECK(g2.empty());
    CHECK(r2.empty());
    CHECK(ev.list.size() == 2);
  }
  SECTION("revoking everything keeps the session but authorizes nothing") {
    auto [g2, r2] = reg->set_authorized(*h, {});
    CHECK(g2.empty());
    CHECK(r2 == Keys{"ns/b", "ns/c"});
    CHECK(reg->size() == 1);
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/b", miss) == nullptr);
    // A session left without a CR is closed right after (authorizer): it is not a plane session
    // for the 403-vs-502 decision (upstream has already dropped it: 502).
    CHECK(miss == PickMiss::no_agent);
    // Removing it afterwards reports no CRs.
    CHECK(reg->remove(*h));
    CHECK(ev.list.back().type == RegistryEvent::Type::disconnected);
    CHECK(ev.list.back().crs.empty());
  }
  SECTION("unknown handle") {
    auto stranger = handle(7);
    auto [g2, r2] = reg->set_authorized(*stranger, {"ns/a"});
    CHECK(g2.empty());
    CHECK(r2.empty());
    CHECK(reg->report("dataplane", "ns/a").connected_agents == 0);
  }
}

TEST_CASE("pick() round-robins across authorized sessions", "[session][registry]") {
  auto reg = cg::session::make_local_registry();
  std::vector<std::shared_ptr<FakeHandle>> hs{handle(1), handle(2), handle(3)};
  for (auto& h : hs) reg->add(h, {"ns/dp"});
  auto unauthorized = handle(4);
  reg->add(unauthorized, {"ns/other"});

  std::map<uint64_t, int> counts;
  std::vector<uint64_t> order;
  for (int i = 0; i < 9; ++i) {
    PickMiss miss{};
    auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
    REQUIRE(p != nullptr);
    CHECK(miss == PickMiss::none);
    counts[p->serial()]++;
    order.push_back(p->serial());
  }
  CHECK(counts == std::map<uint64_t, int>{{1, 3}, {2, 3}, {3, 3}});
  // Each window of three consecutive picks visits every session once.
  for (size_t i = 0; i + 3 <= order.size(); i += 3)
    CHECK(std::set<uint64_t>(order.begin() + i, order.begin() + i + 3).size() == 3);

  SECTION("closing sessions are never picked") {
    hs[1]->set_closing(true);
    for (int i = 0; i < 10; ++i) {
      PickMiss miss{};
      auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
      REQUIRE(p != nullptr);
      CHECK(p->serial() != 2);
    }
    hs[0]->close(1001, "going away");
    for (int i = 0; i < 5; ++i) {
      PickMiss miss{};
      auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
      REQUIRE(p != nullptr);
      CHECK(p->serial() == 3);
    }
    hs[2]->set_closing(true);
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss) == nullptr);
    CHECK(miss == PickMiss::not_authorized);  // session 4 is live (authorized for another CR): 403
    unauthorized->set_closing(true);
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss) == nullptr);
    CHECK(miss == PickMiss::no_agent);  // every session of the plane is closing: 502, as upstream
  }
  SECTION("sessions that got GOAWAY are never picked: with only those the agent is moving, not forbidden") {
    hs[0]->set_draining();
    for (int i = 0; i < 6; ++i) {
      PickMiss miss{};
      auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
      REQUIRE(p != nullptr);
      CHECK(p->serial() != 1);
    }
    hs[1]->set_draining();
    hs[2]->set_draining();
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss) == nullptr);
    // Session 4 is live but authorized for another CR: still not a 403, the CR's agent is moving.
    CHECK(miss == PickMiss::moving);
    CHECK(reg->pick("dataplane", "p1", "ns/other", miss) == unauthorized);
    CHECK(miss == PickMiss::none);
  }
  SECTION("a capability asked for: authorized sessions without it are not_capable") {
    auto capable = handle(6);
    capable->set_capabilities({"stream"});
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss, "stream") == nullptr);
    CHECK(miss == PickMiss::not_capable);
    CHECK(reg->pick("dataplane", "p1", "ns/nobody", miss, "stream") == nullptr);
    CHECK(miss == PickMiss::not_authorized);
    reg->add(capable, {"ns/dp"});
    for (int i = 0; i < 3; ++i) {
      CHECK(reg->pick("dataplane", "p1", "ns/dp", miss, "stream") == capable);
      CHECK(miss == PickMiss::none);
    }
    capable->set_draining();
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss, "stream") == nullptr);
    CHECK(miss == PickMiss::moving);
  }
  SECTION("no session authorized for the CR: 403 case") {
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/nobody", miss) == nullptr);
    CHECK(miss == PickMiss::not_authorized);
  }
  SECTION("no session for the plane at all: 502 case") {
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p9", "ns/dp", miss) == nullptr);
    CHECK(miss == PickMiss::no_agent);
    CHECK(reg->pick("workflowplane", "p1", "ns/dp", miss) == nullptr);
    CHECK(miss == PickMiss::no_agent);
  }
  SECTION("a session authorized for the key on another plane is not picked") {
    reg->add(handle(5, "dataplane", "p2"), {"ns/dp"});
    for (int i = 0; i < 6; ++i) {
      PickMiss miss{};
      auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
      REQUIRE(p != nullptr);
      CHECK(p->serial() != 5);
    }
  }
  SECTION("removed sessions are not picked") {
    reg->remove(*hs[0]);
    reg->remove(*hs[2]);
    for (int i = 0; i < 4; ++i) {
      PickMiss miss{};
      auto p = reg->pick("dataplane", "p1", "ns/dp", miss);
      REQUIRE(p != nullptr);
      CHECK(p->serial() == 2);
    }
  }
}

TEST_CASE("begin_close: a closing session leaves routing, reports and status at once", "[session][registry][close]") {
  auto reg = cg::session::make_local_registry();
  Events ev;
  ev.attach(*reg);
  auto old_session = handle(1, "dataplane", "p1", T0 + 1s, T0 + 10s);
  reg->add(old_session, {"ns/dp", "/cdp"});
  const SysTime rise = *reg->report("dataplane", "ns/dp").last_rise;

  REQUIRE(reg->begin_close(*old_session, cg::session::CloseCause::revoked));
  // The event that makes status write it fired now, with the CRs and the cause.
  REQUIRE(ev.list.size() == 2);
  CHECK(ev.list[1].type == RegistryEvent::Type::disconnected);
  CHECK(ev.list[1].crs == Keys{"ns/dp", "/cdp"});
  REQUIRE(ev.list[1].cause.has_value());
  CHECK(*ev.list[1].cause == cg::session::CloseCause::revoked);
  // Not counted anywhere: reports, plane report, sessions_of, all, pick (502, not 403).
  auto r = reg->report("dataplane", "ns/dp");
  CHECK(r.connected_agents == 0);
  REQUIRE(r.last_zero.has_value());
  CHECK(*r.last_zero >= rise);
  CHECK(r.last_rise == rise);
  CHECK(reg->plane_report("dataplane", "p1").connected_agents == 0);
  CHECK(reg->sessions_of("dataplane", "p1").empty());
  CHECK(reg->plane_session_count("dataplane", "p1") == 0);
  CHECK(reg->all().empty());
  PickMiss miss{};
  CHECK(reg->pick("dataplane", "p1", "ns/dp", miss) == nullptr);
  CHECK(miss == PickMiss::no_agent);
  // Its socket is not closed yet: it still counts in size() (shutdown waits for it).
  CHECK(reg->size() == 1);

  SECTION("it happens once; re-authorization cannot bring it back") {
    CHECK_FALSE(reg->begin_close(*old_session, cg::session::CloseCause::connection_lost));
    auto [granted, revoked] = reg->set_authorized(*old_session, {"ns/dp", "ns/more"});
    CHECK(granted.empty());
    CHECK(revoked.empty());
    CHECK(reg->report("dataplane", "ns/dp").connected_agents == 0);
    CHECK(ev.list.size() == 2);
  }
  SECTION("the agent's reconnect while the old socket lingers counts one agent, not two (HA)") {
    auto fresh = handle(2, "dataplane", "p1", T0 + 20s, T0 + 20s);
    reg->add(fresh, {"ns/dp", "/cdp"});
    auto r2 = reg->report("dataplane", "ns/dp");
    CHECK(r2.connected_agents == 1);
    CHECK(r2.earliest_connected == T0 + 20s);
    CHECK(reg->plane_report("dataplane", "p1").connected_agents == 1);
    PickMiss miss{};
    CHECK(reg->pick("dataplane", "p1", "ns/dp", miss) == fresh);
    CHECK(reg->size() == 2);
  }
  SECTION("remove() then forgets it without a second event") {
    CHECK(reg->remove(*old_session));
    CHECK(reg->size() == 0);
    CHECK(ev.list.size() == 2);
    CHECK_FALSE(reg->remove(*old_session));
  }
  SECTION("begin_close of a handle never added does nothing") {
    auto stranger = handle(9);
    CHECK_FALSE(reg->begin_close(*stranger, cg::session::CloseCause::agent_closed));
    CHECK(ev.list.size() == 2);
  }
}

TEST_CASE("remove() of a live session closes it first: one event, with connection_lost", "[session][registry][close]") {
  auto reg = cg::session::make_local_registry();
  Events ev;
  ev.attach(*reg);
  auto h = handle(1);
  reg->add(h, {"ns/dp"});
  CHECK(reg->remove(*h));
  REQUIRE(ev.list.size() == 2);
  CHECK(ev.list[1].type == RegistryEvent::Type::disconnected);
  REQUIRE(ev.list[1].cause.has_value());
  CHECK(*ev.list[1].cause == cg::session::CloseCause::connection_lost);
  CHECK(reg->size() == 0);
  CHECK(reg->report("dataplane", "ns/dp").last_zero.has_value());
}

TEST_CASE("close causes: names for logs, the documented labels for the metric", "[session][registry][close]") {
  using cg::session::CloseCause;
  using cg::session::metric_label;
  using cg::session::to_string;
  CHECK(to_string(CloseCause::revoked) == "revoked");
  CHECK(to_string(CloseCause::certificate_expired) == "certificate_expired");
  CHECK(to_string(CloseCause::shutdown) == "shutdown");
  CHECK(to_string(CloseCause::agent_closed) == "agent_closed");
  // sessions_closed_total{reason} keeps its documented values (docs/operations.md).
  const std::set<std::string> documented{"heartbeat_timeout", "agent_closed", "gateway_closed",
                                         "message_too_big",   "write_failed", "connection_lost"};
  for (auto c : {CloseCause::agent_closed, CloseCause::connection_lost, CloseCause::heartbeat_timeout, CloseCause::revoked,
                 CloseCause::certificate_expired, CloseCause::shutdown, CloseCause::message_too_big, CloseCause::write_failed,
                 CloseCause::gateway_closed})
    CHECK(documented.count(std::string(metric_label(c))) == 1);
  CHECK(metric_label(CloseCause::revoked) == "gateway_closed");
  CHECK(metric_label(CloseCause::shutdown) == "gateway_closed");
  CHECK(metric_label(CloseCause::heartbeat_timeout) == "heartbeat_timeout");
  CHECK(metric_label(CloseCause::write_failed) == "write_failed");
}

TEST_CASE("SessionReport += sums counts and merges times", "[session][registry]") {
  SessionReport a;
  a.connected_agents = 2;
  a.last_seen = T0 + 10s;
  a.earliest_connected = T0 + 5s;
  a.last_rise = T0 + 5s;
  a.last_zero = T0 + 1s;
  SessionReport b;
  b.connected_agents = 3;
  b.last_seen = T0 + 20s;
  b.earliest_connected = T0 + 2s;
  b.last_rise = T0 + 3s;
  b.last_zero = T0 + 4s;

  SessionReport sum = a;
  sum += b;
  CHECK(sum.connected_agents == 5);
  CHECK(sum.last_seen == T0 + 20s);  // max
  CHECK(sum.earliest_connected == T0 + 2s);  // min
  CHECK(sum.last_rise == T0 + 5s);  // max
  CHECK(sum.last_zero == T0 + 4s);  // max

  SECTION("commutative") {
    SessionReport other = b;
    other += a;
    CHECK(other.connected_agents == sum.connected_agents);
    CHECK(other.last_seen == sum.last_seen);
    CHECK(other.earliest_connected == sum.earliest_connected);
    CHECK(other.last_rise == sum.last_rise);
    CHECK(other.last_zero == sum.last_zero);
  }
  SECTION("empty reports are neutral") {
    SessionReport empty;
    SessionReport x = a;
    x += empty;
    CHECK(x.connected_agents == 2);
    CHECK(x.last_seen == a.last_seen);
    CHECK(x.earliest_connected == a.earliest_connected);
    CHECK(x.last_rise == a.last_rise);
    CHECK(x.last_zero == a.last_zero);

    SessionReport y;
    y += a;
    CHECK(y.connected_agents == 2);
    CHECK(y.last_seen == a.last_seen);
    CHECK(y.earliest_connected == a.earliest_connected);
    CHECK(y.last_rise == a.last_rise);
    CHECK(y.last_zero == a.last_zero);
  }
  SECTION("returns itself for chaining") {
    SessionReport c;
    (c += a) += b;
    CHECK(c.connected_agents == 5);
  }
}
