#include "common/log_limiter.hpp"

#include <algorithm>

namespace cg::log {
namespace {
const std::string kOverflowKey = "(overflow)";
}

LogLimiter::LogLimiter(Options opts, Clock clock) : opts_(opts), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return std::chrono::steady_clock::now(); };
  opts_.per_window = std::max<uint32_t>(opts_.per_window, 1);
  opts_.max_keys = std::max<size_t>(opts_.max_keys, 1);
}

std::string LogLimiter::summary_message(uint64_t dropped) { return std::to_string(dropped) + " similar lines dropped"; }

LogLimiter::KeyState* LogLimiter::slot_locked(std::string_view key, std::chrono::steady_clock::time_point now) {
  std::string k(key);
  if (auto it = keys_.find(k); it != keys_.end()) return &it->second;
  if (keys_.size() >= opts_.max_keys) {
    for (auto it = keys_.begin(); it != keys_.end();) {
      const bool idle = it->second.dropped == 0 && now - it->second.window_start >= opts_.window;
      it = idle ? keys_.erase(it) : std::next(it);
    }
    if (keys_.size() >= opts_.max_keys) k = kOverflowKey;  // every slot busy: new keys share one
  }
  auto [it, fresh] = keys_.try_emplace(k);
  if (fresh) it->second.window_start = now;
  return &it->second;
}

LogLimiter::Decision LogLimiter::admit_locked(std::string_view key, std::chrono::steady_clock::time_point now, KeyState*& st) {
  Decision d;
  st = slot_locked(key, now);
  if (now - st->window_start >= opts_.window) {  // a new window: the budget is back
    st->window_start = now;
    st->in_window = 0;
  }
  if (st->in_window < opts_.per_window) {
    ++st->in_window;
    d.log = true;
    d.dropped = st->dropped;  // reported with this line
    st->dropped = 0;
  } else {
    ++st->dropped;
    ++dropped_total_;
  }
  return d;
}

LogLimiter::Decision LogLimiter::admit(std::string_view key) {
  cg::MutexLock lk(mu_);
  KeyState* st = nullptr;
  return admit_locked(key, clock_(), st);
}

void LogLimiter::event(Level level, std::string_view key, std::string_view msg, const nlohmann::json& fields,
                       const nlohmann::json& summary) {
  if (!enabled(level)) return;
  Pending report;
  {
    cg::MutexLock lk(mu_);
    KeyState* st = nullptr;
    Decision d = admit_locked(key, clock_(), st);
    if (!d.log) {
      if (st->dropped == 1) {  // the first line dropped since the last report names what is dropped
        st->level = level;
        st->msg = std::string(msg);
        st->summary = summary;
      }
      return;
    }
    if (d.dropped > 0) {
      report.dropped = d.dropped;
      report.level = st->level;
      report.msg = std::move(st->msg);
      report.summary = std::move(st->summary);
    }
  }
  if (report.dropped > 0) log_summary(report.level, report.dropped, report.msg, report.summary);
  log::event(level, msg, fields);
}

std::vector<LogLimiter::Pending> LogLimiter::flush(std::string_view prefix) {
  std::vector<Pending> out;
  {
    cg::MutexLock lk(mu_);
    for (auto it = keys_.begin(); it != keys_.end();) {
      if (it->first.compare(0, prefix.size(), prefix) != 0) {
        ++it;
        continue;
      }
      if (it->second.dropped > 0) {
        auto& s = it->second;
        out.push_back({it->first, s.dropped, s.level, std::move(s.msg), std::move(s.summary)});
      }
      it = keys_.erase(it);
    }
  }
  for (const auto& p : out) log_summary(p.level, p.dropped, p.msg, p.summary);
  return out;
}

void LogLimiter::log_summary(Level level, uint64_t dropped, const std::string& msg, const nlohmann::json& summary) {
  nlohmann::json f = summary.is_object() ? summary : nlohmann::json::object();
  f["dropped"] = dropped;
  f["similarTo"] = msg;
  log::event(level, summary_message(dropped), f);
}

size_t LogLimiter::keys() const {
  cg::MutexLock lk(mu_);
  return keys_.size();
}

uint64_t LogLimiter::dropped_total() const {
  cg::MutexLock lk(mu_);
  return dropped_total_;
}

}  // namespace cg::log
