// KubeClient and KubePlaneSource against the fake Kubernetes API server (a child process).
// No timing assertions: every wait is bounded polling (wait_until).
#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.hpp"
#include "kube/client.hpp"
#include "plane_index/kube_source.hpp"
#include "tests/support/control_thread.hpp"
#include "tests/support/fake_apiserver.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/pki.hpp"
#include "tls/ca_store.hpp"

using Catch::Matchers::Contains;
using cg::kube::KubeClient;
using cg::kube::Request;
using cg::kube::Response;
using cg::plane::CrRef;
using cg::plane::Kind;
using cg::plane::KubePlaneSource;
using cg::plane::PlaneIndex;
using cg::testing::FakeApiServer;
using cg::testing::IoRunner;
using cg::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr auto kWait = std::chrono::seconds(20);

Response call(KubeClient& c, Request r) {
  std::promise<Response> p;
  c.request(std::move(r), [&p](Response res) { p.set_value(std::move(res)); });
  return p.get_future().get();
}

Request get(const std::string& path, std::chrono::milliseconds timeout = 10s) {
  Request r;
  r.path = path;
  r.timeout = timeout;
  return r;
}

json cr_meta(const std::string& ns, const std::string& name) {
  json m = {{"name", name}};
  if (!ns.empty()) m["namespace"] = ns;
  return m;
}

json cr_inline(const std::string& kind, const std::string& ns, const std::string& name, const std::string& plane_id,
               const std::string& ca_pem) {
  return {{"apiVersion", "openchoreo.dev/v1alpha1"},
          {"kind", kind},
          {"metadata", cr_meta(ns, name)},
          {"spec", {{"planeID", plane_id}, {"clusterAgent", {{"clientCA", {{"value", ca_pem}}}}}}}};
}

json cr_secret(const std::string& kind, const std::string& ns, const std::string& name, const std::string& plane_id,
               const std::string& secret_ns, const std::string& secret, const std::string& key = "ca.crt") {
  json ref = {{"name", secret}, {"key", key}};
  if (!secret_ns.empty()) ref["namespace"] = secret_ns;
  return {{"apiVersion", "openchoreo.dev/v1alpha1"},
          {"kind", kind},
          {"metadata", cr_meta(ns, name)},
          {"spec", {{"planeID", plane_id}, {"clusterAgent", {{"clientCA", {{"secretKeyRef", ref}}}}}}}};
}

json secret(const std::string& ns, const std::string& name, const std::string& key, const std::string& pem) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"type", "Opaque"},
          {"data", {{key, cg::testing::base64(pem)}}}};
}

std::string fingerprint_of(const std::string& pem) {
  std::string err;
  auto st = cg::tls::CaStore::from_bundle(pem, err);
  REQUIRE(st);
  return st->fingerprint();
}

// The fingerprint of the CA the index holds for a CR ("" when none, "error: ..." when it failed).
std::string index_ca(const PlaneIndex& index, const CrRef& ref) {
  auto e = index.find(ref);
  if (!e) return "";
  return e->ca ? e->ca->fingerprint() : "error: " + e->ca_error;
}

cg::plane::KubeSourceOptions fast_options() {
  cg::plane::KubeSourceOptions o;
  o.backoff_initial = 50ms;
  o.backoff_max = 1s;
  return o;
}

// A fake API server, a client on two io threads, an index and a source (started by start()).
struct World {
  explicit World(cg::plane::KubeSourceOptions o = fast_options(),
                 std::vector<std::string> fake_args = {"--bookmark-interval", "0.3"})
      : fake(std::move(fake_args)), opts(o) {
    client = std::make_unique<KubeClient>(io.ioc(), fake.kube_config());
  }
  ~World() {
    if (source) source->stop();
    client->shutdown();
    io.stop();
  }
  void start() {
    source = std::make_unique<KubePlaneSource>(control.executor(), *client, index, opts);
    source->start();
  }
  void start_and_sync() {
    start();
    REQUIRE(wait_until([&] { return source->synced(); }, kWait));
  }

  FakeApiServer fake;
  IoRunner io;
  std::unique_ptr<KubeClient> client;
  PlaneIndex index;
  cg::plane::KubeSourceOptions opts;
  cg::testing::ControlThread control;  // the applier's
  std::unique_ptr<KubePlaneSource> source;
};

// Six CRs, one per kind; two take their CA from secrets (one with an explicit namespace, one defaulting to
// the CR's), plus two secrets nobody references.
struct Seed {
  cg::testing::Cert ca_inline = cg::testing::make_ca("agent-ca-inline");
  cg::testing::Cert ca_cwp = cg::testing::make_ca("agent-ca-cwp");
  cg::testing::Cert ca_dp = cg::testing::make_ca("agent-ca-dp");
  CrRef cdp{Kind::ClusterDataPlane, "", "cdp"};
  CrRef cwp{Kind::ClusterWorkflowPlane, "", "cwp"};
  CrRef cop{Kind::ClusterObservabilityPlane, "", "cop"};
  CrRef dp{Kind::DataPlane, "team-a", "dp"};
  CrRef wp{Kind::WorkflowPlane, "team-a", "wp"};
  CrRef op{Kind::ObservabilityPlane, "team-a", "op"};

  void apply(FakeApiServer& f) const {
    f.apply(cr_inline("ClusterDataPlane", "", "cdp", "cdp-plane", ca_inline.cert_pem()));
    f.apply(cr_secret("ClusterWorkflowPlane", "", "cwp", "cwp-plane", "secrets-ns", "cwp-ca"));
    f.apply(cr_inline("ClusterObservabilityPlane", "", "cop", "cop-plane", ca_inline.cert_pem()));
    f.apply(cr_secret("DataPlane", "team-a", "dp", "dp-plane", "", "dp-ca"));
    f.apply(cr_inline("WorkflowPlane", "team-a", "wp", "wp-plane", ca_inline.cert_pem()));
    f.apply(cr_inline("ObservabilityPlane", "team-a", "op", "op-plane", ca_inline.cert_pem()));
    f.apply(secret("secrets-ns", "cwp-ca", "ca.crt", ca_cwp.cert_pem()));
    f.apply(secret("team-a", "dp-ca", "ca.crt", ca_dp.cert_pem()));
    f.apply(secret("team-a", "unrelated", "ca.crt", ca_inline.cert_pem()));
    f.apply(secret("secrets-ns", "unrelated-too", "tls.crt", ca_inline.cert_pem()));
  }
};

