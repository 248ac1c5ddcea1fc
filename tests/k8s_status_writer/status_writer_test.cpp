// StatusWriter: the coalescing work queue in front of a status sink.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "k8s_status_writer/status_writer.hpp"
#include "plane_index/index.hpp"
#include "tests/support/control_thread.hpp"
#include "tests/support/fake_handle.hpp"
#include "tests/support/pki.hpp"

using cg::SysTime;
using cg::plane::PlaneIndex;
using cg::plane::PlaneWorld;
using cg::session::AgentHandle;
using cg::status::PlaneStatus;
using cg::status::StatusWriter;
using cg::status::StatusWriterOptions;
using cg::status::WriteResult;
using json = nlohmann::json;

namespace {

const bool kQuietLogs = [] {
  if (!std::getenv("CG_TEST_LOG")) cg::log::init(cg::log::Level::error, cg::log::Format::json);
  return true;
}();

class CountingSink final : public cg::status::StatusSink {
 public:
  std::optional<PlaneStatus> read(const cg::plane::CrRef&) override { return std::nullopt; }
  void write(const cg::plane::CrRef&, const PlaneStatus&, std::function<void(WriteResult)> done) override {
    ++writes;
    WriteResult r;
    r.ok = true;
    done(r);
  }
  void remove(const cg::plane::CrRef&) override {}
  std::atomic<int> writes{0};
};

// The local registry, counting how often status asks for a CR's report (once per look at the CR).
class CountingRegistry final : public cg::session::SessionRegistry {
 public:
  bool add(std::shared_ptr<AgentHandle> h, std::set<std::string> a) override { return r_->add(std::move(h), std::move(a)); }
  void close_admission() override { r_->close_admission(); }
  bool begin_close(const AgentHandle& h, cg::session::CloseCause c) override { return r_->begin_close(h, c); }
  bool remove(const AgentHandle& h) override { return r_->remove(h); }
  std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h, std::set<std::string> a) override {
    return r_->set_authorized(h, std::move(a));
  }
  std::vector<cg::session::SessionView> sessions_of(const std::string& t, const std::string& id) const override {
    return r_->sessions_of(t, id);
  }
  size_t plane_session_count(const std::string& t, const std::string& id) const override {
    return r_->plane_session_count(t, id);
  }
  std::vector<cg::session::SessionView> all() const override { return r_->all(); }
  size_t size() const override { return r_->size(); }
  cg::session::SessionReport report(const std::string& t, const std::string& key) const override {
    ++reports;
    return r_->report(t, key);
  }
  cg::session::SessionReport plane_report(const std::string& t, const std::string& id) const override {
    return r_->plane_report(t, id);
  }
  std::shared_ptr<AgentHandle> pick(const std::string& t, const std::string& id, const std::string& key,
                                    cg::session::PickMiss& miss, std::string_view cap) override {
    return r_->pick(t, id, key, miss, cap);
  }
  void heard(const AgentHandle& h, cg::SysTime at) override { r_->heard(h, at); }
  void subscribe(Listener l) override { r_->subscribe(std::move(l)); }
  mutable std::atomic<long> reports{0};

 private:
  std::unique_ptr<cg::session::SessionRegistry> r_ = cg::session::make_local_registry();
};

cg::plane::PlaneCR cr_object(const std::string& name, const std::string& ca_pem, const json& status) {
  json obj = {{"apiVersion", "openchoreo.dev/v1alpha1"},
              {"kind", "ClusterDataPlane"},
              {"metadata", {{"name", name}, {"generation", 3}}},
              {"spec", {{"planeID", name}, {"clusterAgent", {{"clientCA", {{"value", ca_pem}}}}}}}};
  if (!status.is_null()) obj["status"] = status;
  auto parsed = cg::plane::parse_object(obj);
  REQUIRE(parsed.cr.has_value());
  return *parsed.cr;
}

PlaneWorld one_cr(const std::string& ca_pem, const json& status) {
  PlaneWorld w;
  w.crs.push_back(cr_object("p1", ca_pem, status));
  return w;
}

// Records every write per CR name; a test waits for the write it expects.
class RecordingSink final : public cg::status::StatusSink {
 public:
  std::optional<PlaneStatus> read(const cg::plane::CrRef&) override { return std::nullopt; }
  void write(const cg::plane::CrRef& ref, const PlaneStatus& st, std::function<void(WriteResult)> done) override {
    {
      std::lock_guard lk(mu_);
      writes_[ref.name].push_back(st);
    }
    cv_.notify_all();
    WriteResult r;
    r.ok = true;
    done(r);
  }
  void remove(const cg::plane::CrRef&) override {}
  std::vector<PlaneStatus> writes(const std::string& name) {
    std::lock_guard lk(mu_);
    return writes_[name];
  }
  // Waits (bounded) until some write of `name` satisfies `pred`.
  bool wait_for(const std::string& name, const std::function<bool(const PlaneStatus&)>& pred) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(10), [&] {
      for (const auto& st : writes_[name])
        if (pred(st)) return true;
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<PlaneStatus>> writes_;
};

}  // namespace

