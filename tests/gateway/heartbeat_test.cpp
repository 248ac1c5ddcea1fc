// Heartbeats with short intervals: silent peers are dropped, responsive ones never are; certificate
// expiry closes the session.
#include <catch2/catch.hpp>
#include <thread>

#include "tests/support/gateway_fixture.hpp"

using namespace cg::testing;
using namespace std::chrono_literals;

TEST_CASE("a peer that never answers pings is dropped while a responsive one stays", "[gateway][heartbeat]") {
  GatewayFixture fx([](cg::gateway::Config& c) {
    c.heartbeat_interval = 100ms;
    c.heartbeat_timeout = 500ms;
  });
  Cert ca = make_ca("agents");
  Cert leaf = make_signed(CertSpec{.cn = "agent"}, ca);
  fx.write_plane("p.yaml", plane_yaml("ClusterDataPlane", "", "prod", "prod", ca.cert_pem()));
  fx.start();

  auto responsive = fx.connect("dataplane", "prod", fx.client(leaf));
  auto silent = fx.connect("dataplane", "prod", fx.client(leaf));
  REQUIRE(responsive);
  REQUIRE(silent);
  REQUIRE(wait_until([&] { return fx.gw->registry().size() == 2; }));

  // The responsive client keeps reading (answering pings) for six timeouts; the silent one never reads.
  std::string msg;
  auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) responsive->read(msg, 50ms);
  CHECK_FALSE(responsive->closed());
  CHECK(fx.gw->registry().size() == 1);
  auto left = fx.gw->registry().all();
  REQUIRE(left.size() == 1);
  // The silent peer's socket was closed by the gateway.
  CHECK_FALSE(silent->read(msg, 2s));
  CHECK(silent->closed());
}

TEST_CASE("last seen moves with pongs and the CR heartbeat time follows", "[gateway][heartbeat]") {
  GatewayFixture fx([](cg::gateway::Config& c) {
    c.heartbeat_interval = 200ms;
    c.heartbeat_timeout = 2s;
    c.status_heartbeat_interval = 1s;
  });
  Cert ca = make_ca("agents");
  Cert leaf = make_signed(CertSpec{.cn = "agent"}, ca);
  fx.write_plane("p.yaml", plane_yaml("ClusterDataPlane", "", "prod", "prod", ca.cert_pem()));
  fx.start();
  auto ws = fx.connect("dataplane", "prod", fx.client(leaf));
  REQUIRE(ws);
  REQUIRE(wait_until([&] { return fx.gw->registry().size() == 1; }));
  auto first = fx.gw->registry().all()[0].handle->last_seen();
  std::string msg;
  auto until = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < until) ws->read(msg, 50ms);
  auto later = fx.gw->registry().all()[0].handle->last_seen();
  CHECK(later > first);
  std::string hb0;
  REQUIRE(wait_until([&] {
    auto s = fx.status("ClusterDataPlane", "", "prod");
    if (!s.is_object() || !s["agentConnection"].contains("lastHeartbeatTime")) return false;
    hb0 = s["agentConnection"]["lastHeartbeatTime"];
    return true;
  }));
  // Keep answering pings: a later heartbeat-only refresh moves lastHeartbeatTime.
  REQUIRE(wait_until(
      [&] {
        ws->read(msg, 50ms);
        auto s = fx.status("ClusterDataPlane", "", "prod");
        return s["agentConnection"]["lastHeartbeatTime"] != hb0;
      },
      10s));
}

TEST_CASE("a session closes with 1008 when its client certificate expires", "[gateway][heartbeat][expiry]") {
  GatewayFixture fx;
  Cert ca = make_ca("agents");
  CertSpec s;
  s.cn = "short-lived";
  s.not_after = std::chrono::seconds(2);
  Cert leaf = make_signed(s, ca);
  fx.write_plane("p.yaml", plane_yaml("ClusterDataPlane", "", "prod", "prod", ca.cert_pem()));
  fx.start();
  auto ws = fx.connect("dataplane", "prod", fx.client(leaf));
  REQUIRE(ws);
  std::string msg;
  bool got = false;
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!ws->closed() && std::chrono::steady_clock::now() < until) got |= ws->read(msg, 100ms);
  CHECK_FALSE(got);
  REQUIRE(ws->closed());
  CHECK(ws->close_code() == 1008);
  CHECK(ws->close_reason() == "client certificate expired");
  CHECK(wait_until([&] { return fx.gw->registry().size() == 0; }));
}