// Every secret request names a referenced secret (by path or by field selector); returns the offenders.
std::vector<std::string> unreferenced_secret_requests(FakeApiServer& f, const std::set<std::string>& referenced) {
  std::vector<std::string> bad;
  for (const auto& r : f.requests("resource=secrets")) {
    const std::string method = r.value("method", "");
    if (method != "GET") continue;  // the test itself writes secrets
    std::string name = r.value("name", "");
    std::string ns = r.value("namespace", "");
    std::string fs = r.contains("query") ? r["query"].value("fieldSelector", "") : "";
    std::string who = !name.empty() ? name : (fs.rfind("metadata.name=", 0) == 0 ? fs.substr(14) : "");
    if (who.empty() || !referenced.count(ns + "/" + who)) bad.push_back(r.value("path", "") + "?" + r.value("rawQuery", ""));
  }
  return bad;
}

// Logged requests matching `query` that got `status`.
size_t count_requests(FakeApiServer& f, const std::string& query, int status) {
  size_t n = 0;
  for (const auto& r : f.requests(query)) n += r.value("status", 0) == status;
  return n;
}

int watches_with(FakeApiServer& f, const std::string& needle) {
  int n = 0;
  const json watches = f.control("GET", "watches");
  for (const auto& w : watches.at("items"))
    if (w.dump().find(needle) != std::string::npos) ++n;
  return n;
}

}  // namespace

// --- KubeClient ---------------------------------------------------------------------------------

TEST_CASE("KubeClient: keep-alive, auth, errors with Retry-After, timeouts, TLS verification", "[kube_client]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());

  SECTION("sequential requests reuse one keep-alive connection") {
    for (int i = 0; i < 15; ++i) {
      auto r = call(client, get("/apis/openchoreo.dev/v1alpha1/clusterdataplanes"));
      REQUIRE(r.status == 200);
    }
    CHECK(client.stats().connections_opened == 1);
    CHECK(client.stats().requests == 15);
  }
  SECTION("a wrong token gets the server's 401 Status") {
    auto cfg = fake.kube_config();
    cfg.token_source = cg::kube::TokenSource::fixed("wrong");
    KubeClient other(io.ioc(), cfg);
    auto r = call(other, get("/api/v1/namespaces"));
    CHECK(r.status == 401);
    CHECK_THAT(r.message(), Contains("Unauthorized"));
    other.shutdown();
  }
  SECTION("429 exposes Retry-After") {
    fake.control("POST", "throttle", {{"retryAfter", 3}, {"count", 1}});
    auto r = call(client, get("/api/v1/namespaces"));
    CHECK(r.status == 429);
    REQUIRE(r.retry_after);
    CHECK(r.retry_after->count() == 3);
    CHECK(r.header("retry-after") == "3");
    CHECK(call(client, get("/api/v1/namespaces")).status == 200);
  }
  SECTION("a request slower than its timeout fails with a timeout; the next one works") {
    fake.control("POST", "delay", {{"seconds", 3}, {"count", 1}, {"path", "clusterdataplanes"}});
    auto r = call(client, get("/apis/openchoreo.dev/v1alpha1/clusterdataplanes", 300ms));
    CHECK(r.status == 0);
    CHECK_THAT(r.error, Contains("timeout"));
    CHECK(call(client, get("/apis/openchoreo.dev/v1alpha1/clusterdataplanes")).status == 200);
  }
  SECTION("a server certificate from another CA is refused") {
    auto cfg = fake.kube_config();
    cfg.ca_pem = cg::testing::make_ca("someone-else").cert_pem();
    KubeClient other(io.ioc(), cfg);
    auto r = call(other, get("/api/v1/namespaces"));
    CHECK(r.status == 0);
    CHECK_THAT(r.error, Contains("tls handshake"));
    other.shutdown();
  }
  SECTION("the certificate must name the server: a wrong tls-server-name is refused") {
    auto cfg = fake.kube_config();
    cfg.tls_server_name = "not-the-server.example";
    KubeClient other(io.ioc(), cfg);
    auto r = call(other, get("/api/v1/namespaces"));
    CHECK(r.status == 0);
    CHECK_THAT(r.error, Contains("tls handshake"));
    other.shutdown();
  }
  client.shutdown();
}

TEST_CASE("KubeClient: the rate limiter makes requests wait, never drops them", "[kube_client]") {
  FakeApiServer fake;
  IoRunner io;
  cg::kube::ClientOptions o;
  o.qps = 50;
  o.burst = 5;
  o.max_connections = 4;
  KubeClient client(io.ioc(), fake.kube_config(), o);
  constexpr int n = 30;
  std::mutex mu;
  std::vector<int> statuses;
  for (int i = 0; i < n; ++i) {
    client.request(get("/api/v1/namespaces"), [&](Response r) {
      std::lock_guard lk(mu);
      statuses.push_back(r.status);
    });
  }
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lk(mu);
        return statuses.size() == n;
      },
      kWait));
  for (int s : statuses) CHECK(s == 200);
  CHECK(client.stats().throttled >= n - 5 - 1);
  CHECK(client.stats().connections_opened <= 4);
  client.shutdown();
}

