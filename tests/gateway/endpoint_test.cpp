// The agent endpoint end to end over real TLS on loopback: upstream's exact 400/401/404 answers,
// TLS version floor, per-CR verification and subset authorization.
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <thread>

#include "common/metrics.hpp"
#include "tests/support/gateway_fixture.hpp"

using namespace cg::testing;

namespace {
// One sample of the process's metrics (the gateway under test runs in this process), e.g.
// `cluster_gateway_tls_reloads_total{result="error"}`; 0 when the series does not exist yet.
double metric_value(const std::string& series) {
  auto text = cg::metrics::serialize();
  const std::string key = series + " ";
  auto p = text.find(key);
  return p == std::string::npos ? 0 : std::stod(text.substr(p + key.size()));
}
constexpr const char* kReloadError = "cluster_gateway_tls_reloads_total{result=\"error\"}";
constexpr const char* kReloadOk = "cluster_gateway_tls_reloads_total{result=\"ok\"}";

struct Pki {
  Cert ca_a = make_ca("tenant A agents");
  Cert ca_b = make_ca("tenant B agents");
  Cert agent_a = make_signed(CertSpec{.cn = "agent-a"}, ca_a);
  Cert agent_b = make_signed(CertSpec{.cn = "agent-b"}, ca_b);
};
}  // namespace

TEST_CASE("agent endpoint answers upstream's 400 and 404 bodies exactly", "[gateway][endpoint]") {
  GatewayFixture fx;
  fx.start();
  Pki pki;
  auto tls = fx.client(pki.agent_a);
  struct Case {
    std::string target;
    int status;
    std::string body;
  };
  std::vector<Case> cases = {
      {"/ws?planeID=x", 400, "missing planeType parameter\n"},
      {"/ws?planeType=dataplane", 400, "missing planeID parameter\n"},
      {"/ws", 400, "missing planeType parameter\n"},
      {"/ws?planeType=&planeID=x", 400, "missing planeType parameter\n"},
      {"/ws?planeType=controlplane&planeID=x", 400,
       "invalid planeType: must be 'dataplane', 'workflowplane', or 'observabilityplane'\n"},
      {"/other", 404, "404 page not found\n"},
      {"/ws/extra?planeType=dataplane&planeID=x", 404, "404 page not found\n"},
  };
  for (const auto& c : cases) {
    INFO(c.target);
    auto r = https_get(fx.port(), c.target, tls);
    CHECK(r.status == c.status);
    CHECK(r.body == c.body);
  }
}

TEST_CASE("agent endpoint answers upstream's 401 bodies exactly", "[gateway][endpoint]") {
  GatewayFixture fx;
  Pki pki;
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", pki.ca_a.cert_pem()));
  fx.start();

  SECTION("no client certificate") {
    ClientTls none;
    none.ca_pem = fx.server_ca.cert_pem();
    auto r = https_get(fx.port(), fx.ws_target("workflowplane", "shared"), none);
    CHECK(r.status == 401);
    CHECK(r.body == "no client certificate presented\n");
  }
  SECTION("no CRs with that planeID") {
    auto r = https_get(fx.port(), fx.ws_target("workflowplane", "other"), fx.client(pki.agent_a));
    CHECK(r.status == 401);
    CHECK(r.body == "client certificate verification failed: no workflowplane CRs found with planeID 'other'\n");
  }
  SECTION("same planeID, other plane type") {
    auto r = https_get(fx.port(), fx.ws_target("dataplane", "shared"), fx.client(pki.agent_a));
    CHECK(r.status == 401);
    CHECK(r.body == "client certificate verification failed: no dataplane CRs found with planeID 'shared'\n");
  }
  SECTION("certificate from another CA") {
    auto r = https_get(fx.port(), fx.ws_target("workflowplane", "shared"), fx.client(pki.agent_b));
    CHECK(r.status == 401);
    CHECK(r.body == "client certificate verification failed: certificate not valid for any CR with planeID 'shared'\n");
  }
  SECTION("valid certificate but not a WebSocket request") {
    auto r = https_get(fx.port(), fx.ws_target("workflowplane", "shared"), fx.client(pki.agent_a), false);
    CHECK(r.status == 400);
  }
  CHECK(fx.gw->registry().size() == 0);
}

TEST_CASE("TLS below 1.2 is refused while TLS 1.2 and 1.3 work", "[gateway][endpoint][tls]") {
  GatewayFixture fx;
  Pki pki;
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", pki.ca_a.cert_pem()));
  fx.start();
  auto old = fx.client(pki.agent_a);
  old.max_version = TLS1_1_VERSION;
  auto r = https_get(fx.port(), fx.ws_target("workflowplane", "shared"), old);
  CHECK(r.status == 0);
  CHECK(r.error.rfind("tls:", 0) == 0);

  for (int v : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    auto t = fx.client(pki.agent_a);
    t.min_version = v;
    t.max_version = v;
    HttpResult res;
    auto ws = fx.connect("workflowplane", "shared", t, &res);
    CHECK(res.status == 101);
    CHECK(ws != nullptr);
  }
}

