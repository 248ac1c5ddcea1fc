// kube/lease.hpp: LeaseRecord parsing (pure), and LeaderElector / LeaseWatcher over real HTTP against
// the fake Kubernetes API server (tests/fakes/kube_apiserver, a child process: Leases with
// resourceVersions, 409 on a stale update, 404, watch events, label selectors). The electors run on a
// control thread (tests/support/control_thread.hpp) as in the gateway. Waits are bounded polls
// (wait_until, 10 s); nothing asserts how fast something happens.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kube/client.hpp"
#include "kube/lease.hpp"
#include "tests/support/control_thread.hpp"
#include "tests/support/fake_apiserver.hpp"
#include "tests/support/gateway_fixture.hpp"

using cg::SysTime;
using cg::kube::KubeClient;
using cg::kube::LeaderCallbacks;
using cg::kube::LeaderElector;
using cg::kube::LeaderElectorOptions;
using cg::kube::LeaseRecord;
using cg::kube::LeaseWatcher;
using cg::kube::LeaseWatcherOptions;
using cg::testing::ControlThread;
using cg::testing::FakeApiServer;
using cg::testing::IoRunner;
using cg::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short durations: lease 1 s, renew deadline 700 ms, retry 200 ms.
LeaderElectorOptions fast(const std::string& ns, const std::string& lease, const std::string& identity) {
  LeaderElectorOptions o;
  o.ns = ns;
  o.lease_name = lease;
  o.identity = identity;
  o.lease_duration = 1000ms;
  o.renew_deadline = 700ms;
  o.retry_period = 200ms;
  return o;
}

// What an elector's callbacks were told, and on which threads.
struct ElectionLog {
  std::mutex mu;
  int started = 0;
  int stopped = 0;
  std::vector<std::string> leaders;
  std::set<std::thread::id> threads;
  std::function<void()> on_stop_hook;  // runs inside on_stopped_leading (set before start)

  LeaderCallbacks callbacks() {
    LeaderCallbacks cb;
    cb.on_started_leading = [this] {
      std::lock_guard lk(mu);
      ++started;
      threads.insert(std::this_thread::get_id());
    };
    cb.on_stopped_leading = [this] {
      if (on_stop_hook) on_stop_hook();
      std::lock_guard lk(mu);
      ++stopped;
      threads.insert(std::this_thread::get_id());
    };
    cb.on_new_leader = [this](const std::string& id) {
      std::lock_guard lk(mu);
      leaders.push_back(id);
      threads.insert(std::this_thread::get_id());
    };
    return cb;
  }
  int n_started() {
    std::lock_guard lk(mu);
    return started;
  }
  int n_stopped() {
    std::lock_guard lk(mu);
    return stopped;
  }
  bool saw_leader(const std::string& id) {
    std::lock_guard lk(mu);
    return std::find(leaders.begin(), leaders.end(), id) != leaders.end();
  }
  bool called_on(std::thread::id t) {
    std::lock_guard lk(mu);
    return threads.count(t) > 0;
  }
};

// The Lease as stored by the fake, or null when it does not exist.
json get_lease(FakeApiServer& f, const std::string& ns, const std::string& name) {
  auto r = f.request("GET", cg::kube::lease_path(ns, name));
  if (r.status == 404) return nullptr;
  REQUIRE(r.status == 200);
  return json::parse(r.body);
}

LeaseRecord record(FakeApiServer& f, const std::string& ns, const std::string& name) {
  auto rec = LeaseRecord::parse(get_lease(f, ns, name));
  REQUIRE(rec);
  return *rec;
}

// A Lease written by "someone else", built by hand (not with lease_body()).
json raw_lease(const std::string& ns, const std::string& name, const std::string& app, const std::string& holder, int duration_s,
               SysTime renew) {
  json spec = {{"holderIdentity", holder},
               {"leaseDurationSeconds", duration_s},
               {"acquireTime", cg::kube::format_micro_time(renew)},
               {"renewTime", cg::kube::format_micro_time(renew)},
               {"leaseTransitions", 0}};
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"app", app}}}}},
          {"spec", spec}};
}