// The rate-limiter waits run on strands of their own (kube/client.hpp, "Timers"); shutdown() posts
// their cancellation there. Each waiting request and watch still ends exactly once, posted (never on
// the calling thread), long before the limiter would have let it go (the last one after ~100 s).
TEST_CASE("KubeClient: shutdown ends requests and watches waiting for the rate limiter, each once, posted", "[kube_client]") {
  FakeApiServer fake;
  IoRunner io;
  cg::kube::ClientOptions o;
  o.qps = 0.1;
  o.burst = 1;
  auto client = std::make_unique<KubeClient>(io.ioc(), fake.kube_config(), o);
  constexpr int kRequests = 8, kWatches = 3;
  const auto caller = std::this_thread::get_id();
  std::mutex mu;
  std::vector<int> request_calls(kRequests), watch_calls(kWatches);
  std::vector<Response> responses(kRequests);
  std::vector<cg::kube::WatchEnd> ends(kWatches);
  std::atomic<int> on_caller_thread{0};
  for (int i = 0; i < kRequests; ++i) {
    client->request(get("/api/v1/namespaces"), [&, i](Response r) {
      if (std::this_thread::get_id() == caller) ++on_caller_thread;
      std::lock_guard lk(mu);
      ++request_calls[i];
      responses[i] = std::move(r);
    });
  }
  for (int i = 0; i < kWatches; ++i) {
    client->watch(
        "/api/v1/namespaces?watch=true", [](std::string_view) {},
        [&, i](cg::kube::WatchEnd e) {
          if (std::this_thread::get_id() == caller) ++on_caller_thread;
          std::lock_guard lk(mu);
          ++watch_calls[i];
          ends[i] = std::move(e);
        });
  }
  CHECK(client->stats().throttled >= kRequests + kWatches - 1);
  client->shutdown();
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lk(mu);
        for (int n : request_calls)
          if (n == 0) return false;
        for (int n : watch_calls)
          if (n == 0) return false;
        return true;
      },
      kWait));
  client.reset();  // shuts down again (idempotent); nothing more may be called
  io.stop();
  CHECK(on_caller_thread == 0);
  for (int i = 0; i < kRequests; ++i) {
    CHECK(request_calls[i] == 1);
    // The first went out at once (burst 1) and may have been answered before shutdown().
    if (i > 0) CHECK(responses[i].error == std::string(cg::kube::kShutDownError));
  }
  for (int i = 0; i < kWatches; ++i) {
    CHECK(watch_calls[i] == 1);
    CHECK(ends[i].reason == cg::kube::WatchEndReason::Cancelled);
  }
}

TEST_CASE("KubeClient: a watch streams events line by line and ends when cancelled", "[kube_client]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  std::mutex mu;
  std::vector<json> events;
  std::promise<cg::kube::WatchEnd> ended;
  auto h = client.watch(
      "/apis/openchoreo.dev/v1alpha1/clusterdataplanes?watch=true&allowWatchBookmarks=true",
      [&](std::string_view line) {
        std::lock_guard lk(mu);
        events.push_back(json::parse(line));
      },
      [&](cg::kube::WatchEnd e) { ended.set_value(std::move(e)); });
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  auto ca = cg::testing::make_ca("w");
  fake.apply(cr_inline("ClusterDataPlane", "", "w1", "w1", ca.cert_pem()));
  fake.apply(cr_inline("ClusterDataPlane", "", "w2", "w2", ca.cert_pem()));
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lk(mu);
        int added = 0;
        for (const auto& e : events) added += e.value("type", "") == "ADDED";
        return added == 2;
      },
      kWait));
  {
    std::lock_guard lk(mu);
    CHECK(events[0]["object"]["metadata"]["name"] == "w1");
  }
  h->cancel();
  auto fut = ended.get_future();
  REQUIRE(fut.wait_for(kWait) == std::future_status::ready);
  auto e = fut.get();
  CHECK(e.reason == cg::kube::WatchEndReason::Cancelled);
  CHECK(wait_until([&] { return fake.open_watches() == 0; }, kWait));
  client.shutdown();
}

TEST_CASE("KubeClient: a refused watch reports the status and body, and shutdown ends running watches", "[kube_client]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  std::promise<cg::kube::WatchEnd> refused;
  client.watch(
      "/apis/openchoreo.dev/v1alpha1/nosuchplural?watch=true", [](std::string_view) {},
      [&](cg::kube::WatchEnd e) { refused.set_value(std::move(e)); });
  auto r = refused.get_future().get();
  CHECK(r.status == 404);
  CHECK(r.reason == cg::kube::WatchEndReason::Refused);
  CHECK_THAT(r.body, Contains("Status"));

  std::promise<cg::kube::WatchEnd> ended;
  client.watch(
      "/api/v1/namespaces?watch=true", [](std::string_view) {}, [&](cg::kube::WatchEnd e) { ended.set_value(std::move(e)); });
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  client.shutdown();
  auto fut = ended.get_future();
  REQUIRE(fut.wait_for(kWait) == std::future_status::ready);
  CHECK(fut.get().reason == cg::kube::WatchEndReason::Cancelled);
  auto after = call(client, get("/api/v1/namespaces"));
  CHECK(after.status == 0);
  CHECK_THAT(after.error, Contains("shut down"));
}

// --- KubePlaneSource ------------------------------------------------------------------------------

TEST_CASE("KubePlaneSource lists and watches all six kinds and only the referenced secrets", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  // A status another writer left on a CR is kept in PlaneCR::status.
  w.fake.apply_status({{"apiVersion", "openchoreo.dev/v1alpha1"},
                       {"kind", "ClusterDataPlane"},
                       {"metadata", {{"name", "cdp"}}},
                       {"status", {{"agentConnection", {{"connected", true}, {"connectedAgents", 1}}}}}},
                      "someone-else");
  w.fake.control("DELETE", "requests");
  w.start_and_sync();

  CHECK(w.index.all().size() == 6);
  for (const auto& ref : {s.cdp, s.cwp, s.cop, s.dp, s.wp, s.op}) {
    INFO(ref.id());
    auto e = w.index.find(ref);
    REQUIRE(e);
    CHECK(e->cr.origin == "kubernetes");
    CHECK(e->ca);
  }
  auto anchors = w.index.anchors("workflowplane", "cwp-plane");
  REQUIRE(anchors.size() == 1);
  REQUIRE(anchors[0].store);
  CHECK(anchors[0].store->fingerprint() == fingerprint_of(s.ca_cwp.cert_pem()));
  CHECK(index_ca(w.index, s.dp) == fingerprint_of(s.ca_dp.cert_pem()));
  CHECK(w.index.find(s.cdp)->cr.status["agentConnection"]["connected"] == true);
  CHECK_FALSE(w.index.find(s.cdp)->cr.resource_version.empty());

  // Lists of all six kinds across all namespaces; secrets only by name.
  for (const auto& k : cg::plane::all_kinds()) {
    INFO(k.plural);
    auto lists = w.fake.requests("verb=list&resource=" + std::string(k.plural));
    REQUIRE(lists.size() >= 1);
    CHECK(lists[0]["namespace"] == "");
  }
  CHECK(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));  // six kinds + two secrets
  auto watches = w.fake.control("GET", "watches")["items"];
  for (const auto& wt : watches) {
    INFO(wt.dump());
    CHECK(wt["query"]["allowWatchBookmarks"] == "true");
    CHECK_FALSE(wt["query"].value("resourceVersion", "").empty());
    CHECK_FALSE(wt["query"].value("timeoutSeconds", "").empty());
  }
  std::set<std::string> referenced = {"secrets-ns/cwp-ca", "team-a/dp-ca"};
  CHECK(unreferenced_secret_requests(w.fake, referenced).empty());
  CHECK(w.fake.requests("resource=secrets&name=unrelated").empty());
  CHECK(w.source->stats().secrets_tracked == 2);
}

