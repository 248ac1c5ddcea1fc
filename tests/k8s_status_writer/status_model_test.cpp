// compute_status: status.agentConnection and the AgentConnected/Ready conditions (upstream §5.3,
// with event times from the session report instead of poll times), JSON round trip.
#include <catch2/catch.hpp>

#include <chrono>
#include <nlohmann/json.hpp>

#include "common/time.hpp"
#include "k8s_status_writer/status_model.hpp"

using Catch::Matchers::Contains;
using cg::SysTime;
using cg::session::SessionReport;
using cg::status::compute_status;
using cg::status::Condition;
using cg::status::only_heartbeat_differs;
using cg::status::PlaneStatus;
using cg::status::SpecFacts;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace Catch {
template <>
struct StringMaker<PlaneStatus> {
  static std::string convert(const PlaneStatus& s) { return s.to_json().dump(); }
};
}  // namespace Catch

namespace {

SysTime at(const char* rfc3339) {
  auto t = cg::parse_rfc3339(rfc3339);
  REQUIRE(t.has_value());
  return *t;
}

// A fixed base time with a sub-second part, so that truncation to seconds is visible.
const SysTime T0 = cg::parse_rfc3339("2026-11-25T10:00:00Z").value();

SessionReport report(int agents, std::optional<SysTime> rise = std::nullopt, std::optional<SysTime> zero = std::nullopt,
                     std::optional<SysTime> seen = std::nullopt) {
  SessionReport r;
  r.connected_agents = agents;
  r.last_rise = rise;
  r.last_zero = zero;
  r.last_seen = seen;
  if (agents > 0) r.earliest_connected = rise;
  return r;
}

const Condition* cond(const PlaneStatus& s, const std::string& type) {
  for (const auto& c : s.conditions)
    if (c.type == type) return &c;
  return nullptr;
}

const Condition& must_cond(const PlaneStatus& s, const std::string& type) {
  const Condition* c = cond(s, type);
  INFO("condition " << type);
  REQUIRE(c != nullptr);
  return *c;
}

SysTime secs(SysTime t) { return std::chrono::time_point_cast<std::chrono::seconds>(t); }

}  // namespace

TEST_CASE("connection messages match upstream", "[status]") {
  CHECK(cg::status::connection_message(0) == "No agents connected");
  CHECK(cg::status::connection_message(1) == "1 agent connected");
  CHECK(cg::status::connection_message(2) == "2 agents connected (HA mode)");
  CHECK(cg::status::connection_message(5) == "5 agents connected (HA mode)");
}

TEST_CASE("fresh CR with no agent", "[status]") {
  SpecFacts facts;
  facts.generation = 3;
  auto s = compute_status(PlaneStatus{}, report(0), facts, T0);
  CHECK(s.observed_generation == 3);
  REQUIRE(s.agent.has_value());
  CHECK_FALSE(s.agent->connected);
  CHECK(s.agent->connected_agents == 0);
  CHECK(s.agent->message == "No agents connected");
  CHECK_FALSE(s.agent->last_connected.has_value());
  CHECK_FALSE(s.agent->last_disconnected.has_value());  // only on true→false
  CHECK_FALSE(s.agent->last_heartbeat.has_value());

  const auto& ac = must_cond(s, "AgentConnected");
  CHECK(ac.status == "False");
  CHECK(ac.reason == "NoAgentConnected");
  CHECK(ac.message == "No agents connected");
  CHECK(ac.observed_generation == 3);
  CHECK(ac.last_transition == T0);

  const auto& ready = must_cond(s, "Ready");
  CHECK(ready.status == "False");
  CHECK(ready.reason == "NoAgentConnected");
  CHECK(ready.observed_generation == 3);
}

