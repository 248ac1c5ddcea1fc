// Wall-clock helpers: RFC 3339 formatting/parsing and Go-style durations.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace cg {

using SysTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::nanoseconds;

// "2026-11-25T01:02:03Z" (Kubernetes metav1.Time precision: seconds).
std::string format_rfc3339(SysTime t);
// "2026-11-25T01:02:03.123456789Z".
std::string format_rfc3339_nano(SysTime t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)".
std::optional<SysTime> parse_rfc3339(std::string_view s);

// Go duration syntax: "300ms", "1.5h", "2h45m", "1m30s", "0". Units ns, us, µs, ms, s, m, h.
// Negative durations are rejected. Returns nullopt on error.
std::optional<Duration> parse_go_duration(std::string_view s);
std::string format_go_duration(Duration d);

}  // namespace cg