void create_lease(FakeApiServer& f, const json& lease) {
  const std::string ns = lease["metadata"]["namespace"];
  auto r = f.request("POST", cg::kube::lease_collection_path(ns), lease.dump());
  INFO(r.body);
  REQUIRE(r.status == 201);
}

// Requests to the Lease API that the fake logged with this method and status.
size_t count_requests(FakeApiServer& f, const std::string& method, int status) {
  size_t n = 0;
  for (const auto& r : f.requests("resource=leases&method=" + method)) n += r.value("status", 0) == status;
  return n;
}

// The clients under test, declared so that they are torn down after the objects using them.
struct Env {
  FakeApiServer fake;
  IoRunner io;
  KubeClient client{io.ioc(), fake.kube_config()};
  ControlThread control;
  explicit Env(const std::string& ns) { fake.ensure_namespace(ns); }
  ~Env() { client.shutdown(); }
};

}  // namespace

// --- LeaseRecord (pure) --------------------------------------------------------------------------

TEST_CASE("LeaseRecord parses a Lease and judges expiry by renewTime + leaseDurationSeconds", "[lease]") {
  const json lease = json::parse(R"({
    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
    "metadata": {"name": "gw", "namespace": "ns", "resourceVersion": "42", "labels": {"app": "cg", "n": 5},
                 "annotations": {"keep": "me"}, "managedFields": [{"manager": "x"}]},
    "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "acquireTime": "2026-12-06T18:00:00.000000Z",
             "renewTime": "2026-12-06T18:00:10.250000Z", "leaseTransitions": 3}})");
  auto rec = LeaseRecord::parse(lease);
  REQUIRE(rec);
  CHECK(rec->name == "gw");
  CHECK(rec->ns == "ns");
  CHECK(rec->resource_version == "42");
  CHECK(rec->labels == std::map<std::string, std::string>{{"app", "cg"}});  // the non-string label is dropped
  CHECK(rec->holder == "pod-a");
  CHECK(rec->held());
  CHECK(rec->lease_duration == 15s);
  CHECK(rec->lease_transitions == 3);
  REQUIRE(rec->acquire_time);
  REQUIRE(rec->renew_time);
  CHECK(cg::kube::format_micro_time(*rec->renew_time) == "2026-12-06T18:00:10.250000Z");
  const SysTime renew = *rec->renew_time;
  CHECK_FALSE(rec->expired(renew));
  CHECK_FALSE(rec->expired(renew + 15s));  // renewTime + duration == now: not yet
  CHECK(rec->expired(renew + 15s + 1us));
  CHECK_FALSE(rec->expired(renew - 1h));  // a renewTime ahead of our clock

  // No holder, no renewTime, no duration: expired whatever the time.
  for (auto mutate : std::vector<std::function<void(LeaseRecord&)>>{[](LeaseRecord& r) { r.holder.clear(); },
                                                                    [](LeaseRecord& r) { r.renew_time.reset(); },
                                                                    [](LeaseRecord& r) { r.lease_duration = 0s; }}) {
    LeaseRecord r = *rec;
    mutate(r);
    CHECK(r.expired(renew));
    CHECK_FALSE(r.same_spec(*rec));
  }
  LeaseRecord other_rv = *rec;
  other_rv.resource_version = "43";
  other_rv.labels.clear();
  CHECK(other_rv.same_spec(*rec));  // metadata is not part of the election record

  // The body for an update: from the object as read (annotations kept, managedFields dropped), with
  // the record's labels, resourceVersion and the whole spec; MicroTimes with six digits.
  LeaseRecord next = *rec;
  next.holder = "pod-b";
  next.renew_time = renew + 1500ms;
  next.lease_transitions = 4;
  next.labels = {{"app", "cg"}, {"role", "x"}};
  json body = cg::kube::lease_body(next, lease);
  CHECK(body["metadata"]["annotations"]["keep"] == "me");
  CHECK_FALSE(body["metadata"].contains("managedFields"));
  CHECK(body["metadata"]["resourceVersion"] == "42");
  CHECK(body["metadata"]["labels"] == json{{"app", "cg"}, {"role", "x"}});
  CHECK(body["spec"]["renewTime"] == "2026-12-06T18:00:11.750000Z");
  CHECK(body["spec"]["acquireTime"] == "2026-12-06T18:00:00.000000Z");
  auto back = LeaseRecord::parse(body);
  REQUIRE(back);
  CHECK(back->same_spec(next));
  CHECK(back->labels == next.labels);

  // A create: no resourceVersion; a released Lease keeps holderIdentity "".
  LeaseRecord released;
  released.name = "gw";
  released.lease_duration = 1s;
  json created = cg::kube::lease_body(released);
  CHECK(created["apiVersion"] == "coordination.k8s.io/v1");
  CHECK(created["kind"] == "Lease");
  CHECK_FALSE(created["metadata"].contains("resourceVersion"));
  CHECK(created["spec"]["holderIdentity"] == "");
  CHECK(created["spec"]["leaseDurationSeconds"] == 1);
  CHECK_FALSE(created["spec"].contains("renewTime"));

  CHECK(cg::kube::format_micro_time(SysTime(std::chrono::seconds(1700000000)) + 123456789ns) == "2023-11-14T22:13:20.123456Z");
  CHECK(cg::kube::format_micro_time(SysTime(std::chrono::seconds(1700000000))) == "2023-11-14T22:13:20.000000Z");
  CHECK(cg::kube::lease_path("a b", "x/y") == "/apis/coordination.k8s.io/v1/namespaces/a%20b/leases/x%2Fy");
}

