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
  bool remove(const AgentHandle& h) override { return r_->remove(h); }
  std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h, std::set<std::string> a) override {
    return r_->set_authorized(h, std::move(a));
  }
  std::vector<cg::session::SessionView> sessions_of(const std::string& t, const std::string& id) const override {
    return r_->sessions_of(t, id);
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
  std::shared_ptr<AgentHandle> pick(const std::string& t, const std::string& id, const std::string& key, bool& has,
                                    std::string_view cap, bool* authorized) override {
    return r_->pick(t, id, key, has, cap, authorized);
  }
  void subscribe(Listener l) override { r_->subscribe(std::move(l)); }
  mutable std::atomic<long> reports{0};

 private:
  std::unique_ptr<cg::session::SessionRegistry> r_ = cg::session::make_local_registry();
};

PlaneWorld one_cr(const std::string& ca_pem, const json& status) {
  json obj = {{"apiVersion", "openchoreo.dev/v1alpha1"},
              {"kind", "ClusterDataPlane"},
              {"metadata", {{"name", "p1"}, {"generation", 3}}},
              {"spec", {{"planeID", "p1"}, {"clusterAgent", {{"clientCA", {{"value", ca_pem}}}}}}}};
  if (!status.is_null()) obj["status"] = status;
  auto parsed = cg::plane::parse_object(obj);
  REQUIRE(parsed.cr.has_value());
  PlaneWorld w;
  w.crs.push_back(*parsed.cr);
  return w;
}

}  // namespace

TEST_CASE("a CR that already shows the truth is left alone and the writer stays responsive", "[status][writer]") {
  // After a restart the CR still carries what the previous gateway wrote. When the agent is back and
  // the status computed now is exactly that one (same second, same heartbeat), there is nothing to
  // write, and this gateway has never written the CR: its next look must not be due in the past, or
  // the writer's loop would take the CR again and again while holding its lock (every session event
  // and every write completion then waits on that lock: the whole gateway stalls).
  const auto ca = cg::testing::make_ca("writer test CA");
  const SysTime seen = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()) -
                       std::chrono::hours(1);
  PlaneIndex index;
  index.replace(one_cr(ca.cert_pem(), nullptr));
  auto entry = index.all().at(0);
  cg::session::SessionReport rep;
  rep.connected_agents = 1;
  rep.last_seen = seen;
  rep.last_rise = seen;
  const cg::status::SpecFacts facts{entry->cr.generation, entry->spec_problems, entry->ca_error,
                                    entry->observability_problem};
  const PlaneStatus truth = cg::status::compute_status(PlaneStatus{}, rep, facts, seen);
  REQUIRE(truth.agent->connected);
  index.replace(one_cr(ca.cert_pem(), truth.to_json()));

  auto registry = std::make_unique<CountingRegistry>();
  REQUIRE(registry->add(std::make_shared<cg::testing::FakeHandle>(1, "dataplane", "p1", seen, seen), {index.all().at(0)->cr.ref.auth_key()}));
  CountingSink sink;
  StatusWriterOptions opts;
  opts.startup_grace = std::chrono::seconds(0);
  opts.heartbeat_interval = std::chrono::seconds(30);
  auto writer = std::make_unique<StatusWriter>(index, *registry, sink, opts);
  writer->start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the writer has looked at the CR

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
  CHECK(registry->reports < 10);  // looked at once, not in a loop
  writer->stop();
}
