// Two gateway replicas in one process (--mesh with static peers), so that the mesh's threads (the
// publisher on the control thread, directory updates on io threads, forwarding) run under
// ThreadSanitizer: the directory reaches the peer, a request at the replica without the agent is
// forwarded, only the smallest replica id writes status, and the sum counts the agent once.
#include <catch2/catch.hpp>
#include <future>
#include <thread>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "mesh/mesh.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/test_agent.hpp"

using namespace cg::testing;
using namespace std::chrono_literals;

namespace {
unsigned short free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

struct Pair {
  Cert agents = make_ca("agents");
  Cert leaf = make_signed(CertSpec{.cn = "agent"}, agents);
  Cert mesh_ca = make_ca("mesh");
  Cert peer = make_signed(
      CertSpec{.cn = "peer", .client_auth = true, .server_auth = true, .dns = {"localhost"}, .ips = {"127.0.0.1"}}, mesh_ca);
  unsigned short port_a = free_port(), port_b = free_port();
  std::chrono::seconds lease;
  std::chrono::milliseconds idle_a{0};  // A's --idle-timeout (its mesh listener's too); 0: the default
  std::unique_ptr<GatewayFixture> a, b;

  std::unique_ptr<GatewayFixture> replica(const std::string& id, unsigned short mine, unsigned short other) {
    auto fx = std::make_unique<GatewayFixture>([&](cg::gateway::Config& c) {
      c.mesh = true;
      c.mesh_port = mine;
      c.mesh_peers = "127.0.0.1:" + std::to_string(other);
      c.replica_id = id;
      c.mesh_lease_duration = lease;
      if (id == "a" && idle_a.count() > 0) c.idle_timeout = idle_a;
    });
    write_file(fx->dir + "/mesh-ca.crt", mesh_ca.cert_pem());
    write_file(fx->dir + "/mesh.crt", peer.cert_pem());
    write_file(fx->dir + "/mesh.key", peer.key_pem());
    fx->cfg.mesh_ca_cert = fx->dir + "/mesh-ca.crt";
    fx->cfg.mesh_cert = fx->dir + "/mesh.crt";
    fx->cfg.mesh_key = fx->dir + "/mesh.key";
    fx->write_plane("ci.yaml", plane_yaml("ClusterWorkflowPlane", "", "ci", "ci", agents.cert_pem()));
    fx->start();
    return fx;
  }
  explicit Pair(std::chrono::seconds lease_duration = 2s, std::chrono::milliseconds idle_timeout_a = 0ms)
      : lease(lease_duration), idle_a(idle_timeout_a) {
    a = replica("a", port_a, port_b);
    b = replica("b", port_b, port_a);
  }
};
}  // namespace

TEST_CASE("two replicas in one process share their directory and forward requests and elect one status writer",
          "[gateway][mesh]") {
  Pair p;
  REQUIRE(p.a->gw->mesh());
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->synced() && p.b->gw->mesh()->synced(); }));
  auto ws = p.a->connect("workflowplane", "ci", p.a->client(p.leaf));
  REQUIRE(ws);
  TestAgent agent(std::move(ws), TestAgent::echo("on-a"));
  // B learns of A's agent through A's updates; both count it once.
  REQUIRE(wait_until([&] { return p.b->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 1; }));
  CHECK(p.a->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 1);
  CHECK(p.b->gw->registry().size() == 0);

  // A request at B is served by A's agent.
  auto r = https_request(p.b->gw->internal_port(), "GET", "/api/proxy/workflowplane/ci/_cluster/ci/k8s/api/v1/pods",
                         p.b->internal_client());
  REQUIRE(r.status == 200);
  CHECK(r.header("X-Agent") == "on-a");
  CHECK(r.header("X-Cluster-Gateway-Entry-Pod") == "b");
  CHECK(r.header("X-Cluster-Gateway-Served-By") == "a");

  // "a" < "b": A writes status, B writes nothing.
  REQUIRE(wait_until([&] {
    auto st = p.a->status("ClusterWorkflowPlane", "", "ci");
    return st.is_object() && st["agentConnection"]["connectedAgents"] == 1;
  }));
  CHECK(p.a->gw->mesh()->leader());
  CHECK_FALSE(p.b->gw->mesh()->leader());
  CHECK(p.b->status("ClusterWorkflowPlane", "", "ci").is_null());

  // A stops: its `bye` drops it from B at once, and B takes over writing status.
  p.a->gw->shutdown();
  REQUIRE(wait_until([&] { return p.b->gw->mesh()->leader(); }));
  CHECK(p.b->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 0);
  REQUIRE(wait_until([&] {
    auto st = p.b->status("ClusterWorkflowPlane", "", "ci");
    return st.is_object() && st["agentConnection"]["connected"] == false;
  }));
}

