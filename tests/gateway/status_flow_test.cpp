// Status files follow sessions and plane changes: transitions for 0, 1 and 2 agents, Ready
// reasons, and live CA changes through the file source (revoke → close 1008, grant → added).
#include <catch2/catch.hpp>

#include "tests/support/gateway_fixture.hpp"

using namespace cg::testing;
using namespace std::chrono_literals;

namespace {
nlohmann::json condition(const nlohmann::json& st, const std::string& type) {
  if (!st.is_object()) return nullptr;
  for (const auto& c : st["conditions"])
    if (c["type"] == type) return c;
  return nullptr;
}
}  // namespace

TEST_CASE("status follows 0, 1 and 2 agents with upstream's messages", "[gateway][status]") {
  GatewayFixture fx;
  Cert ca = make_ca("agents");
  Cert leaf = make_signed(CertSpec{.cn = "agent"}, ca);
  fx.write_plane("p.yaml", plane_yaml("ClusterWorkflowPlane", "", "ci", "ci", ca.cert_pem()));
  fx.start();
  auto st = [&] { return fx.status("ClusterWorkflowPlane", "", "ci"); };

  REQUIRE(wait_until([&] { return st().is_object(); }));
  CHECK(st()["agentConnection"]["connected"] == false);
  CHECK(st()["agentConnection"]["message"] == "No agents connected");
  CHECK(condition(st(), "Ready")["reason"] == "NoAgentConnected");
  CHECK(st()["observedGeneration"] == 1);

  auto a1 = fx.connect("workflowplane", "ci", fx.client(leaf));
  REQUIRE(wait_until([&] { return st()["agentConnection"]["connectedAgents"] == 1; }));
  CHECK(st()["agentConnection"]["message"] == "1 agent connected");
  CHECK(st()["agentConnection"].contains("lastConnectedTime"));
  CHECK_FALSE(st()["agentConnection"].contains("lastDisconnectedTime"));
  CHECK(condition(st(), "Ready")["status"] == "True");
  CHECK(condition(st(), "AgentConnected")["status"] == "True");
  const auto connected_at = st()["agentConnection"]["lastConnectedTime"];

  auto a2 = fx.connect("workflowplane", "ci", fx.client(leaf));
  REQUIRE(wait_until([&] { return st()["agentConnection"]["connectedAgents"] == 2; }));
  CHECK(st()["agentConnection"]["message"] == "2 agents connected (HA mode)");
  CHECK(st()["agentConnection"]["lastConnectedTime"] == connected_at);

  a1->close();
  REQUIRE(wait_until([&] { return st()["agentConnection"]["connectedAgents"] == 1; }));
  CHECK(st()["agentConnection"]["connected"] == true);
  CHECK_FALSE(st()["agentConnection"].contains("lastDisconnectedTime"));

  a2.reset();  // abrupt TCP close
  REQUIRE(wait_until([&] { return st()["agentConnection"]["connected"] == false; }));
  CHECK(st()["agentConnection"]["connectedAgents"] == 0);
  CHECK(st()["agentConnection"]["message"] == "No agents connected");
  CHECK(st()["agentConnection"].contains("lastDisconnectedTime"));
  CHECK(condition(st(), "Ready")["status"] == "False");
  CHECK(fx.gw->registry().size() == 0);
}

TEST_CASE("Ready explains invalid specs, CA errors and missing observability planes", "[gateway][status]") {
  GatewayFixture fx;
  Cert ca = make_ca("agents");
  fx.write_plane("bad-id.yaml", plane_yaml("ClusterWorkflowPlane", "", "bad-id", "Bad_ID", ca.cert_pem()));
  fx.write_plane("no-secret.yaml",
                 plane_yaml_secret("ClusterWorkflowPlane", "", "no-secret", "x", "openchoreo-system", "missing", "ca.crt"));
  fx.write_plane("no-ns.yaml", plane_yaml_secret("ClusterWorkflowPlane", "", "no-ns", "y", "", "s", "ca.crt"));
  fx.write_plane("obs.yaml", plane_yaml("ClusterWorkflowPlane", "", "obs", "z", ca.cert_pem()) +
                                 "  observabilityPlaneRef:\n    kind: ClusterObservabilityPlane\n    name: missing\n");
  fx.write_plane("obs-kind.yaml", plane_yaml("ClusterWorkflowPlane", "", "obs-kind", "w", ca.cert_pem()) +
                                      "  observabilityPlaneRef:\n    kind: ObservabilityPlane\n    name: x\n");
  fx.start();
  auto ready = [&](const std::string& name) { return condition(fx.status("ClusterWorkflowPlane", "", name), "Ready"); };
  REQUIRE(wait_until([&] { return ready("obs-kind").is_object() && ready("bad-id").is_object(); }));
  CHECK(ready("bad-id")["reason"] == "InvalidSpec");
  CHECK(ready("bad-id")["message"].get<std::string>().find("Bad_ID") != std::string::npos);
  CHECK(ready("no-secret")["reason"] == "ClientCAError");
  CHECK(ready("no-secret")["message"].get<std::string>().find("secret openchoreo-system/missing not found") != std::string::npos);
  CHECK(ready("no-ns")["reason"] == "ClientCAError");
  CHECK(ready("no-ns")["message"].get<std::string>().find("namespace is required") != std::string::npos);
  CHECK(ready("obs")["reason"] == "ObservabilityPlaneNotFound");
  CHECK(ready("obs-kind")["reason"] == "InvalidSpec");
}