TEST_CASE("KubePlaneSource follows CR changes and deletions", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();

  w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp", "", ""), {{"spec", {{"planeID", "cdp-renamed"}}}});
  CHECK(wait_until([&] { return w.index.anchors("dataplane", "cdp-renamed").size() == 1; }, kWait));
  CHECK(w.index.anchors("dataplane", "cdp-plane").empty());
  CHECK(w.index.find(s.cdp)->cr.generation == 2);

  w.fake.remove("openchoreo.dev/v1alpha1", "WorkflowPlane", "team-a", "wp");
  CHECK(wait_until([&] { return !w.index.find(s.wp); }, kWait));

  w.fake.apply(cr_inline("DataPlane", "team-b", "dp2", "dp2-plane", s.ca_inline.cert_pem()));
  CHECK(wait_until([&] { return w.index.find({Kind::DataPlane, "team-b", "dp2"}) != nullptr; }, kWait));
  CHECK(w.index.all().size() == 6);
}

TEST_CASE("KubePlaneSource: a rotated secret reaches the index, and references come and go", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();
  REQUIRE(index_ca(w.index, s.cwp) == fingerprint_of(s.ca_cwp.cert_pem()));

  SECTION("rotation") {
    auto rotated = cg::testing::make_ca("agent-ca-cwp-rotated");
    w.fake.apply(secret("secrets-ns", "cwp-ca", "ca.crt", rotated.cert_pem()));
    CHECK(wait_until([&] { return index_ca(w.index, s.cwp) == fingerprint_of(rotated.cert_pem()); }, kWait));
    // Deleting the secret takes the CA away.
    w.fake.remove("v1", "Secret", "secrets-ns", "cwp-ca");
    CHECK(wait_until([&] { return index_ca(w.index, s.cwp).find("not found") != std::string::npos; }, kWait));
  }
  SECTION("a CR switches to a secret that appears later; the old one is forgotten") {
    w.fake.apply(cr_secret("ClusterWorkflowPlane", "", "cwp", "cwp-plane", "secrets-ns", "cwp-ca-2"));
    CHECK(wait_until([&] { return index_ca(w.index, s.cwp).find("cwp-ca-2 not found") != std::string::npos; }, kWait));
    CHECK(wait_until([&] { return watches_with(w.fake, "metadata.name=cwp-ca\"") == 0; }, kWait));
    CHECK(wait_until([&] { return watches_with(w.fake, "metadata.name=cwp-ca-2") == 1; }, kWait));
    auto next = cg::testing::make_ca("agent-ca-cwp-2");
    w.fake.apply(secret("secrets-ns", "cwp-ca-2", "ca.crt", next.cert_pem()));
    CHECK(wait_until([&] { return index_ca(w.index, s.cwp) == fingerprint_of(next.cert_pem()); }, kWait));
    CHECK(w.source->stats().secrets_tracked == 2);
    // Nothing else was requested: the referenced secrets old and new.
    CHECK(unreferenced_secret_requests(w.fake, {"secrets-ns/cwp-ca", "secrets-ns/cwp-ca-2", "team-a/dp-ca"}).empty());
  }
}

namespace {
double rejected_documents() {
  const std::string name = "cluster_gateway_plane_documents_rejected_total ";
  const std::string text = cg::metrics::serialize();
  auto at = text.find("\n" + name);
  return at == std::string::npos ? 0 : std::stod(text.substr(at + 1 + name.size()));
}
}  // namespace

// The API server validates names (the fake as well), so a CR the gateway cannot parse is one whose
// spec breaks parse_object: it goes through the same path as a bad metadata.name would.
TEST_CASE("KubePlaneSource: a CR that does not parse is logged, counted and ignored", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  auto broken = [](const std::string& name) {
    return json{{"apiVersion", "openchoreo.dev/v1alpha1"},
                {"kind", "DataPlane"},
                {"metadata", {{"name", name}, {"namespace", "team-a"}}},
                {"spec", {{"clusterAgent", "not-a-mapping"}}}};
  };
  w.fake.apply(broken("broken-1"));
  const double before = rejected_documents();
  w.start_and_sync();
  CHECK(w.index.all().size() == 6);
  CHECK_FALSE(w.index.find({Kind::DataPlane, "team-a", "broken-1"}));
  CHECK(rejected_documents() >= before + 1);  // from the list

  const double listed = rejected_documents();
  w.fake.apply(broken("broken-2"));  // a watch event
  CHECK(wait_until([&] { return rejected_documents() >= listed + 1; }, kWait));
  CHECK_FALSE(w.index.find({Kind::DataPlane, "team-a", "broken-2"}));
  CHECK(w.index.all().size() == 6);
}

