// The internal API over real mTLS on loopback: upstream's validation order and bodies, routing,
// per-session replies, fail-fast on agent loss, timeouts, caller cancellation, plane endpoints.
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <future>
#include <regex>
#include <thread>

#include "common/base64.hpp"
#include "common/metrics.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/test_agent.hpp"

using namespace cg::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {
struct Env {
  explicit Env(std::function<void(cg::gateway::Config&)> tweak = {}) : fx(std::move(tweak)) {
    fx.write_plane("a.yaml", plane_yaml("ClusterDataPlane", "", "tenant-a", "prod", ca_a.cert_pem()));
    fx.write_plane("b.yaml", plane_yaml("ClusterDataPlane", "", "tenant-b", "prod", ca_b.cert_pem()));
    fx.start();
  }
  std::unique_ptr<TestAgent> agent(const Cert& leaf, TestAgent::Handler h) {
    auto n = fx.gw->registry().size();
    auto ws = fx.connect("dataplane", "prod", fx.client(leaf));
    REQUIRE(ws);
    auto a = std::make_unique<TestAgent>(std::move(ws), std::move(h));
    REQUIRE(wait_until([&] { return fx.gw->registry().size() == n + 1; }));
    return a;
  }
  HttpResponse call(const std::string& method, const std::string& target,
                    const std::vector<std::pair<std::string, std::string>>& headers = {}, const std::string& body = "",
                    bool chunked = false) {
    return https_request(fx.gw->internal_port(), method, target, fx.internal_client(), headers, body, chunked);
  }
  GatewayFixture fx;
  Cert ca_a = make_ca("A");
  Cert ca_b = make_ca("B");
  Cert agent_a = make_signed(CertSpec{.cn = "agent-a"}, ca_a);
  Cert agent_b = make_signed(CertSpec{.cn = "agent-b"}, ca_b);
};
const std::string kPods = "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/namespaces/default/pods";
// One sample of the process's metrics (the gateway under test runs in this process); 0 when the
// series does not exist yet.
double metric_value(const std::string& series) {
  auto text = cg::metrics::serialize();
  const std::string key = series + " ";
  auto p = text.find(key);
  return p == std::string::npos ? 0 : std::stod(text.substr(p + key.size()));
}
const std::string kWrongSession = "cluster_gateway_agent_frames_dropped_total{reason=\"wrong_session\"}";
}  // namespace