TEST_CASE("LeaseRecord parsing of hostile JSON never throws: nullopt, or a record that counts as expired", "[lease]") {
  const SysTime now = std::chrono::system_clock::now();
  const std::string good_renew = cg::kube::format_micro_time(now);

  // Not a Lease at all: nullopt.
  for (const char* text : {"null", "42", "\"lease\"", "[]", "[{}]", "{}", R"({"metadata": null})", R"({"metadata": []})",
                           R"({"metadata": {"name": 7}})", R"({"metadata": {"name": ""}})",
                           R"({"metadata": {"name": ["a"]}, "spec": {"holderIdentity": "a"}})"}) {
    INFO(text);
    std::optional<LeaseRecord> rec;
    CHECK_NOTHROW(rec = LeaseRecord::parse(json::parse(text)));
    CHECK_FALSE(rec);
  }
  for (const char* text : {"", "{", "{\"metadata\":", "\xff\xfe", "{\"metadata\": {\"name\": \"a\"}} trailing"}) {
    INFO(text);
    std::optional<LeaseRecord> rec;
    CHECK_NOTHROW(rec = LeaseRecord::parse_text(text));
    CHECK_FALSE(rec);
  }
  CHECK(LeaseRecord::parse_text(std::string(10000, '[') + std::string(10000, ']')) == std::nullopt);

  // A named Lease with a broken spec: a record, expired now and an hour from now.
  const std::string base = R"({"metadata": {"name": "x", "resourceVersion": 12, "labels": ["a"]}, "spec": )";
  const std::vector<std::string> specs = {
      "null",
      "[]",
      "\"spec\"",
      "{}",
      // holder of the wrong type
      R"({"holderIdentity": 5, "leaseDurationSeconds": 15, "renewTime": "RENEW"})",
      R"({"holderIdentity": null, "leaseDurationSeconds": 15, "renewTime": "RENEW"})",
      // durations: wrong type, zero, negative, float, beyond int32, beyond int64, uint64 max
      R"({"holderIdentity": "a", "leaseDurationSeconds": "15", "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 0, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": -15, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15.5, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 1e300, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 2147483648, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": -9223372036854775808, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 18446744073709551615, "renewTime": "RENEW"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": {"s": 15}, "renewTime": "RENEW"})",
      // renew times: missing, wrong type, not a time, out of range years, impossible fields
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": 1733508000})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "yesterday"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "9999-12-31T23:59:59.999999Z"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "0001-01-01T00:00:00.000000Z"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-13-45T25:61:61.000000Z"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-12-06T18:00:00.000000"})",
      R"({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": ""})",
  };
  for (std::string spec : specs) {
    if (auto p = spec.find("RENEW"); p != std::string::npos) spec.replace(p, 5, good_renew);
    const std::string text = base + spec + "}";
    INFO(text);
    std::optional<LeaseRecord> rec;
    REQUIRE_NOTHROW(rec = LeaseRecord::parse_text(text));
    REQUIRE(rec);
    CHECK(rec->name == "x");
    CHECK(rec->resource_version.empty());  // not a string
    CHECK(rec->labels.empty());
    CHECK(rec->expired(now));
    CHECK(rec->expired(now - 1h));
    CHECK(rec->lease_transitions == 0);
    CHECK_NOTHROW(cg::kube::lease_body(*rec));
  }

  // Huge or negative leaseTransitions and bad acquireTime are dropped, the rest is kept.
  for (const char* n : {"-1", "2147483648", "1e40", "\"3\"", "18446744073709551615"}) {
    const std::string text = std::string(R"({"metadata": {"name": "x"}, "spec": {"holderIdentity": "a",)") +
                             R"("leaseDurationSeconds": 2147483647, "acquireTime": [], "renewTime": ")" + good_renew +
                             R"(", "leaseTransitions": )" + n + "}}";
    INFO(text);
    std::optional<LeaseRecord> rec;
    REQUIRE_NOTHROW(rec = LeaseRecord::parse_text(text));
    REQUIRE(rec);
    CHECK(rec->lease_transitions == 0);
    CHECK_FALSE(rec->acquire_time);
    CHECK(rec->lease_duration == std::chrono::seconds(2147483647));
    CHECK_FALSE(rec->expired(now));  // the largest valid duration does not overflow
    CHECK(rec->expired(now + std::chrono::hours(24 * 366 * 69)));
  }
}

