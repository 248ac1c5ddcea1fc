// Structured logging: one JSON object per line (or key=value text), via spdlog.
// Every event is exactly one line in both formats, whatever bytes peers put into its fields:
// JSON escapes them; the text format escapes control characters, backslashes and bytes that are
// not UTF-8 (see escape_text), and quotes values that hold a space, '=' or '"'.
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>

namespace cg::log {

enum class Level { debug, info, warn, error };
enum class Format { json, text };

// Configures the process-wide logger. Safe to call more than once (tests).
void init(Level level, Format format);
bool parse_level(std::string_view s, Level& out);
bool parse_format(std::string_view s, Format& out);
bool enabled(Level level);

// Emits one event: `msg` plus `fields` (an object). Field names are camelCase:
// planeType, planeID, connectionID, requestID, cr, reason, ...
void event(Level level, std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());

// The text format's escaping of one piece of text: '\\' and the controls \n \r \t as two-character
// escapes, other C0 controls, DEL and bytes that are not part of valid UTF-8 as \xNN, the C1
// controls and U+2028/U+2029 as \uNNNN. With `quote_if_needed`, a result that is empty or holds a
// space, '=' or '"' is wrapped in double quotes (with '"' escaped as \").
std::string escape_text(std::string_view s, bool quote_if_needed = false);

// Tests only: send log lines to `out` instead of stdout (nullptr: back to stdout). Not safe while
// other threads log.
void set_output_for_tests(std::ostream* out);

inline void debug(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  if (enabled(Level::debug)) event(Level::debug, m, f);
}
inline void info(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::info, m, f); }
inline void warn(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::warn, m, f); }
inline void error(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::error, m, f); }

}  // namespace cg::log