TEST_CASE("proxy validation answers in upstream's order with upstream's bodies", "[internal][proxy]") {
  Env env;
  struct Case {
    std::string method, target;
    int status;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers = {};
  };
  std::vector<Case> cases = {
      {"GET", "/api/proxy/dataplane/prod/_cluster", 400,
       "invalid proxy URL format: /api/proxy/{planeType}/{planeID}/{namespace}/{crName}/{target}/{path}\n"},
      {"TRACE", kPods, 405, "HTTP method not allowed: TRACE\n"},
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/shell/x", 403, "Target not allowed: shell\n"},
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/namespaces/kube-system/secrets/x", 403,
       "Access to path is blocked: /api/v1/namespaces/kube-system/secrets/x\n"},
      // Upstream's current deny-list lets cluster-wide Secret/ServiceAccount lists through (its
      // controller-manager needs them); --proxy-policy-file can deny them (tests/gateway/test_proxy_policy.py).
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/secrets", 502,
       "proxy request failed: no agents found for plane dataplane/prod\n"},
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/namespaces/kube-system/secrets%3F", 400,
       "Path contains '?' after decoding (%3F); the agent would start a query string there\n"},
      {"POST", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/namespaces/ns/serviceaccounts/sa/token", 403,
       "Access to path is blocked: /api/v1/namespaces/ns/serviceaccounts/sa/token\n"},
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/namespaces/a%2F..%2Fb/pods", 400,
       "Path contains directory traversal\n"},
      {"GET", "/api/proxy/dataplane/prod/_cluster/tenant-a/k8s/api/v1/pods%00x", 400, "Path contains null bytes\n"},
      // A watch is streamed when an agent announces the capability (tests/gateway/test_streams.py); with no
      // agent at all the answer is the plain "no agents" 502 rather than upstream's blanket 501.
      {"GET", kPods + "?watch=true", 502, "proxy request failed: no agents found for plane dataplane/prod\n"},
      {"GET",
       kPods + "/x/portforward",
       501,
       std::string("Streaming operations (watch, logs -f, exec, port-forward) are not yet supported through the HTTP proxy. "
                   "Use the CQRS API (/api/k8s-resources/) for resource operations, or connect directly to the data plane for "
                   "streaming operations.\n"),
       {{"Connection", "Upgrade"}, {"Upgrade", "SPDY/3.1"}}},
      {"GET", "/api/nothing", 404, "404 page not found\n"},
      {"GET", "/api/proxy/dataplane/other/_cluster/x/k8s/api", 502,
       "proxy request failed: no agents found for plane dataplane/other\n"},
  };
  for (const auto& c : cases) {
    INFO(c.method << " " << c.target);
    auto r = env.call(c.method, c.target, c.headers);
    CHECK(r.status == c.status);
    CHECK(r.body == c.body);
    if (r.status >= 400) CHECK(r.header("Content-Type") == "text/plain; charset=utf-8");
  }
  // Declared and real body sizes over 10 MiB, the chunked one counted on the bytes.
  std::string big(10 * 1024 * 1024 + 1, 'x');
  auto declared = env.call("POST", kPods, {}, big);
  CHECK(declared.status == 413);
  CHECK(declared.body == "Request body too large: 10485761 bytes (max: 10485760)\n");
  auto chunked = env.call("POST", kPods, {}, big, true);
  CHECK(chunked.status == 413);
}

TEST_CASE("proxy: 403 for an agent not authorized for the CR, 200 through the authorized one", "[internal][proxy]") {
  Env env;
  auto a = env.agent(env.agent_a, TestAgent::echo("a"));
  auto r = env.call("GET", "/api/proxy/dataplane/prod/_cluster/tenant-b/k8s/api/v1/pods");
  CHECK(r.status == 403);
  CHECK(r.body == "Forbidden: Agent not authorized for CR /tenant-b\n");

  r = env.call("GET", kPods + "?limit=5&labelSelector=a%3Db", {{"X-Request-ID", "trace-123"}, {"Accept", "application/json"}});
  REQUIRE(r.status == 200);
  CHECK(r.header("X-Agent") == "a");
  CHECK(r.header("Content-Type") == "application/json");
  auto body = json::parse(r.body);
  CHECK(body["path"] == "/api/v1/namespaces/default/pods");
  CHECK(body["query"] == "limit=5&labelSelector=a%3Db");
  auto req = a->received().back();
  CHECK(req["gatewayRequestID"] == "trace-123");
  CHECK(req["target"] == "k8s");
  CHECK(req["method"] == "GET");
  CHECK(req["headers"]["Accept"] == json::array({"application/json"}));
  CHECK_FALSE(req["headers"].contains("Host"));
  CHECK(std::regex_match(req["requestID"].get<std::string>(),
                         std::regex("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")));

  env.call("POST", kPods, {{"Content-Type", "application/json"}}, "{\"kind\":\"Pod\"}");
  req = a->received().back();
  CHECK(std::regex_match(req["gatewayRequestID"].get<std::string>(), std::regex("^gw-[0-9a-f]{16}$")));
  CHECK(cg::base64_decode(req["body"].get<std::string>()).value() == "{\"kind\":\"Pod\"}");
}