TEST_CASE("a session is authorized for exactly the CRs whose CA verified it", "[gateway][endpoint][authz]") {
  GatewayFixture fx;
  Pki pki;
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", pki.ca_a.cert_pem()));
  fx.write_plane("b.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-b", "shared", pki.ca_b.cert_pem()));
  fx.write_plane("c.yaml", plane_yaml("WorkflowPlane", "team", "team-a", "shared", pki.ca_a.cert_pem()));
  fx.start();

  HttpResult res;
  auto ws = fx.connect("workflowplane", "shared", fx.client(pki.agent_a), &res);
  REQUIRE(ws);
  REQUIRE(wait_until([&] { return fx.gw->registry().size() == 1; }));
  auto sessions = fx.gw->registry().sessions_of("workflowplane", "shared");
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0].authorized == std::set<std::string>{"/tenant-a", "team/team-a"});

  auto& reg = fx.gw->registry();
  CHECK(reg.report("workflowplane", "/tenant-a").connected_agents == 1);
  CHECK(reg.report("workflowplane", "/tenant-b").connected_agents == 0);

  // Status per CR: tenant-a and team-a connected, tenant-b not. The writer handles the CRs one
  // after the other, so all three files are waited for (team-a may be written after tenant-a).
  REQUIRE(wait_until([&] {
    auto a = fx.status("ClusterWorkflowPlane", "", "tenant-a");
    auto b = fx.status("ClusterWorkflowPlane", "", "tenant-b");
    auto team = fx.status("WorkflowPlane", "team", "team-a");
    return a.is_object() && a["agentConnection"]["connected"] == true && b.is_object() &&
           b["agentConnection"]["connected"] == false && team.is_object() && team["agentConnection"]["connected"] == true;
  }));
  auto a = fx.status("ClusterWorkflowPlane", "", "tenant-a");
  CHECK(a["agentConnection"]["connectedAgents"] == 1);
  CHECK(a["agentConnection"]["message"] == "1 agent connected");
}

TEST_CASE("an agent certificate issued through an intermediate works when the agent sends it", "[gateway][endpoint][authz]") {
  GatewayFixture fx;
  Cert root = make_ca("root");
  CertSpec is;
  is.cn = "intermediate";
  is.is_ca = true;
  is.client_auth = false;
  Cert inter = make_signed(is, root);
  Cert leaf = make_signed(CertSpec{.cn = "agent"}, inter);
  fx.write_plane("a.yaml", plane_yaml("DataPlane", "default", "prod", "prod", root.cert_pem()));
  fx.start();

  HttpResult without;
  CHECK_FALSE(fx.connect("dataplane", "prod", fx.client(leaf), &without));
  CHECK(without.status == 401);

  HttpResult with;
  auto ws = fx.connect("dataplane", "prod", fx.client(leaf, {inter}), &with);
  CHECK(with.status == 101);
  CHECK(ws);
}

TEST_CASE("a renewed server certificate is used for new connections without dropping sessions", "[gateway][tls][reload]") {
  GatewayFixture fx;
  Pki pki;
  fx.write_plane("a.yaml", plane_yaml("ClusterWorkflowPlane", "", "tenant-a", "shared", pki.ca_a.cert_pem()));
  fx.start();
  auto live = fx.connect("workflowplane", "shared", fx.client(pki.agent_a));
  REQUIRE(live);

  // A broken renewal (half-written key) is refused; the old certificate keeps serving. The reload
  // loop looks at the files every 2 s: wait until it tried this key and refused it.
  const double errors0 = metric_value(kReloadError);
  const double oks0 = metric_value(kReloadOk);
  write_file(fx.dir + "/server.key", "-----BEGIN PRIVATE KEY-----\ngarbage\n");
  REQUIRE(wait_until([&] { return metric_value(kReloadError) >= errors0 + 1; }, std::chrono::seconds(15)));
  CHECK(metric_value(kReloadOk) == oks0);
  CHECK(https_get(fx.port(), "/other", fx.client(pki.agent_a)).status == 404);

  // cert-manager renews with a new issuer: new handshakes must verify against it.
  Cert new_ca = make_ca("renewed gateway CA");
  Cert renewed = make_server(new_ca);
  write_file(fx.dir + "/server.crt", renewed.cert_pem());
  write_file(fx.dir + "/server.key", renewed.key_pem());
  auto with_new_ca = fx.client(pki.agent_a);
  with_new_ca.ca_pem = new_ca.cert_pem();
  CHECK(wait_until([&] { return https_get(fx.port(), "/other", with_new_ca).status == 404; }, std::chrono::seconds(15)));
  CHECK(metric_value(kReloadOk) >= oks0 + 1);
  auto with_old_ca = fx.client(pki.agent_a);
  CHECK(https_get(fx.port(), "/other", with_old_ca).status == 0);  // old issuer no longer matches

  std::string msg;
  live->read(msg, std::chrono::milliseconds(100));
  CHECK_FALSE(live->closed());
  CHECK(fx.gw->registry().size() == 1);
}