// --- LeaderElector -------------------------------------------------------------------------------

TEST_CASE("LeaderElector creates a missing Lease with holder, labels and acquireTime, and renews it", "[lease][elector]") {
  const std::string ns = "lease-acquire";
  Env env(ns);
  ElectionLog log;
  auto opts = fast(ns, "cluster-gateway-status-writer", "pod-a");
  opts.labels = {{"app.kubernetes.io/name", "cluster-gateway"}, {"role", "status-writer"}};

  // Options that cannot work are refused.
  auto bad = opts;
  bad.renew_deadline = bad.lease_duration;
  CHECK_THROWS_AS(LeaderElector(env.control.executor(), env.client, bad, {}), std::invalid_argument);
  bad = opts;
  bad.identity.clear();
  CHECK_THROWS_AS(LeaderElector(env.control.executor(), env.client, bad, {}), std::invalid_argument);

  LeaderElector el(env.control.executor(), env.client, opts, log.callbacks());
  CHECK_FALSE(el.leading());
  el.start();
  CHECK(log.n_started() == 0);  // posted, never inline
  REQUIRE(wait_until([&] { return log.n_started() == 1; }));
  CHECK(el.leading());
  CHECK(el.leader() == "pod-a");
  CHECK(log.saw_leader("pod-a"));

  json lease = get_lease(env.fake, ns, opts.lease_name);
  REQUIRE(lease.is_object());
  CHECK(lease["metadata"]["labels"] == json(opts.labels));
  CHECK(lease["spec"]["holderIdentity"] == "pod-a");
  CHECK(lease["spec"]["leaseDurationSeconds"] == 1);
  CHECK(lease["spec"]["leaseTransitions"] == 0);
  CHECK(lease["spec"]["acquireTime"].is_string());
  const LeaseRecord first = *LeaseRecord::parse(lease);
  REQUIRE(first.acquire_time);
  REQUIRE(first.renew_time);
  CHECK(count_requests(env.fake, "POST", 201) == 1);

  // Renewals: renewTime and resourceVersion move on, acquireTime and the holder stay.
  REQUIRE(wait_until([&] {
    auto r = record(env.fake, ns, opts.lease_name);
    return r.renew_time && *r.renew_time > *first.renew_time && r.resource_version != first.resource_version;
  }));
  REQUIRE(wait_until([&] { return count_requests(env.fake, "PUT", 200) >= 3; }));
  auto renewed = record(env.fake, ns, opts.lease_name);
  CHECK(renewed.holder == "pod-a");
  CHECK(renewed.acquire_time == first.acquire_time);
  CHECK(renewed.lease_transitions == 0);
  CHECK(renewed.labels == opts.labels);
  CHECK(el.leading());
  CHECK(log.n_stopped() == 0);

  // stop() without release: on_stopped_leading has run when it returns; the Lease stays ours.
  el.stop(false);
  CHECK_FALSE(el.leading());
  CHECK(log.n_stopped() == 1);
  CHECK(log.n_started() == 1);
  CHECK(record(env.fake, ns, opts.lease_name).holder == "pod-a");
  CHECK_FALSE(log.called_on(std::this_thread::get_id()));
  const size_t puts = env.fake.requests("resource=leases&method=PUT").size();
  std::this_thread::sleep_for(600ms);  // three retry periods: nothing is sent after stop()
  CHECK(env.fake.requests("resource=leases&method=PUT").size() == puts);
  el.stop(true);  // idempotent
  CHECK(log.n_stopped() == 1);
}