TEST_CASE("proxy: round-robin across three authorized agents", "[internal][proxy][routing]") {
  Env env;
  auto a1 = env.agent(env.agent_a, TestAgent::echo("1"));
  auto a2 = env.agent(env.agent_a, TestAgent::echo("2"));
  auto a3 = env.agent(env.agent_a, TestAgent::echo("3"));
  auto b = env.agent(env.agent_b, TestAgent::echo("b"));  // same plane, other CR: never chosen
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) {
    auto r = env.call("GET", kPods);
    REQUIRE(r.status == 200);
    ++seen[r.header("X-Agent")];
  }
  CHECK(seen == std::map<std::string, int>{{"1", 10}, {"2", 10}, {"3", 10}});
  CHECK(b->received_count() == 0);
}

TEST_CASE("proxy: an agent lost mid-request fails the request at once with 502", "[internal][proxy][reliability]") {
  Env env([](cg::gateway::Config& c) { c.request_timeout = 120s; });
  std::atomic<bool> got{false};
  auto a = env.agent(env.agent_a, [&](const json&) {
    got = true;
    return std::vector<json>{};
  });
  std::thread killer([&] {
    wait_until([&] { return got.load(); });
    a->kill();
  });
  auto r = env.call("GET", kPods);
  killer.join();
  CHECK(r.status == 502);
  CHECK(r.body == "proxy request failed: agent connection closed before responding\n");
  CHECK(env.fx.gw->pending_requests() == 0);
}

TEST_CASE("proxy: a silent agent times out with upstream's 502 and nothing stays pending", "[internal][proxy][reliability]") {
  Env env([](cg::gateway::Config& c) { c.request_timeout = 300ms; });
  auto a = env.agent(env.agent_a, [](const json&) { return std::vector<json>{}; });
  auto r = env.call("GET", kPods);
  CHECK(r.status == 502);
  CHECK(r.body == "proxy request failed: HTTP tunnel request timeout\n");
  CHECK(env.fx.gw->pending_requests() == 0);
}

TEST_CASE("proxy: a forged reply from another session is dropped and the real one delivered", "[internal][proxy][reliability]") {
  Env env;
  auto asked_ws = env.fx.connect("dataplane", "prod", env.fx.client(env.agent_a));
  auto forger_ws = env.fx.connect("dataplane", "prod", env.fx.client(env.agent_b));
  REQUIRE(asked_ws);
  REQUIRE(forger_ws);
  REQUIRE(wait_until([&] { return env.fx.gw->registry().size() == 2; }));
  std::future<HttpResponse> call = std::async(std::launch::async, [&] { return env.call("GET", kPods); });
  std::string msg;
  REQUIRE(asked_ws->read(msg, 10s));
  auto req = json::parse(msg);
  json forged = {{"requestID", req["requestID"]}, {"statusCode", 418}, {"body", cg::base64_encode("forged")}};
  const double wrong0 = metric_value(kWrongSession);
  REQUIRE(forger_ws->write(forged.dump()));
  // The forged reply was read and dropped (counted), and the caller is still waiting.
  REQUIRE(wait_until([&] { return metric_value(kWrongSession) == wrong0 + 1; }));
  CHECK(call.wait_for(0s) == std::future_status::timeout);
  json real = {{"requestID", req["requestID"]}, {"statusCode", 200}, {"body", cg::base64_encode("real")}};
  REQUIRE(asked_ws->write(real.dump()));
  auto r = call.get();
  CHECK(r.status == 200);
  CHECK(r.body == "real");
}

TEST_CASE("proxy: a caller that goes away cancels its request", "[internal][proxy][reliability]") {
  Env env([](cg::gateway::Config& c) { c.request_timeout = 120s; });
  auto a = env.agent(env.agent_a, [](const json&) { return std::vector<json>{}; });
  // An independent client (curl) that gives up after 1 s while the agent holds the request.
  std::string dir = env.fx.dir;
  write_file(dir + "/caller.crt", env.fx.caller.cert_pem());
  write_file(dir + "/caller.key", env.fx.caller.key_pem());
  write_file(dir + "/server-ca.crt", env.fx.server_ca.cert_pem());
  std::string cmd = "curl -s -o /dev/null --max-time 1 --cacert " + dir + "/server-ca.crt --cert " + dir + "/caller.crt --key " +
                    dir + "/caller.key https://127.0.0.1:" + std::to_string(env.fx.gw->internal_port()) + kPods;
  int rc = std::system(cmd.c_str());
  CHECK(rc != 0);  // curl gave up (timeout)
  CHECK(wait_until([&] { return a->received_count() == 1; }));
  CHECK(wait_until([&] { return env.fx.gw->pending_requests() == 0; }));
}