TEST_CASE("a CA change through the file source revokes, closes and grants live", "[gateway][status][reverify]") {
  GatewayFixture fx;
  Cert ca_a = make_ca("A");
  Cert ca_b = make_ca("B");
  Cert agent = make_signed(CertSpec{.cn = "agent"}, ca_a);
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", ca_a.cert_pem()));
  fx.write_plane("b.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-b", "shared", ca_b.cert_pem()));
  fx.start();
  auto ws = fx.connect("workflowplane", "shared", fx.client(agent));
  REQUIRE(ws);
  REQUIRE(wait_until([&] { return fx.gw->registry().size() == 1; }));
  auto authorized = [&] {
    auto s = fx.gw->registry().sessions_of("workflowplane", "shared");
    return s.empty() ? std::set<std::string>{} : s[0].authorized;
  };
  CHECK(authorized() == std::set<std::string>{"/tenant-a"});

  // Tenant B starts trusting agent CA A too: granted on the live session.
  fx.write_plane("b.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-b", "shared", ca_b.cert_pem() + ca_a.cert_pem()));
  REQUIRE(wait_until([&] { return authorized() == std::set<std::string>{"/tenant-a", "/tenant-b"}; }));
  REQUIRE(wait_until([&] { return fx.status("ClusterWorkflowPlane", "", "tenant-b")["agentConnection"]["connected"] == true; }));

  // Tenant A rotates to CA B: revoked, session stays for tenant-b.
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", ca_b.cert_pem()));
  REQUIRE(wait_until([&] { return authorized() == std::set<std::string>{"/tenant-b"}; }));
  REQUIRE(wait_until([&] { return fx.status("ClusterWorkflowPlane", "", "tenant-a")["agentConnection"]["connected"] == false; }));

  // Tenant B drops CA A: no CR left, the session is closed with 1008.
  fx.write_plane("b.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-b", "shared", ca_b.cert_pem()));
  std::string msg;
  REQUIRE(wait_until([&] {
    ws->read(msg, 50ms);
    return ws->closed();
  }));
  CHECK(ws->close_code() == 1008);
  CHECK(ws->close_reason().find("no longer authorized") != std::string::npos);
  CHECK(wait_until([&] { return fx.status("ClusterWorkflowPlane", "", "tenant-b")["agentConnection"]["connected"] == false; }));

  // New handshakes use the new CAs at once.
  HttpResult res;
  CHECK_FALSE(fx.connect("workflowplane", "shared", fx.client(agent), &res));
  CHECK(res.status == 401);
}

TEST_CASE("a CR deleted from the directory loses its status file and its authorization", "[gateway][status]") {
  GatewayFixture fx;
  Cert ca = make_ca("agents");
  Cert agent = make_signed(CertSpec{.cn = "agent"}, ca);
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "a", "shared", ca.cert_pem()));
  fx.write_plane("b.yaml", plane_yaml("ClusterWorkflowPlane", "", "b", "shared", ca.cert_pem()));
  fx.start();
  auto ws = fx.connect("workflowplane", "shared", fx.client(agent));
  REQUIRE(ws);
  REQUIRE(wait_until([&] { return fx.status("ClusterWorkflowPlane", "", "b")["agentConnection"]["connected"] == true; }));
  fx.remove_plane("b.yaml");
  REQUIRE(wait_until([&] { return fx.status("ClusterWorkflowPlane", "", "b").is_null(); }));
  auto s = fx.gw->registry().sessions_of("workflowplane", "shared");
  REQUIRE(s.size() == 1);
  CHECK(s[0].authorized == std::set<std::string>{"/a"});
}