TEST_CASE("one agent connects: lastConnectedTime is the rise event, not now", "[status]") {
  const SysTime rise = T0 + 1500ms;
  const SysTime seen = T0 + 7s + 900ms;
  const SysTime now = T0 + 60s;
  auto s = compute_status(PlaneStatus{}, report(1, rise, std::nullopt, seen), SpecFacts{}, now);
  REQUIRE(s.agent.has_value());
  CHECK(s.agent->connected);
  CHECK(s.agent->connected_agents == 1);
  CHECK(s.agent->message == "1 agent connected");
  CHECK(s.agent->last_connected == secs(rise));
  CHECK(s.agent->last_connected == T0 + 1s);
  CHECK(s.agent->last_heartbeat == T0 + 7s);  // seconds precision
  CHECK_FALSE(s.agent->last_disconnected.has_value());

  const auto& ac = must_cond(s, "AgentConnected");
  CHECK(ac.status == "True");
  CHECK(ac.reason == "AgentConnected");
  CHECK(ac.message == "1 agent connected");
  const auto& ready = must_cond(s, "Ready");
  CHECK(ready.status == "True");
  CHECK(ready.reason == "Ready");
  CHECK(ready.last_transition == now);

  auto j = s.to_json();
  CHECK(j["agentConnection"]["lastHeartbeatTime"] == "2026-11-25T10:00:07Z");
  CHECK(j["agentConnection"]["lastConnectedTime"] == "2026-11-25T10:00:01Z");
  CHECK_FALSE(j["agentConnection"].contains("lastDisconnectedTime"));
}

TEST_CASE("two agents: HA message, lastConnectedTime kept when the second joins", "[status]") {
  const SysTime rise = T0 + 5s;
  auto one = compute_status(PlaneStatus{}, report(1, rise, std::nullopt, T0 + 6s), SpecFacts{}, T0 + 10s);
  auto two = compute_status(one, report(2, rise, std::nullopt, T0 + 30s), SpecFacts{}, T0 + 40s);
  REQUIRE(two.agent.has_value());
  CHECK(two.agent->connected);
  CHECK(two.agent->connected_agents == 2);
  CHECK(two.agent->message == "2 agents connected (HA mode)");
  CHECK(two.agent->last_connected == rise);
  CHECK(two.agent->last_heartbeat == T0 + 30s);
  CHECK_FALSE(two.agent->last_disconnected.has_value());
  CHECK(must_cond(two, "AgentConnected").message == "2 agents connected (HA mode)");
  CHECK(must_cond(two, "Ready").message == "2 agents connected (HA mode)");
  // Status unchanged (True → True): the transition time stays.
  CHECK(must_cond(two, "AgentConnected").last_transition == T0 + 10s);
  CHECK(must_cond(two, "Ready").last_transition == T0 + 10s);

  SECTION("one of the two leaves: still connected, no disconnect stamp") {
    auto back = compute_status(two, report(1, rise, std::nullopt, T0 + 50s), SpecFacts{}, T0 + 55s);
    CHECK(back.agent->connected);
    CHECK(back.agent->message == "1 agent connected");
    CHECK_FALSE(back.agent->last_disconnected.has_value());
    CHECK(back.agent->last_connected == rise);
  }
}