TEST_CASE("LeaderElector takes over at once a Lease its own identity holds (a restarted pod)", "[lease][elector]") {
  const std::string ns = "lease-per-pod";
  Env env(ns);
  // A previous incarnation's Lease, still valid for 30 s, with some history.
  json prev = raw_lease(ns, "pod-x", "cg", "pod-x", 30, std::chrono::system_clock::now() - 5s);
  prev["spec"]["leaseTransitions"] = 3;
  create_lease(env.fake, prev);
  const LeaseRecord before = record(env.fake, ns, "pod-x");

  ElectionLog log;
  LeaderElector el(env.control.executor(), env.client, fast(ns, "pod-x", "pod-x"), log.callbacks());
  el.start();
  REQUIRE(wait_until([&] { return el.leading(); }));  // well before the 30 s would run out
  auto now = record(env.fake, ns, "pod-x");
  CHECK(now.holder == "pod-x");
  CHECK(now.lease_transitions == 3);  // no change of holder
  CHECK(now.acquire_time == before.acquire_time);
  CHECK(*now.renew_time > *before.renew_time);
  CHECK(now.lease_duration == 1s);  // ours from now on
  CHECK(now.labels == std::map<std::string, std::string>{{"app", "cg"}});  // kept on update
  el.stop(false);
  CHECK(log.n_started() == 1);
  CHECK(log.n_stopped() == 1);
}