TEST_CASE("a replica stays ready and keeps writing status when its peer leaves soon after the start", "[gateway][mesh]") {
  // A lease far longer than the test: "one lease duration since the start" never stands in for the
  // peers' directories here, so only the startup sync decides.
  Pair p(60s);
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->synced() && p.b->gw->mesh()->synced(); }));
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->leader(); }));
  CHECK(p.a->gw->not_ready_reason().empty());

  // B stops (its bye reaches A): A is synced for good, so it stays ready and the writer.
  p.b->gw->shutdown();
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->directory().replicas().empty(); }));
  auto ws = p.a->connect("workflowplane", "ci", p.a->client(p.leaf));
  REQUIRE(ws);
  TestAgent agent(std::move(ws), TestAgent::echo("on-a"));
  // Written by A after B left: before the fix A stepped down until a lease duration after its start.
  REQUIRE(wait_until([&] {
    auto st = p.a->status("ClusterWorkflowPlane", "", "ci");
    return st.is_object() && st["agentConnection"]["connectedAgents"] == 1;
  }));
  CHECK(p.a->gw->mesh()->leader());
  CHECK(p.a->gw->mesh()->synced());
  CHECK(p.a->gw->not_ready_reason().empty());
}

TEST_CASE("a request waiting for a moving agent when its replica stops is answered and not dropped", "[gateway][mesh]") {
  // Declared before the replicas: if the request were never answered, the replicas' destruction
  // (sockets closed) ends it before the future's destructor waits for it.
  std::future<HttpResponse> answer;
  Pair p;
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->synced() && p.b->gw->mesh()->synced(); }));
  {
    auto ws = p.a->connect("workflowplane", "ci", p.a->client(p.leaf));
    REQUIRE(ws);
    TestAgent agent(std::move(ws), TestAgent::echo("on-a"));
    REQUIRE(wait_until([&] { return p.a->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 1; }));
  }
  // The agent has just left: A counted one a moment ago, so a request for it waits for it to come back.
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 0; }));
  answer = std::async(std::launch::async, [port = p.a->gw->internal_port(), tls = p.a->internal_client()] {
    return https_request(port, "GET", "/api/proxy/workflowplane/ci/_cluster/ci/k8s/api/v1/pods", tls);
  });
  REQUIRE(wait_until([&] { return p.a->gw->internal_requests_active() > 0; }));
  // A stops while the request waits: once the drain window is over the request is answered (no agent),
  // instead of losing its connection when the process stops.
  p.a->gw->shutdown();
  REQUIRE(answer.wait_for(std::chrono::seconds(15)) == std::future_status::ready);
  auto r = answer.get();
  CHECK(r.error.empty());
  CHECK(r.status == 502);
}

TEST_CASE("a kept-alive caller connection forwards every request also after the serving replica closed its link",
          "[gateway][mesh]") {
  // A closes an idle connection after 300 ms, its mesh listener's too (B's caller side keeps the default).
  Pair p(2s, 300ms);
  REQUIRE(wait_until([&] { return p.a->gw->mesh()->synced() && p.b->gw->mesh()->synced(); }));
  auto ws = p.a->connect("workflowplane", "ci", p.a->client(p.leaf));
  REQUIRE(ws);
  TestAgent agent(std::move(ws), TestAgent::echo("on-a"));
  REQUIRE(wait_until([&] { return p.b->gw->mesh()->registry().report("workflowplane", "/ci").connected_agents == 1; }));

  const std::string path = "/api/proxy/workflowplane/ci/_cluster/ci/k8s/api/v1/namespaces/default/configmaps";
  HttpsSession caller(p.b->gw->internal_port(), p.b->internal_client());
  auto served_by_a = [&](const HttpResponse& r) {
    INFO(r.error << " " << r.body);
    CHECK(r.status == 200);
    CHECK(r.header("X-Agent") == "on-a");
    CHECK(r.header("X-Cluster-Gateway-Served-By") == "a");
  };
  // The first forwarded request goes over the mesh's pool, the next ones over the connection's own link.
  // Both carry the caller's Authorization to the agent, as a request served by B itself would.
  served_by_a(caller.request("GET", path, {{"Authorization", "Bearer caller-token"}}));
  served_by_a(caller.request("POST", path, {{"Content-Type", "application/json"}, {"Authorization", "Bearer caller-token"}},
                             R"({"kind":"ConfigMap"})"));
  {
    auto frames = agent.received();
    REQUIRE(frames.size() >= 2);
    for (size_t i = frames.size() - 2; i < frames.size(); ++i) {
      INFO("frame " << i << ": " << frames[i].dump());
      CHECK(frames[i]["headers"].value("Authorization", nlohmann::json::array()) ==
            nlohmann::json::array({"Bearer caller-token"}));
    }
  }
  served_by_a(caller.request("GET", path));
  // A closes the idle link; a POST (not repeatable) must not be lost on it: the closed link is
  // noticed before the request goes out, and a new one is opened.
  std::this_thread::sleep_for(800ms);
  auto r = caller.request("POST", path, {{"Content-Type", "application/json"}}, R"({"kind":"ConfigMap"})");
  served_by_a(r);
  CHECK(nlohmann::json::parse(r.body, nullptr, false).value("bodyBytes", 0) == 20);
  served_by_a(caller.request("GET", path));
}
