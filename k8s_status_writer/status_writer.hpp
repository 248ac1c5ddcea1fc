// Coalesced status writing: a keyed work queue (at most one write in flight per CR, transitions
// written within `debounce`, heartbeat-only refreshes at most once per `heartbeat_interval`,
// retries with backoff), fed by plane-index changes and session-registry events.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "k8s_status_writer/status_sink.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"

namespace cg::status {

struct StatusWriterOptions {
  Duration heartbeat_interval = std::chrono::seconds(30);
  Duration startup_grace = std::chrono::seconds(15);
  Duration debounce = std::chrono::milliseconds(100);
  Duration retry_base = std::chrono::milliseconds(250);
  Duration retry_max = std::chrono::seconds(30);
};

struct StatusWriterStats {
  uint64_t writes_ok = 0;
  uint64_t writes_failed = 0;
  uint64_t writes_heartbeat = 0;  // of writes_ok: heartbeat-only refreshes
};

class StatusWriter {
 public:
  StatusWriter(plane::PlaneIndex& index, session::SessionRegistry& registry, StatusSink& sink, StatusWriterOptions opts);
  ~StatusWriter();
  void start();
  void stop();
  // Disables the startup grace, re-evaluates every CR and waits until nothing is due or in flight.
  // Returns false if `deadline` passed first.
  // With `as_disconnected` (shutdown), every CR is written as if no agent were connected, whether or
  // not sessions have finished closing.
  bool flush(std::chrono::steady_clock::time_point deadline, bool as_disconnected = false);
  void enqueue(const plane::CrRef& ref, Duration delay);
  StatusWriterStats stats() const;

 private:
  using steady = std::chrono::steady_clock;
  struct KeyState {
    std::optional<PlaneStatus> written;
    bool loaded = false;
    steady::time_point last_write{};
    std::optional<steady::time_point> due;
    std::multimap<steady::time_point, plane::CrRef>::iterator due_it;  // valid while `due` is set
    bool in_flight = false;
    bool dirty_in_flight = false;
    int failures = 0;
    // After a failed write: no attempt before this (backoff or Retry-After), whatever else happens.
    std::optional<steady::time_point> not_before;
  };
  void run();
  Duration recheck_interval() const;
  void process(const plane::CrRef& ref, std::unique_lock<std::mutex>& lk);
  void schedule_locked(const plane::CrRef& ref, steady::time_point when);
  void unschedule_locked(KeyState& k);
  void on_written(const plane::CrRef& ref, const PlaneStatus& st, const WriteResult& r, bool heartbeat_only);

  plane::PlaneIndex& index_;
  session::SessionRegistry& registry_;
  StatusSink& sink_;
  StatusWriterOptions opts_;
  steady::time_point started_;  // when the startup grace began: the plane index's first sync
  bool grace_started_ = false;
  size_t batch_left_ = 0;  // keys of the run loop's current batch not processed yet
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<plane::CrRef, KeyState> keys_;
  // Due times in order, so that a wake-up costs O(log n) instead of a scan of every CR.
  std::multimap<steady::time_point, plane::CrRef> queue_;
  // (planeType, CR auth key) → CR, so that a session event finds its CRs without a scan.
  std::map<std::pair<std::string, std::string>, plane::CrRef> by_auth_;
  bool stopping_ = false;
  bool flushing_ = false;
  bool as_disconnected_ = false;
  StatusWriterStats stats_;
  std::thread thread_;
};

}  // namespace cg::status