TEST_CASE("a CR that already shows the truth is left alone and the writer stays responsive", "[status][writer]") {
  // After a restart the CR still carries what the previous gateway wrote. When the agent is back and
  // the status computed now is exactly that one (same second, same heartbeat), there is nothing to
  // write, and this gateway has never written the CR: its next look must not be due in the past, or
  // the writer's loop would take the CR again and again while holding its lock (every session event
  // and every write completion then waits on that lock: the whole gateway stalls).
  const auto ca = cg::testing::make_ca("writer test CA");
  const SysTime seen =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()) - std::chrono::hours(1);
  PlaneIndex index;
  index.replace(one_cr(ca.cert_pem(), nullptr));
  auto entry = index.all().at(0);
  cg::session::SessionReport rep;
  rep.connected_agents = 1;
  rep.last_seen = seen;
  rep.last_rise = seen;
  const cg::status::SpecFacts facts{entry->cr.generation, entry->spec_problems, entry->ca_error, entry->observability_problem};
  const PlaneStatus truth = cg::status::compute_status(PlaneStatus{}, rep, facts, seen);
  REQUIRE(truth.agent->connected);
  index.replace(one_cr(ca.cert_pem(), truth.to_json()));

  auto registry = std::make_unique<CountingRegistry>();
  REQUIRE(registry->add(std::make_shared<cg::testing::FakeHandle>(1, "dataplane", "p1", seen, seen),
                        {index.all().at(0)->cr.ref.auth_key()}));
  CountingSink sink;
  StatusWriterOptions opts;
  opts.startup_grace = std::chrono::seconds(0);
  opts.heartbeat_interval = std::chrono::seconds(30);
  cg::testing::ControlThread control;
  auto writer = std::make_unique<StatusWriter>(control.executor(), index, *registry, sink, opts);
  writer->start();
  // Wait until the writer has looked at the CR (it asks the registry for the CR's report once per
  // look), so that what follows checks the state after that look, not before it.
  const auto look_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (registry->reports == 0 && std::chrono::steady_clock::now() < look_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(registry->reports >= 1);

  // stats() takes the writer's lock: it must come back. A writer stuck holding the lock can be
  // neither joined nor destroyed, so the test process ends here rather than hang.
  auto probe = std::make_shared<std::promise<cg::status::StatusWriterStats>>();
  auto got = probe->get_future();
  std::thread([w = writer.get(), probe] { probe->set_value(w->stats()); }).detach();
  if (got.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: the status writer kept its lock for 5 s (spinning on a CR due in the past)\n");
    std::_Exit(1);
  }
  CHECK(got.get().writes_ok == 0);
  CHECK(sink.writes == 0);  // the CR shows the truth already
  // Looked at once, not in a loop: the next look is due a recheck interval (at least 1 s) later, so
  // within 1.5 s there are at most 3 looks; a CR rescheduled in the past is looked at again at once,
  // thousands of times a second. (The wait runs out when the writer is right.)
  const auto loop_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (registry->reports < 10 && std::chrono::steady_clock::now() < loop_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(registry->reports < 10);
  writer->stop();
}

TEST_CASE("startup grace: only what a previous run left connected is held, and this run's disconnects are written at once",
          "[status][writer][grace]") {
  // Two CRs that a previous run left connected. "mine" gets an agent in this run, which then goes
  // away; "left" never sees one. Within a long grace, "left" must not be written disconnected
  // (its agent may still be reconnecting after the restart), while "mine"'s disconnect is news and
  // is written at once, like any transition. (Before the fix both waited for the grace to end.)
  const auto ca = cg::testing::make_ca("grace test CA");
  const SysTime before =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()) - std::chrono::minutes(5);
  cg::session::SessionReport rep;
  rep.connected_agents = 1;
  rep.last_seen = before;
  rep.last_rise = before;
  const PlaneStatus left_connected = cg::status::compute_status(PlaneStatus{}, rep, cg::status::SpecFacts{3, {}, "", ""}, before);
  REQUIRE(left_connected.agent->connected);
  PlaneIndex index;
  PlaneWorld w;
  w.crs.push_back(cr_object("mine", ca.cert_pem(), left_connected.to_json()));
  w.crs.push_back(cr_object("left", ca.cert_pem(), left_connected.to_json()));
  index.replace(w);
  std::string mine_key, left_key;
  for (const auto& e : index.all()) (e->cr.ref.name == "mine" ? mine_key : left_key) = e->cr.ref.auth_key();

  auto registry = cg::session::make_local_registry();
  RecordingSink sink;
  StatusWriterOptions opts;
  opts.startup_grace = std::chrono::hours(1);
  opts.heartbeat_interval = std::chrono::hours(1);
  cg::testing::ControlThread control;
  StatusWriter writer(control.executor(), index, *registry, sink, opts);
  writer.start();

  const SysTime now = std::chrono::system_clock::now();
  auto agent = std::make_shared<cg::testing::FakeHandle>(1, "dataplane", "mine", now, now);
  REQUIRE(registry->add(agent, {mine_key}));
  REQUIRE(sink.wait_for("mine", [](const PlaneStatus& st) { return st.agent && st.agent->connected; }));
  REQUIRE(registry->begin_close(*agent, cg::session::CloseCause::connection_lost));
  CHECK(sink.wait_for("mine", [](const PlaneStatus& st) {
    return st.agent && !st.agent->connected && st.agent->connected_agents == 0 && st.agent->last_disconnected;
  }));
  registry->remove(*agent);
  // "left" was looked at first (due at start, before the agent connected) and held by the grace.
  for (const auto& st : sink.writes("left")) CHECK((st.agent && st.agent->connected));
  // Shutdown's flush ends the grace: then "left" is written disconnected too.
  REQUIRE(writer.flush(std::chrono::steady_clock::now() + std::chrono::seconds(10), true));
  CHECK(sink.wait_for("left", [](const PlaneStatus& st) { return st.agent && !st.agent->connected; }));
  writer.stop();
}