TEST_CASE("KubePlaneSource resumes dropped watches without losing changes", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();
  REQUIRE(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  auto rotated = cg::testing::make_ca("rotated");
  for (const std::string mode : {"abort", "close"}) {
    INFO(mode);
    const std::string plane_id = "cdp-after-" + mode;
    w.fake.control("POST", "drop-watches", {{"mode", mode}});
    // Changes made while the watches are down arrive through the resumed watches.
    w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp", "", ""), {{"spec", {{"planeID", plane_id}}}});
    auto ca = cg::testing::make_ca("rotated-" + mode);
    w.fake.apply(secret("team-a", "dp-ca", "ca.crt", ca.cert_pem()));
    CHECK(wait_until([&] { return w.index.anchors("dataplane", plane_id).size() == 1; }, kWait));
    CHECK(wait_until([&] { return index_ca(w.index, s.dp) == fingerprint_of(ca.cert_pem()); }, kWait));
    CHECK(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  }
  CHECK(w.index.all().size() == 6);
}

TEST_CASE("KubePlaneSource relists after 410 Gone", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();
  REQUIRE(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));

  SECTION("history compacted while the watches were down") {
    // Keep re-watches failing while things change and the history is compacted, then let them through:
    // they resume from a resourceVersion the server no longer has.
    w.fake.control("POST", "errors", {{"code", 503}, {"verb", "watch"}, {"count", 100000}});
    w.fake.control("POST", "drop-watches", {{"mode", "close"}});
    w.fake.remove("openchoreo.dev/v1alpha1", "ObservabilityPlane", "team-a", "op");
    w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp", "", ""), {{"spec", {{"planeID", "cdp-after-410"}}}});
    auto ca = cg::testing::make_ca("rotated-410");
    w.fake.apply(secret("secrets-ns", "cwp-ca", "ca.crt", ca.cert_pem()));
    REQUIRE(wait_until([&] { return count_requests(w.fake, "verb=watch", 503) >= 8; }, kWait));
    w.fake.control("POST", "compact");
    w.fake.control("DELETE", "faults");
    CHECK(wait_until([&] { return !w.index.find(s.op); }, kWait));
    CHECK(wait_until([&] { return w.index.anchors("dataplane", "cdp-after-410").size() == 1; }, kWait));
    CHECK(wait_until([&] { return index_ca(w.index, s.cwp) == fingerprint_of(ca.cert_pem()); }, kWait));
    CHECK(w.source->stats().relists_gone >= 1);
    CHECK(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  }
  SECTION("an ERROR event carrying a 410 Status") {
    auto before = w.source->stats().relists_gone;
    w.fake.control(
        "POST", "faults",
        {{"match", {{"verb", "watch"}, {"resource", "dataplanes"}}}, {"code", 410}, {"asWatchEvent", true}, {"count", 1}});
    w.fake.control("POST", "drop-watches", {{"mode", "close"}, {"resource", "dataplanes"}});
    w.fake.apply(cr_inline("DataPlane", "team-a", "dp-new", "dp-new", s.ca_inline.cert_pem()));
    CHECK(wait_until([&] { return w.index.find({Kind::DataPlane, "team-a", "dp-new"}) != nullptr; }, kWait));
    CHECK(wait_until([&] { return w.source->stats().relists_gone > before; }, kWait));
    CHECK(w.fake.requests("verb=list&resource=dataplanes").size() >= 2);
  }
  SECTION("an HTTP 410 answer to the watch") {
    auto before = w.source->stats().relists_gone;
    w.fake.control("POST", "errors", {{"code", 410}, {"verb", "watch"}, {"resource", "clusterdataplanes"}, {"count", 1}});
    w.fake.control("POST", "drop-watches", {{"mode", "close"}, {"resource", "clusterdataplanes"}});
    CHECK(wait_until([&] { return w.source->stats().relists_gone > before; }, kWait));
    w.fake.apply(cr_inline("ClusterDataPlane", "", "cdp-new", "cdp-new", s.ca_inline.cert_pem()));
    CHECK(wait_until([&] { return w.index.find({Kind::ClusterDataPlane, "", "cdp-new"}) != nullptr; }, kWait));
  }
}

TEST_CASE("KubePlaneSource survives server errors and throttling", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  // The first lists and watches fail; the source backs off and gets there.
  w.fake.control("POST", "errors", {{"code", 500}, {"verb", "list"}, {"count", 8}});
  w.fake.control("POST", "errors", {{"code", 503}, {"verb", "watch"}, {"count", 6}});
  w.fake.control("POST", "throttle", {{"retryAfter", 1}, {"verb", "list"}, {"resource", "secrets"}, {"count", 1}});
  w.start_and_sync();
  CHECK(w.index.all().size() == 6);
  CHECK(index_ca(w.index, s.cwp) == fingerprint_of(s.ca_cwp.cert_pem()));
  CHECK(w.source->stats().errors >= 8);

  // Errors on every API request for a while, with the watches dropped: the source's retries use them up
  // (the test's own writes wait for that), and the changes made afterwards arrive.
  w.fake.control("POST", "errors", {{"code", 500}, {"path", "^/api"}, {"count", 20}});
  w.fake.control("POST", "drop-watches", {{"mode", "abort"}});
  REQUIRE(wait_until([&] { return w.fake.control("GET", "faults")["items"].empty(); }, kWait));
  auto ca = cg::testing::make_ca("after-errors");
  w.fake.apply(secret("team-a", "dp-ca", "ca.crt", ca.cert_pem()));
  w.fake.remove("openchoreo.dev/v1alpha1", "ClusterObservabilityPlane", "", "cop");
  CHECK(wait_until([&] { return index_ca(w.index, s.dp) == fingerprint_of(ca.cert_pem()); }, kWait));
  CHECK(wait_until([&] { return !w.index.find(s.cop); }, kWait));
  CHECK(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
}

TEST_CASE("KubePlaneSource is not synced until the referenced secrets were read", "[kube_source]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.fake.control("POST", "errors", {{"code", 403}, {"resource", "secrets"}, {"count", 100000}});
  w.start();
  // All six kinds listed, the secrets refused: not synced, nothing applied.
  REQUIRE(wait_until([&] { return count_requests(w.fake, "verb=list&resource=secrets", 403) >= 4; }, kWait));
  for (const auto& k : cg::plane::all_kinds())
    REQUIRE_FALSE(w.fake.requests("verb=list&resource=" + std::string(k.plural)).empty());
  CHECK_FALSE(w.source->synced());
  CHECK_FALSE(w.index.synced());
  CHECK(w.index.all().empty());
  w.fake.control("DELETE", "faults");
  CHECK(wait_until([&] { return w.source->synced(); }, kWait));
  CHECK(w.index.synced());
  CHECK(index_ca(w.index, s.dp) == fingerprint_of(s.ca_dp.cert_pem()));
}

TEST_CASE("KubePlaneSource: start() can wait for the first sync, and stop() ends every watch", "[kube_source]") {
  auto o = fast_options();
  o.start_wait = std::chrono::milliseconds(15000);
  World w(o);
  Seed s;
  s.apply(w.fake);
  w.start();
  CHECK(w.source->synced());  // start() returned after the first sync
  REQUIRE(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  w.source->stop();
  CHECK(wait_until([&] { return w.fake.open_watches() == 0; }, kWait));
  // Changes after stop() are not applied.
  auto before = w.index.version();
  w.fake.remove("openchoreo.dev/v1alpha1", "DataPlane", "team-a", "dp");
  CHECK(w.index.version() == before);
  CHECK(w.index.find(s.dp));
}

// --- Against the fake's rude modes (tests/fakes/kube_apiserver/README.md, "Rude modes") -----------

namespace {

// The value of the first sample of `metric` whose labels contain `label` (0 when none yet).
double metric_value(const std::string& metric, const std::string& label) {
  std::istringstream in(cg::metrics::serialize());
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(metric + "{", 0) == 0 && line.find(label) != std::string::npos)
      return std::stod(line.substr(line.rfind(' ') + 1));
  return 0;
}

double source_events(const std::string& event) {
  return metric_value("cluster_gateway_plane_source_events_total", "event=\"" + event + "\"");
}

Request patch_status(const std::string& path, const json& status) {
  Request r;
  r.method = "PATCH";
  r.path = path + "/status";
  r.content_type = "application/merge-patch+json";
  r.body = json{{"status", status}}.dump();
  r.timeout = 10s;
  return r;
}

}  // namespace

TEST_CASE("KubeClient: an idle connection the server closed is not reused", "[kube_client][rude]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  fake.control("PUT", "config", {{"idleTimeout", 0.2}});
  const auto closed = fake.control("GET", "state").at("idleClosed").get<int>();
  REQUIRE(call(client, get("/api/v1/namespaces")).status == 200);
  // The server closes the kept-alive connection after 0.2 s idle (close_notify, FIN).
  REQUIRE(wait_until([&] { return fake.control("GET", "state").at("idleClosed").get<int>() == closed + 1; }, kWait));
  REQUIRE(call(client, get("/api/v1/namespaces")).status == 200);
  CHECK(client.stats().stale_idle == 1);  // seen closed before reuse: dropped, a new connection used
  CHECK(client.stats().retries == 0);
  CHECK(client.stats().connections_opened == 2);
  auto log = fake.requests("resource=namespaces");
  REQUIRE(log.size() == 2);
  CHECK(log[1]["connectionRequest"] == 1);
  client.shutdown();
}

TEST_CASE("KubeClient: a GET that loses the race against the server's idle close is sent again, a PATCH is not",
          "[kube_client][rude]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  auto ca = cg::testing::make_ca("race");
  fake.apply(cr_inline("ClusterDataPlane", "", "race", "race", ca.cert_pem()));
  const std::string cdp = "/apis/openchoreo.dev/v1alpha1/clusterdataplanes";
  // The server gives up on a connection after 0.1 s idle but sends its close only 30 s later: a
  // request in between goes out on a connection the server no longer serves (read, not answered,
  // connection closed), which is how a real idle close crosses a request on the wire.
  fake.control("PUT", "config", {{"idleTimeout", 0.1}, {"idleCloseDelay", 30}});
  fake.control("DELETE", "requests");
  REQUIRE(call(client, get(cdp)).status == 200);
  std::this_thread::sleep_for(300ms);  // idle past the server's timeout (the condition under test, no event)
  auto r = call(client, get(cdp));
  CHECK(r.status == 200);
  CHECK(client.stats().retries == 1);
  auto log = fake.requests("resource=clusterdataplanes");
  REQUIRE(log.size() == 3);
  CHECK(log[1].value("closedIdle", false));
  CHECK(log[1]["status"] == 0);
  CHECK(log[2]["status"] == 200);
  CHECK(log[2]["connectionRequest"] == 1);  // the resend went out on a new connection

  // The same race for a status PATCH: it may have reached the server, so the client does not send it
  // twice; the caller gets the error (the status writer retries its PATCHes).
  std::this_thread::sleep_for(300ms);
  const json connected = {{"agentConnection", {{"connected", true}, {"connectedAgents", 1}}}};
  auto p = call(client, patch_status(cdp + "/race", connected));
  CHECK(p.status == 0);
  CHECK_FALSE(p.error.empty());
  CHECK(client.stats().retries == 1);
  auto patches = fake.requests("subresource=status");
  REQUIRE(patches.size() == 1);
  CHECK(patches[0].value("closedIdle", false));
  // A new request works (on a new connection).
  CHECK(call(client, patch_status(cdp + "/race", connected)).status == 200);
  client.shutdown();
}

TEST_CASE("KubeClient: watch events split over chunks and several in one chunk arrive as whole lines", "[kube_client][rude]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  fake.control("POST", "watch-chunking", {{"split", 3}, {"coalesce", 0.05}});
  std::mutex mu;
  std::vector<std::string> lines;
  auto h = client.watch(
      "/apis/openchoreo.dev/v1alpha1/clusterdataplanes?watch=true",
      [&](std::string_view line) {
        std::lock_guard lk(mu);
        lines.emplace_back(line);
      },
      [](cg::kube::WatchEnd) {});
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  auto ca = cg::testing::make_ca("chunks");
  for (int i = 0; i < 4; ++i) fake.apply(cr_inline("ClusterDataPlane", "", "c" + std::to_string(i), "c", ca.cert_pem()));
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lk(mu);
        return lines.size() == 4;
      },
      kWait));
  std::lock_guard lk(mu);
  for (size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i]);
    auto ev = json::parse(lines[i]);  // each a whole event
    CHECK(ev["type"] == "ADDED");
    CHECK(ev["object"]["metadata"]["name"] == "c" + std::to_string(i));
  }
  h->cancel();
  client.shutdown();
}

