// kube::Informer against the fake Kubernetes API server (a child process), over a generic resource
// (core v1 Secrets in one namespace): nothing here knows plane types. The callbacks are recorded and
// the test waits on them (condition variable) or on the fake's state (bounded polling); no timing
// assertions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kube/client.hpp"
#include "kube/informer.hpp"
#include "tests/support/fake_apiserver.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/pki.hpp"

using cg::kube::EventType;
using cg::kube::Informer;
using cg::kube::InformerSignal;
using cg::kube::KubeClient;
using cg::testing::FakeApiServer;
using cg::testing::IoRunner;
using cg::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr auto kWait = std::chrono::seconds(20);
const std::string kNs = "informer-ns";

json secret(const std::string& ns, const std::string& name, const std::string& value) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"type", "Opaque"},
          {"data", {{"value", cg::testing::base64(value)}}}};
}

std::string name_of(const json& obj) { return obj.at("metadata").at("name").get<std::string>(); }

// Everything the informer's callbacks were given, and how they were called.
struct Recorder {
  struct List {
    std::set<std::string> names;
    std::string resource_version;
    bool typed = true;  // every item had apiVersion v1 and kind Secret
  };
  struct Event {
    EventType type;
    std::string name;
    std::string value;  // data.value (base64)
    bool typed = true;
  };

  std::mutex mu;
  std::condition_variable cv;
  std::vector<List> lists;
  std::vector<Event> events;
  std::vector<InformerSignal> signals;
  std::set<std::thread::id> threads;
  int running = 0;  // callbacks running now
  int overlapped = 0;  // callbacks that started while another one of this informer was running
  const std::thread::id test_thread = std::this_thread::get_id();

  // Runs `record` under the lock, noting the calling thread and whether another callback was running.
  void enter(const std::function<void()>& record) {
    {
      std::lock_guard lk(mu);
      if (running++ > 0) ++overlapped;
      threads.insert(std::this_thread::get_id());
      record();
      cv.notify_all();
    }
    std::this_thread::yield();  // widen the window in which an overlapping callback would be seen
    std::lock_guard lk(mu);
    --running;
  }

  cg::kube::InformerCallbacks callbacks() {
    cg::kube::InformerCallbacks cb;
    cb.on_list = [this](std::vector<json> items, const std::string& rv) {
      enter([&] {
        List l;
        l.resource_version = rv;
        for (const auto& i : items) {
          l.names.insert(name_of(i));
          l.typed = l.typed && i.value("apiVersion", "") == "v1" && i.value("kind", "") == "Secret";
        }
        lists.push_back(std::move(l));
      });
    };
    cb.on_event = [this](EventType type, const json& obj) {
      enter([&] {
        std::string value = obj.contains("data") ? obj["data"].value("value", "") : "";
        events.push_back({type, name_of(obj), value, obj.value("apiVersion", "") == "v1" && obj.value("kind", "") == "Secret"});
      });
    };
    cb.on_signal = [this](InformerSignal s) { enter([&] { signals.push_back(s); }); };
    return cb;
  }

  bool wait(const std::function<bool()>& pred) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, kWait, pred);
  }
  size_t count(InformerSignal s) {  // call with mu held (inside wait predicates) or after the informer stopped
    return static_cast<size_t>(std::count(signals.begin(), signals.end(), s));
  }
  bool has_event(EventType type, const std::string& name) {
    return std::any_of(events.begin(), events.end(), [&](const Event& e) { return e.type == type && e.name == name; });
  }
};

cg::kube::InformerResource secrets_in(const std::string& ns) {
  cg::kube::InformerResource r;
  r.path = "/api/v1/namespaces/" + ns + "/secrets";
  r.api_version = "v1";
  r.kind = "Secret";
  return r;
}

cg::kube::InformerOptions fast_options() {
  cg::kube::InformerOptions o;
  o.backoff_initial = 50ms;
  o.backoff_max = 1s;
  return o;
}