TEST_CASE("the last agent leaves: lastDisconnectedTime is the zero event", "[status]") {
  const SysTime rise = T0 + 5s;
  const SysTime zero = T0 + 100s + 250ms;
  auto up = compute_status(PlaneStatus{}, report(1, rise, std::nullopt, T0 + 90s), SpecFacts{}, T0 + 10s);
  auto down = compute_status(up, report(0, rise, zero, std::nullopt), SpecFacts{}, T0 + 200s);
  REQUIRE(down.agent.has_value());
  CHECK_FALSE(down.agent->connected);
  CHECK(down.agent->connected_agents == 0);
  CHECK(down.agent->message == "No agents connected");
  CHECK(down.agent->last_disconnected == T0 + 100s);
  // Kept from before.
  CHECK(down.agent->last_connected == rise);
  CHECK(down.agent->last_heartbeat == T0 + 90s);

  const auto& ac = must_cond(down, "AgentConnected");
  CHECK(ac.status == "False");
  CHECK(ac.reason == "NoAgentConnected");
  CHECK(ac.last_transition == T0 + 200s);
  CHECK(must_cond(down, "Ready").reason == "NoAgentConnected");

  SECTION("false → false does not restamp lastDisconnectedTime") {
    auto again = compute_status(down, report(0, rise, T0 + 150s, std::nullopt), SpecFacts{}, T0 + 300s);
    CHECK(again.agent->last_disconnected == T0 + 100s);
    CHECK(again == down);
  }
  SECTION("reconnecting later stamps a new lastConnectedTime") {
    const SysTime rise2 = T0 + 400s;
    auto up2 = compute_status(down, report(1, rise2, zero, T0 + 401s), SpecFacts{}, T0 + 500s);
    CHECK(up2.agent->connected);
    CHECK(up2.agent->last_connected == rise2);
    CHECK(up2.agent->last_disconnected == T0 + 100s);
    CHECK(up2.agent->last_heartbeat == T0 + 401s);
    CHECK(must_cond(up2, "AgentConnected").last_transition == T0 + 500s);
  }
  SECTION("no zero event in the report: now is used") {
    auto d2 = compute_status(up, report(0), SpecFacts{}, T0 + 250s + 700ms);
    CHECK(d2.agent->last_disconnected == T0 + 250s);
  }
}

TEST_CASE("a disconnect and reconnect between two writes stamps both", "[status]") {
  const SysTime rise1 = T0 + 5s;
  auto up = compute_status(PlaneStatus{}, report(1, rise1, std::nullopt, T0 + 6s), SpecFacts{}, T0 + 10s);
  REQUIRE(up.agent->last_connected == rise1);
  REQUIRE_FALSE(up.agent->last_disconnected.has_value());

  const SysTime zero = T0 + 20s;
  const SysTime rise2 = T0 + 22s;
  auto flap = compute_status(up, report(1, rise2, zero, T0 + 23s), SpecFacts{}, T0 + 30s);
  CHECK(flap.agent->connected);
  CHECK(flap.agent->last_disconnected == zero);
  CHECK(flap.agent->last_connected == rise2);
  CHECK(flap.agent->last_heartbeat == T0 + 23s);
  // The conditions did not change status.
  CHECK(must_cond(flap, "AgentConnected").last_transition == T0 + 10s);

  SECTION("writing again with the same report changes nothing") {
    auto again = compute_status(flap, report(1, rise2, zero, T0 + 23s), SpecFacts{}, T0 + 40s);
    CHECK(again == flap);
  }
  SECTION("an old zero event (before the current connection) is not restamped") {
    // The report still remembers an earlier flap that was already recorded.
    auto later = compute_status(flap, report(2, rise2, zero, T0 + 60s), SpecFacts{}, T0 + 70s);
    CHECK(later.agent->last_disconnected == zero);
    CHECK(later.agent->last_connected == rise2);
  }
}