TEST_CASE("KubeClient: a running watch silent for its idle bound ends as Idle", "[kube_client][rude]") {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  fake.control("POST", "stall-watches", {{"new", 1}});  // the next watch: headers, then nothing
  std::promise<cg::kube::WatchEnd> ended;
  cg::kube::WatchOptions wo;
  wo.idle_timeout = 500ms;
  client.watch(
      "/apis/openchoreo.dev/v1alpha1/clusterdataplanes?watch=true&timeoutSeconds=1", [](std::string_view) {},
      [&](cg::kube::WatchEnd e) { ended.set_value(std::move(e)); }, wo);
  auto fut = ended.get_future();
  REQUIRE(fut.wait_for(kWait) == std::future_status::ready);
  auto e = fut.get();
  CHECK(e.reason == cg::kube::WatchEndReason::Idle);
  CHECK(e.status == 200);
  CHECK(e.error == "no byte for 500ms");
  // The client closed the connection: the fake's stalled watch is gone.
  CHECK(wait_until([&] { return fake.open_watches() == 0; }, kWait));
  client.shutdown();
}

TEST_CASE("KubePlaneSource lists in pages, following continue tokens", "[kube_source][rude]") {
  auto o = fast_options();
  o.list_page_size = 2;
  World w(o);
  Seed s;
  s.apply(w.fake);
  for (int i = 0; i < 4; ++i)
    w.fake.apply(
        cr_inline("ClusterDataPlane", "", "cdp-" + std::to_string(i), "cdp-" + std::to_string(i), s.ca_inline.cert_pem()));
  w.fake.control("DELETE", "requests");
  w.start_and_sync();
  CHECK(w.index.all().size() == 10);
  for (int i = 0; i < 4; ++i) CHECK(w.index.find({Kind::ClusterDataPlane, "", "cdp-" + std::to_string(i)}));
  // Five ClusterDataPlanes: three pages of at most two.
  auto lists = w.fake.requests("verb=list&resource=clusterdataplanes");
  REQUIRE(lists.size() == 3);
  for (const auto& l : lists) CHECK(l["query"].value("limit", "") == "2");
  CHECK_FALSE(lists[0]["query"].contains("continue"));
  CHECK(lists[1]["query"].contains("continue"));
  CHECK(lists[2]["query"].contains("continue"));
  CHECK(w.source->stats().list_pages >= 2);
  // The watch starts from the pages' resourceVersion and sees later changes.
  w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp-3", "", ""), {{"spec", {{"planeID", "cdp-3-renamed"}}}});
  CHECK(wait_until([&] { return w.index.anchors("dataplane", "cdp-3-renamed").size() == 1; }, kWait));
}