size_t count_requests(FakeApiServer& f, const std::string& query, int status) {
  size_t n = 0;
  for (const auto& r : f.requests(query)) n += r.value("status", 0) == status;
  return n;
}

}  // namespace

TEST_CASE("kube::Informer lists in pages, watches from the list's resourceVersion, relists after 410 Gone", "[kube_informer]") {
  FakeApiServer fake({"--bookmark-interval", "0.3"});
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  for (const char* n : {"a", "b", "c"}) fake.apply(secret(kNs, n, n));
  fake.apply(secret("elsewhere", "other", "x"));  // another namespace: not in the collection
  fake.control("DELETE", "requests");

  Recorder rec;
  auto opts = fast_options();
  opts.page_size = 2;
  auto inf = Informer::create(client, secrets_in(kNs), opts, rec.callbacks());
  inf->start();

  // The LIST: two pages (limit=2, then the continue token), one on_list with the whole set, typed.
  REQUIRE(rec.wait([&] { return rec.lists.size() == 1; }));
  std::string list_rv;
  {
    std::lock_guard lk(rec.mu);
    list_rv = rec.lists[0].resource_version;
    CHECK(rec.lists[0].names == std::set<std::string>{"a", "b", "c"});
    CHECK(rec.lists[0].typed);  // items of a typed list come without apiVersion/kind: filled in
    CHECK_FALSE(rec.lists[0].resource_version.empty());
    CHECK(rec.count(InformerSignal::ListPage) == 1);
    CHECK(rec.count(InformerSignal::Listed) == 1);
    CHECK(rec.threads.count(rec.test_thread) == 0);  // never called inline from start()
  }
  auto lists = fake.requests("verb=list&resource=secrets");
  REQUIRE(lists.size() == 2);
  CHECK(lists[0]["query"].value("limit", "") == "2");
  CHECK(lists[1]["query"].contains("continue"));

  // The WATCH starts from the list's resourceVersion, and ADDED, MODIFIED and DELETED reach on_event.
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  auto watches = fake.requests("verb=watch&resource=secrets");
  REQUIRE(watches.size() == 1);
  CHECK(watches[0]["query"].value("resourceVersion", "") == list_rv);
  CHECK(watches[0]["query"].value("allowWatchBookmarks", "") == "true");
  fake.apply(secret(kNs, "d", "d"));
  fake.apply(secret(kNs, "a", "a2"));
  fake.remove("v1", "Secret", kNs, "b");
  fake.apply(secret("elsewhere", "other-2", "x"));
  REQUIRE(rec.wait([&] { return rec.events.size() >= 3; }));
  {
    std::lock_guard lk(rec.mu);
    REQUIRE(rec.events.size() == 3);
    CHECK((rec.events[0].type == EventType::Added && rec.events[0].name == "d"));
    CHECK((rec.events[1].type == EventType::Modified && rec.events[1].name == "a"));
    CHECK(rec.events[1].value == cg::testing::base64("a2"));
    CHECK((rec.events[2].type == EventType::Deleted && rec.events[2].name == "b"));
    for (const auto& e : rec.events) CHECK(e.typed);
  }

  // 410 Gone: the watches fail (503) while things change and the history is compacted; the re-watch
  // from the old resourceVersion gets an ERROR event with a 410 Status, and the informer relists.
  fake.control("POST", "errors", {{"code", 503}, {"verb", "watch"}, {"count", 100000}});
  fake.control("POST", "drop-watches", {{"mode", "close"}});
  fake.remove("v1", "Secret", kNs, "c");
  fake.apply(secret(kNs, "e", "e"));
  REQUIRE(wait_until([&] { return count_requests(fake, "verb=watch", 503) >= 1; }, kWait));
  fake.control("POST", "compact");
  fake.control("DELETE", "faults");
  REQUIRE(rec.wait([&] { return rec.lists.size() == 2; }));
  {
    std::lock_guard lk(rec.mu);
    CHECK(rec.lists[1].names == std::set<std::string>{"a", "d", "e"});
    CHECK(rec.count(InformerSignal::RelistGone) == 1);
    CHECK(rec.count(InformerSignal::WatchError) >= 1);  // the 503s
    CHECK(rec.count(InformerSignal::Backoff) >= 1);
    CHECK(rec.count(InformerSignal::Listed) == 2);
    // The changes made while the watch was down came with the relist, not as events.
    CHECK_FALSE(rec.has_event(EventType::Deleted, "c"));
    CHECK_FALSE(rec.has_event(EventType::Added, "e"));
  }
  // Watching again from the relist's resourceVersion.
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  fake.apply(secret(kNs, "f", "f"));
  CHECK(rec.wait([&] { return rec.has_event(EventType::Added, "f"); }));

  inf->stop();
  CHECK(inf->inflight()->wait_zero(kWait));
  CHECK(wait_until([&] { return fake.open_watches() == 0; }, kWait));  // stop() closed the watch
  size_t seen = 0;
  {
    std::lock_guard lk(rec.mu);
    CHECK(rec.overlapped == 0);  // one callback at a time
    CHECK(rec.threads.count(rec.test_thread) == 0);
    seen = rec.events.size() + rec.lists.size() + rec.signals.size();
  }
  fake.apply(secret(kNs, "g", "g"));  // after stop(): no callback
  client.shutdown();
  io.stop();
  std::lock_guard lk(rec.mu);
  CHECK(rec.events.size() + rec.lists.size() + rec.signals.size() == seen);
}

