#include "common/control_timer.hpp"

#include <exception>
#include <future>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "common/no_throw.hpp"

namespace cg {
namespace asio = boost::asio;

struct ControlTimer::Core {
  enum class State { idle, armed, stopped };
  explicit Core(const asio::any_io_executor& ex) : strand(asio::make_strand(ex)), timer(strand) {}
  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer timer;  // touched on the strand only
  uint64_t generation = 0;  // on the strand: a timed run counts only if no later one replaced it
  bool stopped = false;  // on the strand
  // Off the strand: whether stop() must wait (never armed: nothing can run) and stop() only once.
  std::atomic<State> state{State::idle};
};

ControlTimer::ControlTimer(const asio::any_io_executor& ex) : core_(std::make_shared<Core>(ex)) {}

ControlTimer::~ControlTimer() {
  no_throw("ControlTimer::~ControlTimer", [this] { stop(); });
}

bool ControlTimer::running_in_this_thread() const { return core_->strand.running_in_this_thread(); }

void ControlTimer::run_after(Clock::duration delay, std::function<void()> fn) { run_at(Clock::now() + delay, std::move(fn)); }

void ControlTimer::run_at(Clock::time_point when, std::function<void()> fn) {
  auto expected = Core::State::idle;
  core_->state.compare_exchange_strong(expected, Core::State::armed);
  if (expected == Core::State::stopped) return;
  asio::post(core_->strand, [core = core_, when, fn = std::move(fn)]() mutable {
    if (core->stopped) return;
    const uint64_t gen = ++core->generation;
    core->timer.expires_at(when);
    core->timer.async_wait([core, gen, fn = std::move(fn)](boost::system::error_code ec) {
      if (ec || core->stopped || gen != core->generation) return;
      fn();
    });
  });
}

void ControlTimer::post(std::function<void()> fn) {
  auto expected = Core::State::idle;
  core_->state.compare_exchange_strong(expected, Core::State::armed);
  if (expected == Core::State::stopped) return;
  asio::post(core_->strand, [core = core_, fn = std::move(fn)] {
    if (!core->stopped) fn();
  });
}

bool ControlTimer::run_sync(const std::function<void()>& fn) {
  if (core_->strand.running_in_this_thread()) {
    if (core_->stopped) return false;
    fn();
    return true;
  }
  auto expected = Core::State::idle;
  core_->state.compare_exchange_strong(expected, Core::State::armed);
  if (expected == Core::State::stopped) return false;
  std::promise<bool> done;
  auto result = done.get_future();
  asio::post(core_->strand, [core = core_, &fn, &done] {
    if (core->stopped) return done.set_value(false);
    try {
      fn();
      done.set_value(true);
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  return result.get();
}

void ControlTimer::stop() {
  const auto was = core_->state.exchange(Core::State::stopped);
  if (was == Core::State::stopped) return;
  auto cancel = [core = core_] {
    core->stopped = true;
    core->timer.cancel();
  };
  if (was == Core::State::idle) {
    // Never armed: no handler of ours is queued, so the strand is free; cancel with no wait.
    core_->stopped = true;
    return;
  }
  if (core_->strand.running_in_this_thread()) return cancel();
  std::promise<void> done;
  asio::post(core_->strand, [&] {
    cancel();
    done.set_value();
  });
  done.get_future().wait();
}

}  // namespace cg