TEST_CASE("KubePlaneSource: an expired continue token lists again from scratch, unpaged", "[kube_source][rude]") {
  auto o = fast_options();
  o.list_page_size = 2;
  World w(o);
  Seed s;
  s.apply(w.fake);
  for (int i = 0; i < 4; ++i)
    w.fake.apply(
        cr_inline("ClusterDataPlane", "", "cdp-" + std::to_string(i), "cdp-" + std::to_string(i), s.ca_inline.cert_pem()));
  w.fake.control("DELETE", "requests");
  const double expired_before = source_events("continue_expired");
  // The ClusterDataPlane pages are held 2 s each; while the second one waits, the server changes and
  // compacts its history past the first page's resourceVersion.
  w.fake.control("POST", "delay", {{"seconds", 2}, {"verb", "list"}, {"resource", "clusterdataplanes"}, {"count", 2}});
  w.start();
  REQUIRE(wait_until([&] { return w.source->stats().list_pages >= 1; }, kWait));
  w.fake.apply(cr_inline("ClusterDataPlane", "", "cdp-late", "cdp-late", s.ca_inline.cert_pem()));
  w.fake.control("POST", "compact");
  REQUIRE(wait_until([&] { return w.source->synced(); }, kWait));
  CHECK(w.source->stats().continue_expired == 1);
  CHECK(source_events("continue_expired") == expired_before + 1);
  auto lists = w.fake.requests("verb=list&resource=clusterdataplanes");
  REQUIRE(lists.size() == 3);
  CHECK(lists[1]["status"] == 410);
  CHECK(lists[1]["query"].contains("continue"));
  // From scratch, in one request: no continue, no limit.
  CHECK(lists[2]["status"] == 200);
  CHECK_FALSE(lists[2]["query"].contains("continue"));
  CHECK_FALSE(lists[2]["query"].contains("limit"));
  CHECK(w.index.find({Kind::ClusterDataPlane, "", "cdp-late"}));
  CHECK(w.index.find({Kind::ClusterDataPlane, "", "cdp-3"}));
  // The next LIST (after a 410 on the watch) is paged again.
  REQUIRE(wait_until([&] { return watches_with(w.fake, "clusterdataplanes") == 1; }, kWait));
  w.fake.control("POST", "errors", {{"code", 410}, {"verb", "watch"}, {"resource", "clusterdataplanes"}, {"count", 1}});
  w.fake.control("POST", "drop-watches", {{"mode", "close"}, {"resource", "clusterdataplanes"}});
  REQUIRE(wait_until([&] { return w.fake.requests("verb=list&resource=clusterdataplanes").size() >= 6; }, kWait));
  lists = w.fake.requests("verb=list&resource=clusterdataplanes");
  CHECK(lists[3]["query"].value("limit", "") == "2");
  CHECK_FALSE(lists[3]["query"].contains("continue"));
}

