// KubeStatusSink against the fake Kubernetes API server: server-side apply on /status.
#include <catch2/catch.hpp>

#include <future>
#include <string>

#include "k8s_status_writer/kube_sink.hpp"
#include "kube/client.hpp"
#include "tests/support/fake_apiserver.hpp"
#include "tests/support/pki.hpp"

using Catch::Matchers::Contains;
using cg::plane::CrRef;
using cg::plane::Kind;
using cg::status::AgentConnection;
using cg::status::Condition;
using cg::status::KubeStatusSink;
using cg::status::PlaneStatus;
using cg::status::WriteResult;
using cg::testing::FakeApiServer;
using cg::testing::IoRunner;
using json = nlohmann::json;

namespace {

WriteResult write_sync(KubeStatusSink& sink, const CrRef& ref, const PlaneStatus& st) {
  std::promise<WriteResult> p;
  sink.write(ref, st, [&p](WriteResult r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

cg::SysTime at(int64_t unix_seconds) { return cg::SysTime(std::chrono::seconds(unix_seconds)); }

json plane(const std::string& kind, const std::string& ns, const std::string& name) {
  json meta = {{"name", name}};
  if (!ns.empty()) meta["namespace"] = ns;
  return {{"apiVersion", "openchoreo.dev/v1alpha1"},
          {"kind", kind},
          {"metadata", meta},
          {"spec", {{"planeID", name + "-id"}, {"clusterAgent", {{"clientCA", {{"value", "not-a-pem"}}}}}}}};
}

Condition cond(const std::string& type, const std::string& status, const std::string& reason, const std::string& msg, int64_t t,
               int64_t gen = 1) {
  Condition c;
  c.type = type;
  c.status = status;
  c.reason = reason;
  c.message = msg;
  c.last_transition = at(t);
  c.observed_generation = gen;
  return c;
}

PlaneStatus connected_status(const Condition& foreign) {
  PlaneStatus st;
  st.observed_generation = 1;
  AgentConnection a;
  a.connected = true;
  a.connected_agents = 1;
  a.last_connected = at(1767225600);
  a.last_heartbeat = at(1767225630);
  a.message = "1 agent connected";
  st.agent = a;
  // compute_status keeps foreign conditions in the desired status: the sink must not apply them.
  st.conditions = {foreign, cond("AgentConnected", "True", "AgentConnected", "1 agent connected", 1767225600),
                   cond("Ready", "True", "AgentConnected", "Agent connected", 1767225600)};
  return st;
}

const json* find_condition(const json& obj, const std::string& type) {
  for (const auto& c : obj["status"]["conditions"])
    if (c["type"] == type) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("KubeStatusSink writes only the gateway's part of the status", "[kube_sink]") {
  FakeApiServer fake;
  IoRunner io;
  cg::kube::KubeClient client(io.ioc(), fake.kube_config());
  KubeStatusSink sink(client);

  auto [kind, ns, ref] =
      GENERATE(table<std::string, std::string, CrRef>({{"ClusterWorkflowPlane", "", CrRef{Kind::ClusterWorkflowPlane, "", "cwp"}},
                                                       {"DataPlane", "team-a", CrRef{Kind::DataPlane, "team-a", "dp"}}}));
  INFO(kind);
  fake.apply(plane(kind, ns, ref.name), "kubectl");
  // The plane controller's own condition and fields, written by another field manager.
  json created = {{"type", "Created"},
                  {"status", "True"},
                  {"reason", kind + "Created"},
                  {"message", kind + " is created"},
                  {"lastTransitionTime", "2026-01-01T00:00:00Z"}};
  json mine = plane(kind, ns, ref.name);
  mine.erase("spec");
  mine["status"] = {{"observedGeneration", 1}, {"conditions", json::array({created})}};
  fake.apply_status(mine, "controller-manager");
  json before = fake.get("openchoreo.dev/v1alpha1", kind, ns, ref.name);
  REQUIRE(before["metadata"]["generation"] == 1);
  Condition foreign = cg::status::PlaneStatus::from_json(before["status"]).conditions.at(0);

  CHECK(sink.read(ref) == std::nullopt);
  fake.control("DELETE", "requests");
  auto r = write_sync(sink, ref, connected_status(foreign));
  INFO(r.error);
  REQUIRE(r.ok);
  CHECK_FALSE(r.gone);

  json after = fake.get("openchoreo.dev/v1alpha1", kind, ns, ref.name);
  CHECK(after["spec"] == before["spec"]);
  CHECK(after["metadata"]["generation"] == 1);
  CHECK(after["status"]["observedGeneration"] == 1);
  CHECK(after["status"]["agentConnection"]["connected"] == true);
  CHECK(after["status"]["agentConnection"]["connectedAgents"] == 1);
  CHECK(after["status"]["agentConnection"]["message"] == "1 agent connected");
  CHECK(after["status"]["agentConnection"]["lastConnectedTime"] == "2026-01-01T00:00:00Z");
  CHECK(after["status"]["agentConnection"]["lastHeartbeatTime"] == "2026-01-01T00:00:30Z");
  REQUIRE(find_condition(after, "Created"));
  CHECK(*find_condition(after, "Created") == created);
  REQUIRE(find_condition(after, "AgentConnected"));
  CHECK((*find_condition(after, "AgentConnected"))["status"] == "True");
  REQUIRE(find_condition(after, "Ready"));

  // Server-side apply on /status with our field manager, forced.
  auto reqs = fake.requests("method=PATCH&subresource=status");
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0]["contentType"] == "application/apply-patch+yaml");
  CHECK(reqs[0]["query"]["fieldManager"] == "cluster-gateway");
  CHECK(reqs[0]["query"]["force"] == "true");
  CHECK(reqs[0]["path"] == sink.status_path(ref).substr(0, sink.status_path(ref).find('?')));
  bool gateway_manages = false;
  for (const auto& mf : after["metadata"]["managedFields"])
    gateway_manages = gateway_manages || (mf["manager"] == "cluster-gateway" && mf.value("subresource", "") == "status");
  CHECK(gateway_manages);

  // The next transition: disconnected. The foreign condition is still untouched.
  PlaneStatus down = connected_status(foreign);
  down.agent->connected = false;
  down.agent->connected_agents = 0;
  down.agent->last_disconnected = at(1767225700);
  down.agent->message = "No agents connected";
  down.conditions[1] = cond("AgentConnected", "False", "NoAgentConnected", "No agents connected", 1767225700);
  down.conditions[2] = cond("Ready", "False", "NoAgentConnected", "No agents connected", 1767225700);
  REQUIRE(write_sync(sink, ref, down).ok);
  json later = fake.get("openchoreo.dev/v1alpha1", kind, ns, ref.name);
  CHECK(later["status"]["agentConnection"]["connected"] == false);
  CHECK(later["status"]["agentConnection"]["lastDisconnectedTime"] == "2026-01-01T00:01:40Z");
  CHECK((*find_condition(later, "Ready"))["reason"] == "NoAgentConnected");
  CHECK(*find_condition(later, "Created") == created);
  CHECK(later["metadata"]["generation"] == 1);
  CHECK(later["spec"] == before["spec"]);
  client.shutdown();
}

TEST_CASE("KubeStatusSink maps API answers to write results", "[kube_sink]") {
  FakeApiServer fake;
  IoRunner io;
  cg::kube::KubeClient client(io.ioc(), fake.kube_config());
  KubeStatusSink sink(client);
  CrRef ref{Kind::ClusterDataPlane, "", "cdp"};
  fake.apply(plane("ClusterDataPlane", "", "cdp"));
  Condition created = cond("Created", "True", "ClusterDataPlaneCreated", "ClusterDataplane is created", 1767225600);
  PlaneStatus st = connected_status(created);

  SECTION("404: the CR is gone") {
    auto r = write_sync(sink, CrRef{Kind::ClusterDataPlane, "", "absent"}, st);
    CHECK_FALSE(r.ok);
    CHECK(r.gone);
  }
  SECTION("429: retry after Retry-After") {
    fake.control("POST", "throttle", {{"retryAfter", 2}, {"subresource", "status"}, {"count", 1}});
    auto r = write_sync(sink, ref, st);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.gone);
    REQUIRE(r.retry_after);
    CHECK(*r.retry_after == std::chrono::seconds(2));
    CHECK(write_sync(sink, ref, st).ok);
  }
  SECTION("409 and 5xx: retry") {
    fake.control("POST", "conflict-status", {{"count", 1}});
    auto r = write_sync(sink, ref, st);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.gone);
    CHECK_THAT(r.error, Contains("409"));
    fake.control("POST", "errors", {{"code", 503}, {"subresource", "status"}, {"count", 1}});
    r = write_sync(sink, ref, st);
    CHECK_FALSE(r.ok);
    CHECK_THAT(r.error, Contains("503"));
    CHECK(write_sync(sink, ref, st).ok);
  }
  SECTION("422: the server's validation message") {
    PlaneStatus bad = st;
    bad.conditions[2].reason = "not a valid reason!";
    auto r = write_sync(sink, ref, bad);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.gone);
    CHECK_THAT(r.error, Contains("422") && Contains("reason"));
  }
  SECTION("network error: retry") {
    auto cfg = fake.kube_config();
    cfg.port = "1";  // nothing listens there
    cg::kube::KubeClient dead(io.ioc(), cfg);
    KubeStatusSink dead_sink(dead);
    auto r = write_sync(dead_sink, ref, st);
    CHECK_FALSE(r.ok);
    CHECK_FALSE(r.gone);
    CHECK_THAT(r.error, Contains("connect"));
    dead.shutdown();
  }
  SECTION("the apply body holds only what the gateway owns") {
    json b = KubeStatusSink::apply_body(ref, st);
    CHECK(b["apiVersion"] == "openchoreo.dev/v1alpha1");
    CHECK(b["kind"] == "ClusterDataPlane");
    CHECK(b["metadata"] == json{{"name", "cdp"}});
    CHECK(b["status"]["conditions"].size() == 2);
    CHECK(b["status"]["conditions"][0]["type"] == "AgentConnected");
    CHECK(b["status"]["conditions"][1]["type"] == "Ready");
    CHECK(b["status"]["observedGeneration"] == 1);
    CHECK(b["status"].contains("agentConnection"));
    json nb = KubeStatusSink::apply_body(CrRef{Kind::WorkflowPlane, "ns1", "wp"}, st);
    CHECK(nb["metadata"] == json{{"name", "wp"}, {"namespace", "ns1"}});
    CHECK(sink.status_path(CrRef{Kind::WorkflowPlane, "ns1", "wp"}) ==
          "/apis/openchoreo.dev/v1alpha1/namespaces/ns1/workflowplanes/wp/"
          "status?fieldManager=cluster-gateway&force=true");
  }
  client.shutdown();
}
