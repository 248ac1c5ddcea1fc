#include <catch2/catch.hpp>

#include "session/agent_session.hpp"

using namespace std::chrono_literals;
using cg::session::heartbeat_align;
using steady = std::chrono::steady_clock;

namespace {
steady::time_point at(std::chrono::nanoseconds since) {
  return steady::time_point(std::chrono::duration_cast<steady::duration>(since));
}
}  // namespace

TEST_CASE("heartbeat times are rounded up to a grid of 1/8 of the interval, at most 250 ms", "[session][heartbeat]") {
  // 30 s interval: grid 250 ms.
  CHECK(heartbeat_align(at(10s + 1ms), 30s) == at(10250ms));
  CHECK(heartbeat_align(at(10s + 249ms), 30s) == at(10250ms));
  CHECK(heartbeat_align(at(10250ms), 30s) == at(10250ms));  // already on the grid
  // 1 s interval: grid 125 ms.
  CHECK(heartbeat_align(at(5s + 1ms), 1s) == at(5125ms));
  CHECK(heartbeat_align(at(5s + 126ms), 1s) == at(5250ms));
  // Two sessions due a few milliseconds apart share one expiry.
  CHECK(heartbeat_align(at(42s + 3ms), 30s) == heartbeat_align(at(42s + 170ms), 30s));
  // Very short intervals (tests) are not rounded.
  CHECK(heartbeat_align(at(7s + 3ms), 8ms) == at(7s + 3ms));
}

TEST_CASE("an aligned heartbeat time is never early and at most one grid step late", "[session][heartbeat]") {
  for (auto interval : {std::chrono::nanoseconds(100ms), std::chrono::nanoseconds(1s), std::chrono::nanoseconds(30s),
                        std::chrono::nanoseconds(5min)}) {
    auto step = std::min<std::chrono::nanoseconds>(interval / 8, 250ms);
    for (int64_t ns : {int64_t(0), int64_t(1), int64_t(999'999'937), int64_t(123'456'789'012)}) {
      auto t = at(std::chrono::nanoseconds(ns));
      auto a = heartbeat_align(t, interval);
      CHECK(a >= t);
      CHECK(a - t < step);
    }
  }
}