TEST_CASE("kube::Informer restarts a silently stalled watch from its last resourceVersion, without relisting",
          "[kube_informer][rude]") {
  FakeApiServer fake({"--bookmark-interval", "0.3"});
  IoRunner io;
  KubeClient client(io.ioc(), fake.kube_config());
  fake.apply(secret(kNs, "a", "a"));

  Recorder rec;
  auto opts = fast_options();
  opts.watch_timeout = 1s;  // timeoutSeconds in [1, 2)
  opts.watch_idle_margin = 1s;  // so a silent watch is given up after 2 to 3 s
  auto res = secrets_in(kNs);
  res.field_selector = "metadata.name=a";  // and only that one secret
  auto inf = Informer::create(client, res, opts, rec.callbacks());
  inf->start();
  REQUIRE(rec.wait([&] { return rec.lists.size() == 1; }));
  REQUIRE(wait_until([&] { return fake.open_watches() == 1; }, kWait));
  CHECK(fake.requests("verb=watch&resource=secrets")[0]["query"].value("fieldSelector", "") == "metadata.name=a");

  // Stall the open watch (it may be between two watches: then try again).
  REQUIRE(wait_until(
      [&] {
        return fake.control("POST", "stall-watches", {{"resource", "secrets"}})["stalled"].get<int>() == 1;
      },
      kWait));
  // Changes while it is stalled: only a restarted watch can bring them (a stalled watch does not even
  // end at its timeoutSeconds). The other secret is outside the field selector.
  fake.apply(secret(kNs, "b", "b"));
  fake.apply(secret(kNs, "a", "a-after-stall"));
  REQUIRE(rec.wait([&] {
    return std::any_of(rec.events.begin(), rec.events.end(), [](const Recorder::Event& e) {
      return e.type == EventType::Modified && e.value == cg::testing::base64("a-after-stall");
    });
  }));
  inf->stop();
  CHECK(inf->inflight()->wait_zero(kWait));
  {
    std::lock_guard lk(rec.mu);
    CHECK(rec.count(InformerSignal::WatchIdle) >= 1);
    CHECK(rec.lists.size() == 1);  // restarted from the last resourceVersion, not relisted
    CHECK(rec.count(InformerSignal::RelistGone) == 0);
    CHECK_FALSE(rec.has_event(EventType::Added, "b"));  // outside the field selector
    CHECK(rec.overlapped == 0);
    CHECK(rec.threads.count(rec.test_thread) == 0);
  }
  CHECK(fake.requests("verb=list&resource=secrets").size() == 1);
  client.shutdown();
  io.stop();
}