TEST_CASE("Ready reasons in priority order", "[status]") {
  SpecFacts all;
  all.spec_problems = {"spec.planeID 'X' is invalid", "second problem"};
  all.ca_error = "secret ns/ca not found";
  all.observability_problem = "ClusterObservabilityPlane 'obs' not found";

  SECTION("InvalidSpec first") {
    auto s = compute_status(PlaneStatus{}, report(1, T0, std::nullopt, T0), all, T0);
    const auto& r = must_cond(s, "Ready");
    CHECK(r.status == "False");
    CHECK(r.reason == "InvalidSpec");
    CHECK_THAT(r.message, Contains("spec.planeID 'X' is invalid"));
    CHECK_THAT(r.message, Contains("second problem"));
    // The connection itself is still reported.
    CHECK(must_cond(s, "AgentConnected").status == "True");
    CHECK(s.agent->connected);
  }
  SECTION("then ClientCAError") {
    all.spec_problems.clear();
    auto s = compute_status(PlaneStatus{}, report(1, T0, std::nullopt, T0), all, T0);
    const auto& r = must_cond(s, "Ready");
    CHECK(r.status == "False");
    CHECK(r.reason == "ClientCAError");
    CHECK_THAT(r.message, Contains("secret ns/ca not found"));
  }
  SECTION("then ObservabilityPlaneNotFound") {
    all.spec_problems.clear();
    all.ca_error.clear();
    auto s = compute_status(PlaneStatus{}, report(1, T0, std::nullopt, T0), all, T0);
    const auto& r = must_cond(s, "Ready");
    CHECK(r.status == "False");
    CHECK(r.reason == "ObservabilityPlaneNotFound");
    CHECK(r.message == "ClusterObservabilityPlane 'obs' not found");
  }
  SECTION("then NoAgentConnected") {
    auto s = compute_status(PlaneStatus{}, report(0), SpecFacts{}, T0);
    const auto& r = must_cond(s, "Ready");
    CHECK(r.status == "False");
    CHECK(r.reason == "NoAgentConnected");
  }
  SECTION("spec problems win even without an agent") {
    auto s = compute_status(PlaneStatus{}, report(0), all, T0);
    CHECK(must_cond(s, "Ready").reason == "InvalidSpec");
  }
  SECTION("otherwise Ready True") {
    auto s = compute_status(PlaneStatus{}, report(1, T0, std::nullopt, T0), SpecFacts{}, T0);
    const auto& r = must_cond(s, "Ready");
    CHECK(r.status == "True");
    CHECK(r.reason == "Ready");
  }
}

TEST_CASE("lastTransitionTime changes only with the condition status", "[status]") {
  SpecFacts bad_ca;
  bad_ca.ca_error = "boom";
  auto s1 = compute_status(PlaneStatus{}, report(0), SpecFacts{}, T0);
  REQUIRE(must_cond(s1, "Ready").last_transition == T0);

  // False/NoAgentConnected → False/ClientCAError: status unchanged, reason and message change.
  auto s2 = compute_status(s1, report(0), bad_ca, T0 + 60s);
  CHECK(must_cond(s2, "Ready").reason == "ClientCAError");
  CHECK(must_cond(s2, "Ready").last_transition == T0);

  // False → True.
  auto s3 = compute_status(s2, report(1, T0 + 100s, std::nullopt, T0 + 101s), SpecFacts{}, T0 + 120s + 400ms);
  CHECK(must_cond(s3, "Ready").status == "True");
  CHECK(must_cond(s3, "Ready").last_transition == T0 + 120s);  // truncated to seconds
  CHECK(must_cond(s3, "AgentConnected").last_transition == T0 + 120s);

  // True → True with a new heartbeat.
  auto s4 = compute_status(s3, report(1, T0 + 100s, std::nullopt, T0 + 150s), SpecFacts{}, T0 + 180s);
  CHECK(must_cond(s4, "Ready").last_transition == T0 + 120s);

  // The order of conditions is stable: updated in place, not appended.
  REQUIRE(s4.conditions.size() == 2);
  CHECK(s4.conditions[0].type == "AgentConnected");
  CHECK(s4.conditions[1].type == "Ready");
}

