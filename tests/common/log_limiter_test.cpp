// LogLimiter: per-key budgets of log lines per window, with a summary line for what was dropped.
// Driven by a manual clock: no sleeps, no wall-clock timing.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "common/log_limiter.hpp"

using cg::log::LogLimiter;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct ManualClock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1000)};
  LogLimiter::Clock fn() {
    return [this] { return now; };
  }
};

struct Capture {
  std::ostringstream out;
  Capture() {
    cg::log::init(cg::log::Level::debug, cg::log::Format::json);
    cg::log::set_output_for_tests(&out);
  }
  ~Capture() {
    cg::log::set_output_for_tests(nullptr);
    cg::log::init(cg::log::Level::error, cg::log::Format::json);
  }
  std::vector<json> take() {
    std::vector<json> v;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) v.push_back(json::parse(l));
    out.str("");
    return v;
  }
};

LogLimiter::Options opts(uint32_t n, std::chrono::milliseconds window = 1000ms, size_t max_keys = 4096) {
  LogLimiter::Options o;
  o.per_window = n;
  o.window = window;
  o.max_keys = max_keys;
  return o;
}

}  // namespace

TEST_CASE("LogLimiter::admit: N lines per key and window, then a count of the dropped ones", "[log][limiter]") {
  ManualClock clk;
  LogLimiter lim(opts(3), clk.fn());

  for (int i = 0; i < 3; ++i) {
    auto d = lim.admit("c1|unknown request");
    CHECK(d.log);
    CHECK(d.dropped == 0);
  }
  int logged = 0;
  for (int i = 0; i < 20000; ++i) logged += lim.admit("c1|unknown request").log;
  CHECK(logged == 0);
  CHECK(lim.dropped_total() == 20000);

  SECTION("another key has its own budget") {
    CHECK(lim.admit("c2|unknown request").log);
    CHECK(lim.admit("c1|other message").log);
  }
  SECTION("still inside the window: still dropped") {
    clk.now += 999ms;
    CHECK_FALSE(lim.admit("c1|unknown request").log);
    CHECK(lim.dropped_total() == 20001);
  }
  SECTION("the window reopens: the first line carries the dropped count, once") {
    clk.now += 1000ms;
    auto d = lim.admit("c1|unknown request");
    CHECK(d.log);
    CHECK(d.dropped == 20000);
    auto d2 = lim.admit("c1|unknown request");
    CHECK(d2.log);
    CHECK(d2.dropped == 0);
    CHECK(lim.admit("c1|unknown request").log);
    CHECK_FALSE(lim.admit("c1|unknown request").log);  // the new window's budget is 3 as well
    clk.now += 5s;
    CHECK(lim.admit("c1|unknown request").dropped == 1);
  }
}

TEST_CASE("LogLimiter::event logs the allowed lines and one summary line with `dropped`", "[log][limiter]") {
  ManualClock clk;
  LogLimiter lim(opts(2), clk.fn());
  Capture cap;
  const json summary = {{"connectionID", "c-7"}, {"planeID", "p1"}};
  for (int i = 0; i < 20000; ++i)
    lim.warn("c-7|frame for unknown request", "frame for unknown request",
             {{"connectionID", "c-7"}, {"planeID", "p1"}, {"requestID", "r" + std::to_string(i)}}, summary);
  auto lines = cap.take();
  REQUIRE(lines.size() == 2);  // not 20,000
  CHECK(lines[0]["requestID"] == "r0");
  CHECK(lines[1]["requestID"] == "r1");
  CHECK(lim.dropped_total() == 19998);

  clk.now += 1s;
  lim.warn("c-7|frame for unknown request", "frame for unknown request", {{"connectionID", "c-7"}, {"requestID", "later"}},
           summary);
  lines = cap.take();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["msg"] == "19998 similar lines dropped");
  CHECK(lines[0]["dropped"] == 19998);
  CHECK(lines[0]["similarTo"] == "frame for unknown request");
  CHECK(lines[0]["connectionID"] == "c-7");
  CHECK(lines[0]["planeID"] == "p1");
  CHECK(lines[0]["level"] == "warning");
  CHECK_FALSE(lines[0].contains("requestID"));  // per-line fields are not in the summary
  CHECK(lines[1]["requestID"] == "later");
}

TEST_CASE("LogLimiter::flush reports pending counts of the keys with a prefix and forgets them", "[log][limiter]") {
  ManualClock clk;
  LogLimiter lim(opts(1), clk.fn());
  Capture cap;
  for (int i = 0; i < 5; ++i) lim.warn("c-1|a", "a", {}, {{"connectionID", "c-1"}});
  for (int i = 0; i < 3; ++i) lim.warn("c-2|a", "a", {}, {{"connectionID", "c-2"}});
  lim.warn("c-1|b", "b", {});  // nothing dropped for this key
  cap.take();
  CHECK(lim.keys() == 3);

  auto pending = lim.flush("c-1|");  // the connection c-1 ended
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].key == "c-1|a");
  CHECK(pending[0].dropped == 4);
  auto lines = cap.take();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["msg"] == "4 similar lines dropped");
  CHECK(lines[0]["dropped"] == 4);
  CHECK(lines[0]["connectionID"] == "c-1");
  CHECK(lim.keys() == 1);  // only c-2's key is left

  CHECK(lim.flush().size() == 1);
  CHECK(lim.keys() == 0);
  CHECK(lim.flush().empty());
}

TEST_CASE("LogLimiter bounds its keys: idle keys are forgotten, busy ones share an overflow key", "[log][limiter]") {
  ManualClock clk;
  LogLimiter lim(opts(1, 1000ms, 4), clk.fn());
  for (int k = 0; k < 4; ++k) {
    CHECK(lim.admit("k" + std::to_string(k)).log);
    CHECK_FALSE(lim.admit("k" + std::to_string(k)).log);  // each has one dropped line pending
  }
  CHECK(lim.keys() == 4);
  // Full and every key busy: new keys share the overflow key's budget.
  CHECK(lim.admit("new-1").log);
  CHECK_FALSE(lim.admit("new-2").log);
  CHECK(lim.keys() == 5);  // the four, plus the overflow key

  // Once the window has passed, keys with nothing pending are forgotten to make room.
  clk.now += 1s;
  for (int k = 0; k < 4; ++k) CHECK(lim.admit("k" + std::to_string(k)).dropped == 1);  // reported: nothing pending
  clk.now += 1s;
  CHECK(lim.admit("fresh").log);
  CHECK(lim.keys() <= 4);
  for (int i = 0; i < 100000; ++i) lim.admit("flood-" + std::to_string(i));
  CHECK(lim.keys() <= 5);
}

TEST_CASE("LogLimiter is safe to share between threads", "[log][limiter]") {
  ManualClock clk;  // never advanced while the threads run
  LogLimiter lim(opts(10), clk.fn());
  std::vector<std::thread> ts;
  std::atomic<uint64_t> logged{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i)
        if (lim.admit("shared").log) ++logged;
    });
  for (auto& t : ts) t.join();
  CHECK(logged == 10);
  CHECK(lim.dropped_total() == 40000 - 10);
}
