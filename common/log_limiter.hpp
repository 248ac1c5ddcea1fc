// A per-key limiter for repeated log lines (a peer can make the gateway warn once per frame).
//
// Each key (chosen by the caller: a connection id and the message, e.g. "c-42|frame for unknown
// request") may log at most `per_window` lines per `window` (fixed windows, 1 s by default);
// further lines in the same window are not logged but counted. The first line of that key after
// the window has passed is preceded by one summary line "<N> similar lines dropped" carrying the
// count in the field `dropped` and the dropped lines' message in `similarTo`. flush() reports what
// is still pending (call it when the connection ends) and forgets those keys.
//
// Memory is bounded: at most `max_keys` keys are tracked. Keys idle for a whole window with nothing
// pending are forgotten when room is needed; when every slot is busy, lines for new keys share one
// overflow key ("(overflow)").
//
// Thread safety: thread-safe (one internal mutex, never held while logging), so one limiter may
// be shared by every connection (keys carry the connection id) or owned by one. The clock is
// injectable for tests.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/log.hpp"
#include "common/thread_annotations.hpp"

namespace cg::log {

class LogLimiter {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  struct Options {
    uint32_t per_window = 10;  // lines logged per key and window
    std::chrono::milliseconds window{1000};
    size_t max_keys = 4096;
  };
  // What admit() decided for one line.
  struct Decision {
    bool log = false;  // log this line
    uint64_t dropped = 0;  // lines of this key dropped in earlier windows, to report before it (then reset)
  };
  // A dropped count not reported yet (flush()).
  // NOLINTNEXTLINE(bugprone-exception-escape): the check sees throws inside nlohmann::json's noexcept moves
  struct Pending {
    std::string key;
    uint64_t dropped = 0;
    Level level = Level::warn;
    std::string msg;  // message of the dropped lines
    nlohmann::json summary;  // summary fields given with them
  };

  LogLimiter() : LogLimiter(Options{}) {}
  explicit LogLimiter(Options opts, Clock clock = nullptr);

  // The bare decision for one line of `key` (callers that log in their own way).
  Decision admit(std::string_view key);

  // Logs `msg` with `fields` unless `key` is over its budget. `summary` holds the fields a summary
  // line for this key carries (the connection, the plane: not per-line ones such as requestID).
  void event(Level level, std::string_view key, std::string_view msg, const nlohmann::json& fields,
             const nlohmann::json& summary = nlohmann::json::object());
  void warn(std::string_view key, std::string_view msg, const nlohmann::json& fields,
            const nlohmann::json& summary = nlohmann::json::object()) {
    event(Level::warn, key, msg, fields, summary);
  }

  // Logs a summary line for every key starting with `prefix` that has dropped lines not yet
  // reported, and forgets those keys (all keys for an empty prefix). Returns what it reported.
  std::vector<Pending> flush(std::string_view prefix = {});

  size_t keys() const;
  uint64_t dropped_total() const;  // every line dropped since construction

  static std::string summary_message(uint64_t dropped);

 private:
  struct KeyState {
    std::chrono::steady_clock::time_point window_start;
    uint32_t in_window = 0;
    uint64_t dropped = 0;  // not reported yet
    Level level = Level::warn;
    std::string msg;
    nlohmann::json summary;
  };
  Decision admit_locked(std::string_view key, std::chrono::steady_clock::time_point now, KeyState*& st) CG_REQUIRES(mu_);
  KeyState* slot_locked(std::string_view key, std::chrono::steady_clock::time_point now) CG_REQUIRES(mu_);
  static void log_summary(Level level, uint64_t dropped, const std::string& msg, const nlohmann::json& summary);

  Options opts_;
  Clock clock_;
  mutable cg::Mutex mu_;
  std::unordered_map<std::string, KeyState> keys_ CG_GUARDED_BY(mu_);
  uint64_t dropped_total_ CG_GUARDED_BY(mu_) = 0;
};

}  // namespace cg::log