TEST_CASE("internal port: agent certificates and missing certificates are refused in the handshake", "[internal][tls]") {
  Env env;
  auto r = https_request(env.fx.gw->internal_port(), "GET", "/api/v1/planes/status", env.fx.client(env.agent_a));
  CHECK(r.status == 0);
  ClientTls none;
  none.ca_pem = env.fx.server_ca.cert_pem();
  auto r2 = https_request(env.fx.gw->internal_port(), "GET", "/api/v1/planes/status", none);
  CHECK(r2.status == 0);
  auto ok = env.call("GET", "/api/v1/planes/status");
  CHECK(ok.status == 200);
}

TEST_CASE("plane status, notify and reconnect endpoints", "[internal][planes]") {
  Env env;
  auto unknown = env.call("GET", "/api/v1/planes/dataplane/nothing/status");
  REQUIRE(unknown.status == 200);
  CHECK(json::parse(unknown.body) == json{{"planeType", "dataplane"},
                                          {"planeID", "nothing"},
                                          {"connected", false},
                                          {"connectedAgents", 0},
                                          {"lastSeen", "0001-01-01T00:00:00Z"}});
  auto a1 = env.agent(env.agent_a, TestAgent::echo("1"));
  auto a2 = env.agent(env.agent_a, TestAgent::echo("2"));
  auto b = env.agent(env.agent_b, TestAgent::echo("b"));

  auto plane = json::parse(env.call("GET", "/api/v1/planes/dataplane/prod/status").body);
  CHECK(plane["connectedAgents"] == 3);
  CHECK(plane["connected"] == true);
  CHECK(plane["lastSeen"] != "0001-01-01T00:00:00Z");
  auto cr = json::parse(env.call("GET", "/api/v1/planes/dataplane/prod/status?name=tenant-b").body);
  CHECK(cr["connectedAgents"] == 1);
  auto all = json::parse(env.call("GET", "/api/v1/planes/status").body);
  CHECK(all["total"] == 1);
  CHECK(all["planes"][0]["planeID"] == "prod");

  auto bad = env.call("POST", "/api/v1/planes/notify", {}, "{nope");
  CHECK(bad.status == 400);
  auto missing = env.call("POST", "/api/v1/planes/notify", {}, R"({"planeType":"dataplane"})");
  CHECK(missing.status == 400);
  CHECK(missing.body == "missing required fields: planeType, planeID, event\n");
  auto unknown_event =
      env.call("POST", "/api/v1/planes/notify", {}, R"({"planeType":"dataplane","planeID":"prod","event":"moved"})");
  CHECK(unknown_event.status == 400);
  CHECK(unknown_event.body == "unknown event type: moved\n");
  auto not_found = env.call("POST", "/api/v1/planes/notify", {},
                            R"({"planeType":"dataplane","planeID":"prod","event":"updated","namespace":"","name":"ghost"})");
  CHECK(not_found.status == 503);
  auto updated = env.call("POST", "/api/v1/planes/notify", {},
                          R"({"planeType":"dataplane","planeID":"prod","event":"updated","namespace":"","name":"tenant-a"})");
  REQUIRE(updated.status == 200);
  CHECK(json::parse(updated.body) ==
        json{{"success", true}, {"action", "revalidate"}, {"authorizationsGranted", 0}, {"authorizationsRevoked", 0}});
  auto wrong_method = env.call("GET", "/api/v1/planes/dataplane/prod/reconnect");
  CHECK(wrong_method.status == 405);

  auto rc = env.call("POST", "/api/v1/planes/dataplane/prod/reconnect");
  REQUIRE(rc.status == 200);
  CHECK(json::parse(rc.body) == json{{"success", true}, {"disconnectedAgents", 3}});
  CHECK(wait_until([&] { return env.fx.gw->registry().size() == 0; }));
}

