// A timer for control work (pollers, appliers, the status writer): owned by one object, on a strand
// of the executor that object was given (in the gateway: the control io_context's one thread;
// docs/architecture.md, "Threads"). It replaces the hand-rolled std::thread + condition_variable loops.
//
// Contract:
// * run_after / run_at / post may be called from any thread; the function always runs on the strand,
//   never inline in the caller.
// * run_after / run_at replace the run scheduled before that has not begun (one pending timed run);
//   post adds a run without touching the timed one.
// * stop() (idempotent): nothing scheduled or posted runs afterwards; a run in progress on the strand
//   has finished when stop() returns. Called from the strand itself it cannot wait and only cancels.
//   The executor must still be running while a started timer is stopped (the owner stops it before
//   the control thread ends); a timer never armed returns at once.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>

#include <boost/asio/any_io_executor.hpp>

namespace cg {

class ControlTimer {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ControlTimer(const boost::asio::any_io_executor& ex);
  ~ControlTimer();
  ControlTimer(const ControlTimer&) = delete;
  ControlTimer& operator=(const ControlTimer&) = delete;

  void run_after(Clock::duration delay, std::function<void()> fn);
  void run_at(Clock::time_point when, std::function<void()> fn);
  void post(std::function<void()> fn);
  // Runs fn on the strand and waits for it (inline when already on the strand); rethrows what fn
  // throws. After stop() fn is not run and false is returned.
  bool run_sync(const std::function<void()>& fn);
  void stop();
  bool running_in_this_thread() const;

 private:
  struct Core;
  std::shared_ptr<Core> core_;
};

}  // namespace cg
