// Structured logging: one JSON object per line (or key=value text), via spdlog.
#pragma once
#include <nlohmann/json.hpp>
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

inline void debug(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { if (enabled(Level::debug)) event(Level::debug, m, f); }
inline void info(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::info, m, f); }
inline void warn(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::warn, m, f); }
inline void error(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) { event(Level::error, m, f); }

}  // namespace cg::log