TEST_CASE("KubePlaneSource restarts a silently stalled watch from its last resourceVersion", "[kube_source][rude]") {
  auto o = fast_options();
  o.watch_timeout = 1s;  // timeoutSeconds in [1, 2)
  o.watch_idle_margin = 1s;  // so a silent watch is given up after 2 to 3 s
  World w(o);
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();
  REQUIRE(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  const double idle_before = source_events("watch_idle");
  const auto lists_before = w.fake.requests("verb=list&resource=clusterdataplanes").size();
  // Stall the open ClusterDataPlane watch (it may be between two watches: then try again).
  REQUIRE(wait_until(
      [&] {
        return w.fake.control("POST", "stall-watches", {{"resource", "clusterdataplanes"}})["stalled"].get<int>() == 1;
      },
      kWait));
  const double t_stall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() - 0.5;
  // A change while it is stalled: the server's history keeps it; only a restarted watch can bring it
  // (a stalled watch does not even end at its timeoutSeconds).
  auto changed =
      w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp", "", ""), {{"spec", {{"planeID", "cdp-after-stall"}}}});
  const long long changed_rv = std::stoll(changed["metadata"]["resourceVersion"].get<std::string>());
  CHECK(wait_until([&] { return w.index.anchors("dataplane", "cdp-after-stall").size() == 1; }, kWait));
  CHECK(w.source->stats().watch_idle_restarts >= 1);
  CHECK(source_events("watch_idle") >= idle_before + 1);
  // Restarted from the last resourceVersion it had seen (older than the change, which the server
  // replayed), not relisted.
  CHECK(w.fake.requests("verb=list&resource=clusterdataplanes").size() == lists_before);
  auto after = w.fake.requests("verb=watch&resource=clusterdataplanes&since=" + std::to_string(t_stall));
  bool resumed = false;
  for (const auto& r : after) {
    const std::string rv = r["query"].value("resourceVersion", "");
    resumed = resumed || (!rv.empty() && std::stoll(rv) < changed_rv);
  }
  CHECK(resumed);
  CHECK(wait_until([&] { return watches_with(w.fake, "\"stalled\":true") == 0; }, kWait));  // the client closed it
}

TEST_CASE("KubePlaneSource with watch events split over chunks and several in one chunk", "[kube_source][rude]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.fake.control("POST", "watch-chunking", {{"split", 5}, {"coalesce", 0.05}, {"gap", 0.001}});
  w.start_and_sync();
  REQUIRE(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));
  for (int i = 0; i < 5; ++i)
    w.fake.apply(
        cr_inline("ClusterDataPlane", "", "chunk-" + std::to_string(i), "chunk-" + std::to_string(i), s.ca_inline.cert_pem()));
  auto rotated = cg::testing::make_ca("rotated-in-chunks");
  w.fake.apply(secret("team-a", "dp-ca", "ca.crt", rotated.cert_pem()));
  for (int i = 0; i < 5; ++i) {
    INFO(i);
    const CrRef ref{Kind::ClusterDataPlane, "", "chunk-" + std::to_string(i)};
    CHECK(wait_until([&] { return w.index.find(ref) != nullptr; }, kWait));
  }
  CHECK(wait_until([&] { return index_ca(w.index, s.dp) == fingerprint_of(rotated.cert_pem()); }, kWait));
  CHECK(w.source->stats().errors == 0);  // no event was unreadable
}

TEST_CASE("KubePlaneSource converges under jittered 500/429/503 faults", "[kube_source][rude]") {
  World w;
  Seed s;
  s.apply(w.fake);
  // Every third request or so fails, on every API path (lists, watches, secrets).
  w.fake.control("POST", "jitter",
                 {{"fraction", 0.35}, {"codes", {500, 429, 503}}, {"retryAfter", 1}, {"seed", 20261202}, {"path", "^/api"}});
  w.start_and_sync();
  CHECK(w.index.all().size() == 6);
  CHECK(index_ca(w.index, s.cwp) == fingerprint_of(s.ca_cwp.cert_pem()));
  // The test's own writes go through the same jittered paths: an injected fault is not applied, so
  // each is retried until it goes through.
  auto until_applied = [](const std::function<void()>& write) {
    for (int attempt = 0;; ++attempt) {
      try {
        write();
        return;
      } catch (const std::exception&) {
        if (attempt >= 50) throw;
      }
    }
  };
  until_applied([&] {
    w.fake.merge_patch(cr_inline("ClusterDataPlane", "", "cdp", "", ""), {{"spec", {{"planeID", "cdp-jitter"}}}});
  });
  until_applied([&] { w.fake.remove("openchoreo.dev/v1alpha1", "WorkflowPlane", "team-a", "wp"); });
  CHECK(wait_until([&] { return w.index.anchors("dataplane", "cdp-jitter").size() == 1; }, kWait));
  CHECK(wait_until([&] { return !w.index.find(s.wp); }, kWait));
  auto jitter = w.fake.control("GET", "faults")["items"];
  REQUIRE(jitter.size() == 1);
  CHECK(jitter[0]["hits"].get<int>() >= 1);  // the faults did happen
  w.fake.control("DELETE", "faults");
  CHECK(wait_until([&] { return w.fake.open_watches() == 8; }, kWait));  // six kinds + two secrets
}

TEST_CASE("KubePlaneSource: lists that lose the race against the server's idle close are resent unseen", "[kube_source][rude]") {
  World w;
  Seed s;
  s.apply(w.fake);
  w.start_and_sync();
  // Every watch has had an event (a bookmark at least), so that their end below resumes at once.
  REQUIRE(wait_until(
      [&] {
        auto ws = w.fake.control("GET", "watches")["items"];
        size_t n = 0;
        for (const auto& x : ws) n += x["eventsSent"].get<int>() > 0;
        return n == 8;
      },
      kWait));
  // From now on the server gives up on a kept-alive connection as soon as it is idle (its close comes
  // 30 s later), so every request on a pooled connection is dropped unanswered. The relists below
  // (every re-watch is answered 410) go out on pooled connections.
  w.fake.control("PUT", "config", {{"idleTimeout", 0.001}, {"idleCloseDelay", 30}});
  const double list_errors = source_events("list_error");
  const auto gone = w.source->stats().relists_gone;
  w.fake.control("DELETE", "requests");
  w.fake.control("POST", "errors", {{"code", 410}, {"verb", "watch"}, {"count", 8}});
  w.fake.control("POST", "drop-watches", {{"mode", "close"}});
  w.fake.apply(cr_inline("ClusterDataPlane", "", "cdp-after-race", "cdp-after-race", s.ca_inline.cert_pem()));
  CHECK(wait_until([&] { return w.index.find({Kind::ClusterDataPlane, "", "cdp-after-race"}) != nullptr; }, kWait));
  CHECK(wait_until([&] { return w.source->stats().relists_gone >= gone + 8; }, kWait));
  auto log = w.fake.requests("verb=list");
  size_t dropped = 0;
  for (size_t i = 0; i < log.size(); ++i) {
    if (!log[i].value("closedIdle", false)) continue;
    ++dropped;
    bool resent = false;  // the same list answered later on another connection
    for (size_t j = i + 1; j < log.size(); ++j)
      resent =
          resent || (log[j]["path"] == log[i]["path"] && log[j]["status"] == 200 && log[j]["connection"] != log[i]["connection"]);
    CHECK(resent);
  }
  CHECK(dropped >= 1);
  CHECK(w.client->stats().retries >= dropped);
  CHECK(source_events("list_error") == list_errors);  // the source never saw a failed list
  w.fake.control("PUT", "config", {{"idleTimeout", 0}});
}