TEST_CASE("foreign conditions are preserved with their extra fields", "[status]") {
  json prev_json = {{"observedGeneration", 2},
                    {"conditions",
                     {{{"type", "Created"},
                       {"status", "True"},
                       {"reason", "ClusterWorkflowPlaneCreated"},
                       {"message", "Workflowplane is created"},
                       {"lastTransitionTime", "2026-01-02T03:04:05Z"},
                       {"observedGeneration", 1},
                       {"severity", "Info"},
                       {"custom", {{"nested", true}}}},
                      {{"type", "Ready"},
                       {"status", "False"},
                       {"reason", "Old"},
                       {"message", "old"},
                       {"lastTransitionTime", "2026-01-01T00:00:00Z"},
                       {"vendorField", "kept"}}}}};
  auto prev = PlaneStatus::from_json(prev_json);
  REQUIRE(prev.conditions.size() == 2);
  SpecFacts facts;
  facts.generation = 4;
  auto s = compute_status(prev, report(0), facts, T0);
  CHECK(s.observed_generation == 4);
  REQUIRE(s.conditions.size() == 3);

  const auto& created = must_cond(s, "Created");
  CHECK(created.status == "True");
  CHECK(created.reason == "ClusterWorkflowPlaneCreated");
  CHECK(created.message == "Workflowplane is created");
  CHECK(created.last_transition == at("2026-01-02T03:04:05Z"));
  CHECK(created.observed_generation == 1);
  CHECK(created.extra == json{{"severity", "Info"}, {"custom", {{"nested", true}}}});

  // Ready False → False: transition time kept, extra fields kept.
  const auto& ready = must_cond(s, "Ready");
  CHECK(ready.reason == "NoAgentConnected");
  CHECK(ready.last_transition == at("2026-01-01T00:00:00Z"));
  CHECK(ready.observed_generation == 4);
  CHECK(ready.extra == json{{"vendorField", "kept"}});

  auto j = s.to_json();
  json created_json;
  for (const auto& c : j["conditions"])
    if (c["type"] == "Created") created_json = c;
  CHECK(created_json["severity"] == "Info");
  CHECK(created_json["custom"]["nested"] == true);
  CHECK(created_json["lastTransitionTime"] == "2026-01-02T03:04:05Z");
  CHECK(created_json["observedGeneration"] == 1);
  CHECK(j["observedGeneration"] == 4);
}

namespace {
PlaneStatus round_trip_sample() {
  SpecFacts facts;
  facts.generation = 9;
  auto s = compute_status(PlaneStatus{}, report(2, T0 + 1s, T0 - 50s, T0 + 2s + 300ms), facts, T0 + 3s);
  s.conditions.insert(s.conditions.begin(), Condition{"Created", "True", "Created", "created", T0 - 3600s, 0, {{"x", 1}}});
  return s;
}
}  // namespace

TEST_CASE("to_json / from_json round trip (JSON level)", "[status]") {
  const auto s = round_trip_sample();
  auto j = s.to_json();
  CHECK(j["observedGeneration"] == 9);
  const auto& a = j["agentConnection"];
  CHECK(a["connected"] == true);
  CHECK(a["connectedAgents"] == 2);
  CHECK(a["message"] == "2 agents connected (HA mode)");
  CHECK(a["lastConnectedTime"] == "2026-11-25T10:00:01Z");
  CHECK(a["lastHeartbeatTime"] == "2026-11-25T10:00:02Z");
  CHECK_FALSE(a.contains("lastDisconnectedTime"));
  REQUIRE(j["conditions"].is_array());
  CHECK(j["conditions"].size() == 3);
  for (const auto& c : j["conditions"]) {
    CHECK(c.contains("type"));
    CHECK(c.contains("status"));
    CHECK(c.contains("reason"));
    CHECK(c.contains("message"));
    CHECK(c["lastTransitionTime"].is_string());
  }
  CHECK(j["conditions"][0]["x"] == 1);
  CHECK_FALSE(j["conditions"][0].contains("observedGeneration"));  // 0: omitted
  CHECK(j["conditions"][1]["observedGeneration"] == 9);

  auto back = PlaneStatus::from_json(j);
  // Every modelled field survives.
  CHECK(back.observed_generation == s.observed_generation);
  CHECK(back.agent == s.agent);
  REQUIRE(back.conditions.size() == s.conditions.size());
  for (size_t i = 0; i < s.conditions.size(); ++i) {
    CAPTURE(i);
    CHECK(back.conditions[i].type == s.conditions[i].type);
    CHECK(back.conditions[i].status == s.conditions[i].status);
    CHECK(back.conditions[i].reason == s.conditions[i].reason);
    CHECK(back.conditions[i].message == s.conditions[i].message);
    CHECK(back.conditions[i].last_transition == s.conditions[i].last_transition);
    CHECK(back.conditions[i].observed_generation == s.conditions[i].observed_generation);
  }
  CHECK(back.conditions[0].extra == json{{"x", 1}});
  // JSON → model → JSON is the identity, also through text.
  CHECK(back.to_json() == j);
  CHECK(PlaneStatus::from_json(json::parse(j.dump())).to_json() == j);
  // And a status read back equals itself after another round trip.
  CHECK(PlaneStatus::from_json(back.to_json()) == back);

  SECTION("without agentConnection") {
    PlaneStatus bare;
    bare.observed_generation = 1;
    auto jb = bare.to_json();
    CHECK_FALSE(jb.contains("agentConnection"));
    CHECK(PlaneStatus::from_json(jb) == bare);
  }
}