TEST_CASE("Two LeaderElectors on one Lease: exactly one leads, and stop(release) hands over at once", "[lease][elector]") {
  const std::string ns = "lease-two";
  const std::string name = "cluster-gateway-status-writer";
  Env env(ns);
  // A long lease: without the release the other candidate would wait 20 s for it.
  auto opts_for = [&](const std::string& id) {
    auto o = fast(ns, name, id);
    o.lease_duration = 20s;
    o.renew_deadline = 7s;
    return o;
  };
  ElectionLog log_a, log_b;
  auto a = std::make_unique<LeaderElector>(env.control.executor(), env.client, opts_for("pod-a"), log_a.callbacks());
  auto b = std::make_unique<LeaderElector>(env.control.executor(), env.client, opts_for("pod-b"), log_b.callbacks());
  a->start();
  b->start();
  REQUIRE(wait_until([&] { return a->leading() || b->leading(); }));
  // For several retry periods, never both.
  for (int i = 0; i < 40; ++i) {
    CHECK(a->leading() != b->leading());
    std::this_thread::sleep_for(25ms);
  }
  CHECK(log_a.n_started() + log_b.n_started() == 1);
  LeaderElector* leader = a->leading() ? a.get() : b.get();
  LeaderElector* other = leader == a.get() ? b.get() : a.get();
  ElectionLog& leader_log = leader == a.get() ? log_a : log_b;
  ElectionLog& other_log = leader == a.get() ? log_b : log_a;
  const std::string leader_id = leader->options().identity, other_id = other->options().identity;
  REQUIRE(wait_until([&] { return other->leader() == leader_id; }));
  CHECK(other_log.saw_leader(leader_id));
  const LeaseRecord held = record(env.fake, ns, name);
  CHECK(held.holder == leader_id);
  CHECK(held.lease_transitions == 0);  // created by the leader
  CHECK(count_requests(env.fake, "POST", 201) == 1);

  // on_stopped_leading runs before the release: the Lease is still the leader's inside it.
  std::string holder_when_stopped;
  leader_log.on_stop_hook = [&] { holder_when_stopped = record(env.fake, ns, name).holder; };
  leader->stop(true);
  CHECK(holder_when_stopped == leader_id);
  CHECK(leader_log.n_stopped() == 1);
  CHECK_FALSE(leader->leading());
  REQUIRE(wait_until([&] { return other->leading(); }));
  // on_started_leading is posted after leading() turns true (CI, under ThreadSanitizer: read 0 here).
  REQUIRE(wait_until([&] { return other_log.n_started() > 0; }));
  CHECK(other_log.n_started() == 1);
  const LeaseRecord taken = record(env.fake, ns, name);
  CHECK(taken.holder == other_id);
  CHECK(taken.lease_transitions == 1);
  CHECK(taken.lease_duration == 20s);
  REQUIRE(taken.acquire_time);
  CHECK(*taken.acquire_time > *held.acquire_time);
  CHECK(count_requests(env.fake, "PUT", 200) >= 2);  // the release, then the takeover

  // The last one releases too: no holder, leaseDurationSeconds 1, transitions unchanged.
  other->stop(true);
  CHECK(other_log.n_stopped() == 1);
  const LeaseRecord released = record(env.fake, ns, name);
  CHECK(released.holder.empty());
  CHECK(released.lease_duration == 1s);
  CHECK(released.lease_transitions == 1);
  CHECK(leader_log.n_started() == 1);  // the stopped one never came back
  CHECK_FALSE(leader_log.called_on(std::this_thread::get_id()));
  CHECK_FALSE(other_log.called_on(std::this_thread::get_id()));
}

