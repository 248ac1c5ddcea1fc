// Coalesced status writing: a keyed work queue (at most one write in flight per CR, transitions
// written within `debounce`, heartbeat-only refreshes at most once per `heartbeat_interval`,
// retries with backoff), fed by plane-index changes and session-registry events.
//
// The queue is worked by pump() on a ControlTimer on the executor given (the gateway's control
// thread): timed for the earliest due key, posted by every event that schedules a key. The sink's
// calls may block (the file sink writes and renames files synchronously), which is why the gateway
// gives a dedicated control thread rather than a strand of the io pool.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>

#include <boost/asio/any_io_executor.hpp>

#include "common/control_timer.hpp"
#include "common/thread_annotations.hpp"
#include "k8s_status_writer/status_sink.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"

namespace cg::status {

struct StatusWriterOptions {
  Duration heartbeat_interval = std::chrono::seconds(30);
  // For this long after the plane index's first sync, a CR that a previous run left connected is not
  // written disconnected while no agent of this run has been counted for it (agents reconnecting
  // after a restart). A disconnect of an agent that connected in this run is written at once.
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
  // `control` must keep running until stop() returned.
  StatusWriter(const boost::asio::any_io_executor& control, plane::PlaneIndex& index, session::SessionRegistry& registry,
               StatusSink& sink, StatusWriterOptions opts);
  ~StatusWriter();
  void start();
  void stop();  // idempotent; a pass of the queue in progress has finished when it returns
  // Disables the startup grace, re-evaluates every CR and waits until nothing is due or in flight.
  // Returns false if `deadline` passed first.
  // With `as_disconnected` (shutdown), every CR is written as if no agent were connected, whether or
  // not sessions have finished closing. Not from the control executor (it waits for the pump).
  bool flush(std::chrono::steady_clock::time_point deadline, bool as_disconnected = false);
  void enqueue(const plane::CrRef& ref, Duration delay);
  // Several replicas: only the elected one writes. Inactive, nothing is scheduled or written (writes
  // in flight finish) and flush() returns at once. Activated, every CR is read again (another
  // replica wrote it meanwhile) and evaluated now. Active unless told otherwise.
  void set_active(bool active);
  bool active() const;
  StatusWriterStats stats() const;

 private:
  using steady = std::chrono::steady_clock;
  struct KeyState {
    std::optional<PlaneStatus> written;
    bool loaded = false;
    // This run's last write of the CR; none yet after a start (not the steady clock's epoch, which is
    // the machine's boot: "a heartbeat interval after the epoch" is still ahead on a machine up for
    // less than that, and the first refresh after a restart waited for it).
    std::optional<steady::time_point> last_write;
    std::optional<steady::time_point> due;
    std::multimap<steady::time_point, plane::CrRef>::iterator due_it;  // valid while `due` is set
    bool in_flight = false;
    bool dirty_in_flight = false;
    int failures = 0;
    // After a failed write: no attempt before this (backoff or Retry-After), whatever else happens.
    std::optional<steady::time_point> not_before;
  };
  void pump();  // on the timer's strand: writes what is due, then waits (timed) for the next
  void wake() CG_EXCLUDES(mu_);  // any thread, without mu_: flush() waiters re-check, a pump is posted
  Duration recheck_interval() const;
  // Called with mu_ held; releases it around the sink calls and holds it again when it returns.
  void process(const plane::CrRef& ref) CG_REQUIRES(mu_);
  void schedule_locked(const plane::CrRef& ref, steady::time_point when) CG_REQUIRES(mu_);
  void unschedule_locked(KeyState& k) CG_REQUIRES(mu_);
  void on_written(const plane::CrRef& ref, const PlaneStatus& st, const WriteResult& r, bool heartbeat_only);

  plane::PlaneIndex& index_;
  session::SessionRegistry& registry_;
  StatusSink& sink_;
  StatusWriterOptions opts_;
  steady::time_point started_;  // when the startup grace began: the plane index's first sync
  bool grace_started_ CG_GUARDED_BY(mu_) = false;
  size_t batch_left_ CG_GUARDED_BY(mu_) = 0;  // keys of the pump's current batch not processed yet
  // Guards everything below and the two fields above (index listener and registry events on any
  // thread, write completions on the sink's threads, the pump on the control thread).
  // Order: mu_ → LocalRegistry::mu_ (registry_.report()) and mu_ → PlaneIndex::mu_ (index_.find(), all()).
  mutable cg::Mutex mu_;
  std::condition_variable_any cv_;  // flush() waiters; waits on a cg::MutexLock
  std::map<plane::CrRef, KeyState> keys_ CG_GUARDED_BY(mu_);
  // Due times in order, so that a wake-up costs O(log n) instead of a scan of every CR.
  std::multimap<steady::time_point, plane::CrRef> queue_ CG_GUARDED_BY(mu_);
  // (planeType, CR auth key) → CR, so that a session event finds its CRs without a scan.
  std::map<std::pair<std::string, std::string>, plane::CrRef> by_auth_ CG_GUARDED_BY(mu_);
  bool stopping_ CG_GUARDED_BY(mu_) = false;
  bool active_ CG_GUARDED_BY(mu_) = true;
  bool flushing_ CG_GUARDED_BY(mu_) = false;
  bool as_disconnected_ CG_GUARDED_BY(mu_) = false;
  StatusWriterStats stats_ CG_GUARDED_BY(mu_);
  std::atomic<bool> pump_posted_{false};  // a pump is posted and has not begun: wake() need not post
  ControlTimer timer_;
};

}  // namespace cg::status