// Regression: newly added conditions carry an empty object as extra fields, so statuses survive a JSON round trip.
TEST_CASE("from_json(to_json(s)) == s for a freshly computed status", "[status]") {
  const auto s = round_trip_sample();
  for (const auto& c : s.conditions) {
    CAPTURE(c.type);
    CHECK(c.extra.is_object());
  }
  auto back = PlaneStatus::from_json(s.to_json());
  CHECK(back == s);
  CHECK(PlaneStatus::from_json(json::parse(s.to_json().dump())) == s);
}

TEST_CASE("from_json is tolerant of junk", "[status]") {
  CHECK(PlaneStatus::from_json(json()) == PlaneStatus{});
  CHECK(PlaneStatus::from_json(json::array()) == PlaneStatus{});
  json j = {{"observedGeneration", "seven"},
            {"conditions",
             {1, "x", {{"status", "True"}}, {{"type", "Ready"}, {"status", "True"}, {"lastTransitionTime", "not a time"}}}},
            {"agentConnection", {{"connected", true}, {"connectedAgents", "3"}, {"lastConnectedTime", "garbage"}}}};
  auto s = PlaneStatus::from_json(j);
  CHECK(s.observed_generation == 0);
  REQUIRE(s.conditions.size() == 1);
  CHECK(s.conditions[0].type == "Ready");
  CHECK_FALSE(s.conditions[0].last_transition.has_value());
  REQUIRE(s.agent.has_value());
  CHECK(s.agent->connected);
  CHECK(s.agent->connected_agents == 0);
  CHECK_FALSE(s.agent->last_connected.has_value());

  // A status read back with connected:true but a report of zero agents is a true→false transition.
  auto next = compute_status(s, report(0, std::nullopt, T0 + 5s), SpecFacts{}, T0 + 10s);
  CHECK_FALSE(next.agent->connected);
  CHECK(next.agent->last_disconnected == T0 + 5s);
  // A condition without a transition time gets one.
  CHECK(must_cond(next, "Ready").last_transition == T0 + 10s);
}

TEST_CASE("only_heartbeat_differs", "[status]") {
  auto a = compute_status(PlaneStatus{}, report(1, T0, std::nullopt, T0 + 1s), SpecFacts{}, T0 + 2s);
  auto b = compute_status(a, report(1, T0, std::nullopt, T0 + 61s), SpecFacts{}, T0 + 62s);
  REQUIRE(b.agent->last_heartbeat == T0 + 61s);
  CHECK(only_heartbeat_differs(a, b));
  CHECK(only_heartbeat_differs(b, a));
  CHECK_FALSE(only_heartbeat_differs(a, a));  // identical: nothing differs

  auto c = compute_status(a, report(2, T0, std::nullopt, T0 + 61s), SpecFacts{}, T0 + 62s);
  CHECK_FALSE(only_heartbeat_differs(a, c));  // count and message differ too

  auto d = a;
  d.observed_generation += 1;
  CHECK_FALSE(only_heartbeat_differs(a, d));

  auto e = a;
  e.agent->last_heartbeat.reset();
  CHECK(only_heartbeat_differs(a, e));

  auto f = b;
  f.conditions[0].message = "different";
  CHECK_FALSE(only_heartbeat_differs(a, f));
}