TEST_CASE("A leader whose renewals fail steps down once, and leads again when the API recovers", "[lease][elector]") {
  const std::string ns = "lease-fail";
  Env env(ns);
  ElectionLog log;
  LeaderElector el(env.control.executor(), env.client, fast(ns, "pod-a", "pod-a"), log.callbacks());
  el.start();
  REQUIRE(wait_until([&] { return el.leading(); }));
  REQUIRE(wait_until([&] { return count_requests(env.fake, "PUT", 200) >= 2; }));  // renewing

  // Every Lease update fails from now on (reads still work: the Lease is ours, but cannot be renewed).
  env.fake.control("POST", "errors", {{"code", 500}, {"method", "PUT"}, {"resource", "leases"}, {"count", 1000000}});
  REQUIRE(wait_until([&] { return log.n_stopped() == 1; }));
  CHECK_FALSE(el.leading());
  CHECK(count_requests(env.fake, "PUT", 500) >= 1);
  // While the API keeps failing it keeps trying, and neither leads nor steps down again.
  const size_t failed = count_requests(env.fake, "PUT", 500);
  REQUIRE(wait_until([&] { return count_requests(env.fake, "PUT", 500) >= failed + 3; }));
  CHECK(log.n_started() == 1);
  CHECK(log.n_stopped() == 1);
  CHECK_FALSE(el.leading());

  env.fake.control("DELETE", "faults");
  REQUIRE(wait_until([&] { return log.n_started() == 2; }));
  CHECK(el.leading());
  CHECK(log.n_stopped() == 1);
  const LeaseRecord r = record(env.fake, ns, "pod-a");
  CHECK(r.holder == "pod-a");
  CHECK(r.lease_transitions == 0);  // always the same holder
  el.stop(false);
  CHECK(log.n_stopped() == 2);
}

TEST_CASE("A leader handles a 409 Conflict (someone else wrote the Lease) by reading it again", "[lease][elector]") {
  const std::string ns = "lease-conflict";
  Env env(ns);
  ElectionLog log;
  LeaderElector el(env.control.executor(), env.client, fast(ns, "pod-a", "pod-a"), log.callbacks());
  el.start();
  REQUIRE(wait_until([&] { return el.leading(); }));
  REQUIRE(wait_until([&] { return count_requests(env.fake, "PUT", 200) >= 2; }));  // renewing from its last write
  CHECK(count_requests(env.fake, "PUT", 409) == 0);

  // Another writer changes the Lease: the leader's next renewal carries a stale resourceVersion.
  auto r = env.fake.request("PATCH", cg::kube::lease_path(ns, "pod-a"), R"({"metadata": {"annotations": {"touched": "yes"}}})",
                            "application/merge-patch+json");
  REQUIRE(r.status == 200);
  const std::string patched_rv = json::parse(r.body)["metadata"]["resourceVersion"];
  REQUIRE(wait_until([&] { return count_requests(env.fake, "PUT", 409) >= 1; }));
  // Read again, renewed on top of the other writer's change (which is kept).
  REQUIRE(wait_until([&] {
    auto j = get_lease(env.fake, ns, "pod-a");
    return std::stoll(j["metadata"]["resourceVersion"].get<std::string>()) > std::stoll(patched_rv) &&
           j["spec"]["holderIdentity"] == "pod-a";
  }));
  json after = get_lease(env.fake, ns, "pod-a");
  CHECK(after["metadata"]["annotations"]["touched"] == "yes");
  CHECK(count_requests(env.fake, "GET", 200) >= 1);
  CHECK(el.leading());
  CHECK(log.n_stopped() == 0);
  CHECK(log.n_started() == 1);
  el.stop(false);
}

// --- LeaseWatcher --------------------------------------------------------------------------------

