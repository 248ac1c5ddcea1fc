// ControlTimer (common/control_timer.hpp): the contract the control objects rely on. Waits on
// events (promises), never on sleeps.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/control_timer.hpp"
#include "tests/support/control_thread.hpp"

using cg::ControlTimer;
using namespace std::chrono_literals;

TEST_CASE("ControlTimer posts to its strand, never inline", "[control_timer]") {
  cg::testing::ControlThread control;
  ControlTimer t(control.executor());
  std::promise<std::thread::id> ran;
  t.post([&] { ran.set_value(std::this_thread::get_id()); });
  CHECK(ran.get_future().get() != std::this_thread::get_id());
  // From the strand itself: queued behind the running function, not run inside it.
  std::vector<int> order;
  t.run_sync([&] {
    t.post([&] { order.push_back(2); });
    order.push_back(1);
  });
  t.run_sync([] {});  // the post above ran before this (one strand, in order)
  CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("ControlTimer: a later run_after replaces the one not yet begun", "[control_timer]") {
  cg::testing::ControlThread control;
  ControlTimer t(control.executor());
  std::atomic<int> first{0};
  std::promise<void> second;
  t.run_after(1h, [&] { ++first; });
  t.run_after(0ms, [&] { second.set_value(); });
  second.get_future().get();
  t.stop();
  CHECK(first == 0);
}

TEST_CASE("ControlTimer::stop waits for the run in progress, then nothing runs", "[control_timer]") {
  cg::testing::ControlThread control;
  ControlTimer t(control.executor());
  std::promise<void> started, release;
  std::atomic<bool> finished{false};
  std::atomic<int> later{0};
  t.post([&] {
    started.set_value();
    release.get_future().wait();
    finished = true;
  });
  t.run_after(1h, [&] { ++later; });
  started.get_future().get();
  std::atomic<bool> finished_when_stop_returned{false};
  std::thread stopper([&] {
    t.stop();
    finished_when_stop_returned = finished.load();
  });
  release.set_value();
  stopper.join();
  CHECK(finished_when_stop_returned);
  t.post([&] { ++later; });
  t.run_at(ControlTimer::Clock::now(), [&] { ++later; });
  CHECK_FALSE(t.run_sync([&] { ++later; }));
  // Another strand on the same thread as a barrier: whatever was queued before has run.
  ControlTimer barrier(control.executor());
  CHECK(barrier.run_sync([] {}));
  CHECK(later == 0);
  t.stop();  // idempotent
}

TEST_CASE("ControlTimer::run_sync runs on the strand and rethrows", "[control_timer]") {
  cg::testing::ControlThread control;
  ControlTimer t(control.executor());
  bool on_strand = false;
  CHECK(t.run_sync([&] { on_strand = t.running_in_this_thread(); }));
  CHECK(on_strand);
  CHECK_FALSE(t.running_in_this_thread());
  CHECK_THROWS_WITH(t.run_sync([] { throw std::runtime_error("boom"); }), "boom");
}

TEST_CASE("ControlTimer: stop from the strand cancels without waiting, a timer never armed stops at once", "[control_timer]") {
  cg::testing::ControlThread control;
  {
    ControlTimer idle(control.executor());
    idle.stop();
    idle.post([] { FAIL("ran after stop"); });
  }
  ControlTimer t(control.executor());
  std::atomic<int> later{0};
  t.run_after(1h, [&] { ++later; });
  CHECK(t.run_sync([&] { t.stop(); }));
  CHECK_FALSE(t.run_sync([&] { ++later; }));
  ControlTimer barrier(control.executor());
  CHECK(barrier.run_sync([] {}));
  CHECK(later == 0);
}