// Upstream lists a CR whose clientCA is not set or does not parse as a candidate of its planeID and
// skips only CRs whose Secret cannot be read: the agent's 401 text and notify's answers follow from it.
TEST_CASE("CRs without a usable CA: upstream's 401 text and notify answers", "[internal][planes]") {
  Env env;
  env.fx.write_plane("odd-notpem.yaml", plane_yaml("ClusterDataPlane", "", "odd-notpem", "odd", "this is not PEM\n"));
  env.fx.write_plane("odd-noca.yaml",
                     "apiVersion: openchoreo.dev/v1alpha1\nkind: ClusterDataPlane\nmetadata:\n  name: odd-noca\n"
                     "spec:\n  planeID: odd\n");
  env.fx.write_plane("gone.yaml", plane_yaml_secret("ClusterDataPlane", "", "gone", "gone", "default", "missing", "ca.crt"));
  REQUIRE(wait_until([&] {
    return env.fx.gw->index().anchors("dataplane", "odd").size() == 2 &&
           env.fx.gw->index().anchors("dataplane", "gone").size() == 1;
  }));
  HttpResult res;
  auto ws = WsClient::connect(env.fx.gw->agent_port(), "/ws?planeID=odd&planeType=dataplane", env.fx.client(env.agent_a), res);
  CHECK_FALSE(ws);
  CHECK(res.status == 401);
  CHECK(res.body == "client certificate verification failed: certificate not valid for any CR with planeID 'odd'\n");
  ws = WsClient::connect(env.fx.gw->agent_port(), "/ws?planeID=gone&planeType=dataplane", env.fx.client(env.agent_a), res);
  CHECK_FALSE(ws);
  CHECK(res.status == 401);
  CHECK(res.body == "client certificate verification failed: no dataplane CRs found with planeID 'gone'\n");

  auto notify = [&](const std::string& id, const std::string& name) {
    return env.call(
        "POST", "/api/v1/planes/notify", {},
        R"({"planeType":"dataplane","planeID":")" + id + R"(","event":"updated","namespace":"","name":")" + name + "\"}");
  };
  auto no_ca = notify("odd", "odd-noca");
  CHECK(no_ca.status == 503);
  CHECK(no_ca.body == "failed to fetch CR CA for re-validation: CR /odd-noca has no CA configured\n");
  auto unreachable = notify("gone", "gone");
  CHECK(unreachable.status == 503);
  CHECK(unreachable.body == "failed to fetch CR CA for re-validation: CR /gone not found\n");
  auto ghost = notify("odd", "ghost");
  CHECK(ghost.status == 503);
  CHECK(ghost.body == "failed to fetch CR CA for re-validation: CR /ghost not found\n");
  // Bytes that do not parse: nothing to re-verify without sessions (200), a 500 with sessions.
  auto not_pem = notify("odd", "odd-notpem");
  CHECK(not_pem.status == 200);
  env.fx.write_plane("odd-good.yaml", plane_yaml("ClusterDataPlane", "", "odd-good", "odd", env.ca_a.cert_pem()));
  REQUIRE(wait_until([&] { return env.fx.gw->index().anchors("dataplane", "odd").size() == 3; }));
  auto a = WsClient::connect(env.fx.gw->agent_port(), "/ws?planeID=odd&planeType=dataplane", env.fx.client(env.agent_a), res);
  REQUIRE(a);
  REQUIRE(wait_until([&] { return !env.fx.gw->registry().sessions_of("dataplane", "odd").empty(); }));
  auto with_session = notify("odd", "odd-notpem");
  CHECK(with_session.status == 500);
  CHECK(with_session.body == "re-validation failed: failed to parse new CA certificate\n");
}