TEST_CASE("LeaseWatcher reports live Leases, expiry without renewal (by observed time) and deletion", "[lease][watcher]") {
  const std::string ns = "lease-watch";
  Env env(ns);
  const auto now = std::chrono::system_clock::now();
  // pod-b: a 1 s Lease whose writer's clock runs an hour ahead: by its renewTime it would stay valid
  // for an hour, by what we observe it is dead 1 s after we saw it last change.
  create_lease(env.fake, raw_lease(ns, "pod-b", "cg", "pod-b", 1, now + 1h));
  create_lease(env.fake, raw_lease(ns, "pod-c", "cg", "pod-c", 30, now));
  create_lease(env.fake, raw_lease(ns, "released", "cg", "", 30, now));  // seen, not live
  create_lease(env.fake, raw_lease(ns, "other", "other", "x", 30, now));  // outside the selector
  CHECK_FALSE(record(env.fake, ns, "pod-b").expired(now + 2s));

  std::mutex mu;
  std::vector<std::vector<std::string>> seen;  // live() at each on_change
  std::set<std::thread::id> threads;
  std::unique_ptr<LeaseWatcher> w;
  LeaseWatcherOptions wo;
  wo.ns = ns;
  wo.label_selector = "app=cg";
  w = std::make_unique<LeaseWatcher>(env.control.executor(), env.client, wo, [&] {
    auto live = w->live();
    std::lock_guard lk(mu);
    seen.push_back(std::move(live));
    threads.insert(std::this_thread::get_id());
  });
  auto saw = [&](const std::vector<std::string>& want) {
    std::lock_guard lk(mu);
    return std::find(seen.begin(), seen.end(), want) != seen.end();
  };
  auto calls = [&] {
    std::lock_guard lk(mu);
    return seen.size();
  };
  w->start();
  REQUIRE(wait_until([&] { return w->synced(); }));
  REQUIRE(wait_until([&] { return calls() >= 1; }));
  auto records = w->records();
  CHECK(records.count("pod-b") == 1);
  CHECK(records.count("released") == 1);
  CHECK(records.count("other") == 0);
  for (const auto& q : env.fake.requests("resource=leases&method=GET"))
    if (q.value("verb", "") == "list" || q.value("verb", "") == "watch") CHECK(q["query"].value("labelSelector", "") == "app=cg");

  // pod-b expires without any event: an on_change comes from the watcher's timer.
  REQUIRE(wait_until([&] { return saw({"pod-c"}); }));
  CHECK(w->live() == std::vector<std::string>{"pod-c"});
  CHECK(w->records().count("pod-b") == 1);  // still there, just not live
  CHECK(env.fake.requests("resource=leases&method=PUT").empty());  // nobody wrote anything

  // Deletion.
  auto del = env.fake.request("DELETE", cg::kube::lease_path(ns, "pod-c"));
  REQUIRE(del.status == 200);
  REQUIRE(wait_until([&] { return saw({}) && w->records().count("pod-c") == 0; }));
  CHECK(w->live().empty());

  // A per-pod elector keeps its Lease live across several of its 1 s durations; a renewal of pod-b
  // makes it live again (a modification).
  ElectionLog log;
  LeaderElector el(
      env.control.executor(), env.client,
      [&] {
        auto o = fast(ns, "pod-a", "pod-a");
        o.labels = {{"app", "cg"}};
        return o;
      }(),
      log.callbacks());
  el.start();
  REQUIRE(wait_until([&] { return saw({"pod-a"}); }));
  std::this_thread::sleep_for(2500ms);
  CHECK(w->live() == std::vector<std::string>{"pod-a"});
  json b = get_lease(env.fake, ns, "pod-b");
  b["spec"]["renewTime"] = cg::kube::format_micro_time(std::chrono::system_clock::now());
  auto put = env.fake.request("PUT", cg::kube::lease_path(ns, "pod-b"), b.dump());
  REQUIRE(put.status == 200);
  REQUIRE(wait_until([&] { return saw({"pod-a", "pod-b"}); }));
  // ... and dead again a second later, while pod-a lives on.
  REQUIRE(wait_until([&] { return w->live() == std::vector<std::string>{"pod-a"}; }));

  el.stop(true);  // released: no holder, so not live from the moment the watcher sees it
  REQUIRE(wait_until([&] { return w->live().empty(); }));
  w->stop();
  const size_t n = calls();
  create_lease(env.fake, raw_lease(ns, "pod-d", "cg", "pod-d", 30, std::chrono::system_clock::now()));
  std::this_thread::sleep_for(300ms);
  CHECK(calls() == n);  // nothing after stop()
  std::lock_guard lk(mu);
  CHECK(threads.count(std::this_thread::get_id()) == 0);
}
