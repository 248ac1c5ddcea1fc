#include "k8s_status_writer/status_writer.hpp"

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::status {

StatusWriter::StatusWriter(const boost::asio::any_io_executor& control, plane::PlaneIndex& index,
                           session::SessionRegistry& registry, StatusSink& sink, StatusWriterOptions opts)
    : index_(index), registry_(registry), sink_(sink), opts_(opts), started_(steady::now()), timer_(control) {}

StatusWriter::~StatusWriter() { stop(); }

void StatusWriter::start() {
  const bool synced = index_.synced();
  {
    cg::MutexLock lk(mu_);  // nothing else runs yet; taken for the analysis' sake
    started_ = steady::now();
    grace_started_ = synced;
  }
  index_.add_listener([this](const plane::IndexChange& ch) {
    {
      cg::MutexLock lk(mu_);
      // The startup grace counts from the first full view of the CRs: agents cannot connect before
      // it (a slow or unreachable API server at start must not use the grace up).
      if (!grace_started_) {
        grace_started_ = true;
        started_ = steady::now();
      }
      for (const auto& r : ch.changed) by_auth_[{r.plane_type(), r.auth_key()}] = r;
      for (const auto& r : ch.removed) by_auth_.erase({r.plane_type(), r.auth_key()});
    }
    for (const auto& r : ch.changed) enqueue(r, opts_.debounce);
    for (const auto& r : ch.removed) enqueue(r, Duration::zero());
  });
  registry_.subscribe([this](const session::RegistryEvent& ev) {
    {
      cg::MutexLock lk(mu_);
      const auto when = steady::now() + opts_.debounce;
      for (const auto& key : ev.crs)
        if (auto it = by_auth_.find({ev.plane_type, key}); it != by_auth_.end()) schedule_locked(it->second, when);
    }
    wake();
  });
  for (const auto& e : index_.all()) {
    {
      cg::MutexLock lk(mu_);
      by_auth_[{e->cr.ref.plane_type(), e->cr.ref.auth_key()}] = e->cr.ref;
    }
    enqueue(e->cr.ref, Duration::zero());
  }
  wake();
}

void StatusWriter::stop() {
  {
    cg::MutexLock lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  timer_.stop();
}

void StatusWriter::wake() {
  cv_.notify_all();
  if (!pump_posted_.exchange(true)) timer_.post([this] { pump(); });
}

StatusWriterStats StatusWriter::stats() const {
  cg::MutexLock lk(mu_);
  return stats_;
}

void StatusWriter::enqueue(const plane::CrRef& ref, Duration delay) {
  {
    cg::MutexLock lk(mu_);
    schedule_locked(ref, steady::now() + delay);
  }
  wake();
}

void StatusWriter::set_active(bool active) {
  {
    cg::MutexLock lk(mu_);
    if (active_ == active) return;
    active_ = active;
    if (!active) {
      for (auto& [_, k] : keys_) unschedule_locked(k);
    } else {
      for (auto& [_, k] : keys_) {
        k.loaded = false;
        k.written.reset();
      }
    }
  }
  if (active)
    for (const auto& e : index_.all()) enqueue(e->cr.ref, Duration::zero());
  wake();
}

bool StatusWriter::active() const {
  cg::MutexLock lk(mu_);
  return active_;
}

void StatusWriter::schedule_locked(const plane::CrRef& ref, steady::time_point when) {
  if (!active_) return;
  auto& k = keys_[ref];
  if (k.in_flight) {
    k.dirty_in_flight = true;
    return;
  }
  if (k.not_before && when < *k.not_before) when = *k.not_before;
  if (k.due && *k.due <= when) return;
  unschedule_locked(k);
  k.due = when;
  k.due_it = queue_.emplace(when, ref);
}

void StatusWriter::unschedule_locked(KeyState& k) {
  if (k.due) queue_.erase(k.due_it);
  k.due.reset();
}

bool StatusWriter::flush(steady::time_point deadline, bool as_disconnected) {
  {
    cg::MutexLock lk(mu_);
    if (!active_) return true;  // another replica writes
    flushing_ = true;
    as_disconnected_ = as_disconnected;
    for (const auto& e : index_.all()) schedule_locked(e->cr.ref, steady::now());
  }
  wake();
  cg::MutexLock lk(mu_);
  return cv_.wait_until(lk, deadline, [this]() CG_REQUIRES(mu_) {
    auto now = steady::now();
    if (batch_left_ > 0) return false;
    for (const auto& [_, k] : keys_) {
      if (k.in_flight || k.dirty_in_flight) return false;
      // Heartbeat refreshes far in the future do not count; anything due now does.
      if (k.due && *k.due <= now + opts_.debounce) return false;
    }
    return true;
  });
}

void StatusWriter::pump() {
  pump_posted_ = false;  // what is scheduled from here on posts another pump
  cg::MutexLock lk(mu_);
  if (stopping_) return;
  auto now = steady::now();
  std::vector<plane::CrRef> ready;
  while (!queue_.empty() && queue_.begin()->first <= now) {
    ready.push_back(queue_.begin()->second);
    unschedule_locked(keys_[queue_.begin()->second]);
  }
  if (ready.empty()) {
    cv_.notify_all();  // flush() waiters re-check
    if (!queue_.empty()) timer_.run_at(queue_.begin()->first, [this] { pump(); });
    return;
  }
  // Keys taken off the queue are neither due nor in flight until processed: flush() must still
  // wait for them (the lock is released while each is written).
  batch_left_ = ready.size();
  for (const auto& ref : ready) {
    if (stopping_) break;
    process(ref);
    --batch_left_;
  }
  batch_left_ = 0;
  lk.unlock();
  // The next pass is posted: session events and write completions get in between batches, whatever
  // the batches hold.
  wake();
}

// Status times have a resolution of one second, so a CR that shows the truth now may need a
// heartbeat refresh a second later at the earliest; looking again after a tenth of the refresh
// interval (at least 1 s) keeps lastHeartbeatTime within 1.1 intervals of the truth.
Duration StatusWriter::recheck_interval() const {
  return std::max<Duration>(std::chrono::seconds(1), opts_.heartbeat_interval / 10);
}

void StatusWriter::process(const plane::CrRef& ref) {
  if (!active_) return;
  auto it = keys_.find(ref);
  if (it == keys_.end()) return;
  unschedule_locked(it->second);
  auto entry = index_.find(ref);
  if (!entry) {
    keys_.erase(it);
    mu_.unlock();
    sink_.remove(ref);
    mu_.lock();
    return;
  }
  if (!it->second.loaded) {
    it->second.loaded = true;
    if (!entry->cr.status.is_null()) {
      it->second.written = PlaneStatus::from_json(entry->cr.status);
    } else {
      mu_.unlock();
      auto st = sink_.read(ref);
      mu_.lock();
      it = keys_.find(ref);
      if (it == keys_.end()) return;
      it->second.written = st;
    }
  }
  KeyState& k = it->second;
  const PlaneStatus prev = k.written.value_or(PlaneStatus{});
  SpecFacts facts{entry->cr.generation, entry->spec_problems, entry->ca_error, entry->observability_problem};
  const auto now_sys = std::chrono::system_clock::now();
  session::SessionReport report;
  if (as_disconnected_) report.last_zero = now_sys;  // shutting down: every session is going away
  else report = registry_.report(ref.plane_type(), ref.auth_key());
  PlaneStatus desired = compute_status(prev, report, facts, now_sys);
  const auto now = steady::now();
  const bool connected = desired.agent && desired.agent->connected;

  if (k.written && desired == prev) {
    // Nothing to write. A connected CR is looked at again for its heartbeat refresh (pongs raise
    // no events), never in the past: a CR this gateway has not written yet (after a restart the CR
    // already shows the truth) has no last write, and a key due in the past would be taken again at
    // once, forever, while the loop holds the lock.
    if (connected)
      schedule_locked(ref, std::max(k.last_write ? *k.last_write + opts_.heartbeat_interval : now, now + recheck_interval()));
    return;
  }
  const bool hb_only = k.written && only_heartbeat_differs(desired, prev);
  if (hb_only && k.last_write && now < *k.last_write + opts_.heartbeat_interval) {
    schedule_locked(ref, *k.last_write + opts_.heartbeat_interval);
    return;
  }
  if (!flushing_ && prev.agent && prev.agent->connected && !connected && report.moving_until && now_sys < *report.moving_until) {
    // Several replicas: the gateway moved these agents (drain, rebalancing) and they are on their way
    // to another replica: written disconnected only if they are not back by then.
    schedule_locked(ref, now + std::chrono::duration_cast<Duration>(*report.moving_until - now_sys));
    return;
  }
  if (!flushing_ && prev.agent && prev.agent->connected && !connected && !report.last_rise &&
      now < started_ + opts_.startup_grace) {
    // After a restart sessions are gone until agents reconnect: do not flap the CR. The grace is
    // only for what a previous run left connected: once an agent of this run was counted for the CR
    // (last_rise), its leaving is news, written at once like any transition.
    schedule_locked(ref, started_ + opts_.startup_grace);
    return;
  }
  k.in_flight = true;
  log::debug("writing status", {{"cr", ref.auth_key()},
                                {"kind", std::string(plane::info(ref.kind).name)},
                                {"connected", connected},
                                {"heartbeatOnly", hb_only},
                                {"flushing", flushing_}});
  mu_.unlock();
  sink_.write(ref, desired, [this, ref, desired, hb_only](const WriteResult& r) { on_written(ref, desired, r, hb_only); });
  mu_.lock();
}

void StatusWriter::on_written(const plane::CrRef& ref, const PlaneStatus& st, const WriteResult& r, bool hb_only) {
  {
    cg::MutexLock lk(mu_);
    auto it = keys_.find(ref);
    if (it == keys_.end()) return;
    KeyState& k = it->second;
    k.in_flight = false;
    const auto now = steady::now();
    if (r.ok) {
      ++stats_.writes_ok;
      metrics::status_write("ok");
      if (hb_only) ++stats_.writes_heartbeat;
      k.written = st;
      k.last_write = now;
      k.failures = 0;
      k.not_before.reset();
      if (st.agent && st.agent->connected) schedule_locked(ref, now + opts_.heartbeat_interval);
    } else if (r.gone) {
      metrics::status_write("gone");
      unschedule_locked(k);
      keys_.erase(it);
      cv_.notify_all();
      return;  // nothing newly due
    } else {
      ++stats_.writes_failed;
      metrics::status_write("error");
      ++k.failures;
      Duration backoff = opts_.retry_base * (1LL << std::min(k.failures - 1, 10));
      if (backoff > opts_.retry_max) backoff = opts_.retry_max;
      if (r.retry_after && *r.retry_after > backoff) backoff = *r.retry_after;
      nlohmann::json f = {{"cr", ref.auth_key()},
                          {"kind", std::string(plane::info(ref.kind).name)},
                          {"reason", r.error},
                          {"retryInMs", std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count()}};
      // Writes cut off by shutdown will not be retried: one summary line is logged by flush().
      if (stopping_) log::debug("status write cancelled by shutdown", f);
      else log::warn("status write failed; will retry", f);
      unschedule_locked(k);
      k.not_before = now + backoff;
      schedule_locked(ref, now + backoff);
    }
    if (k.dirty_in_flight) {
      k.dirty_in_flight = false;
      schedule_locked(ref, r.ok ? now + opts_.debounce : *k.due);
    }
  }
  wake();
}

}  // namespace cg::status
