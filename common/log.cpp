#include "common/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

namespace cg::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<Format> g_format{Format::json};

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    auto lg = std::make_shared<spdlog::logger>("cluster-gateway", sink);
    lg->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
    lg->flush_on(spdlog::level::trace);
    return lg;
  }();
  return l;
}
}  // namespace

void init(Level level, Format format) {
  g_level = level;
  g_format = format;
  auto lg = logger();
  lg->set_level(to_spd(level));
  if (format == Format::json) {
    lg->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  } else {
    lg->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v", spdlog::pattern_time_type::utc);
  }
}

bool parse_level(std::string_view s, Level& out) {
  if (s == "debug") out = Level::debug;
  else if (s == "info") out = Level::info;
  else if (s == "warn" || s == "warning") out = Level::warn;
  else if (s == "error") out = Level::error;
  else return false;
  return true;
}

bool parse_format(std::string_view s, Format& out) {
  if (s == "json") out = Format::json;
  else if (s == "text") out = Format::text;
  else return false;
  return true;
}

bool enabled(Level level) { return level >= g_level.load(); }

void event(Level level, std::string_view msg, const nlohmann::json& fields) {
  if (!enabled(level)) return;
  std::string line;
  if (g_format.load() == Format::json) {
    nlohmann::json obj = nlohmann::json::object();
    obj["msg"] = msg;
    if (fields.is_object())
      for (auto it = fields.begin(); it != fields.end(); ++it) obj[it.key()] = it.value();
    // Replace invalid UTF-8 rather than throwing: log lines may carry peer-supplied text.
    line = obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line = line.substr(1, line.size() - 2);  // the pattern supplies the braces
  } else {
    line = std::string(msg);
    if (fields.is_object())
      for (auto it = fields.begin(); it != fields.end(); ++it) {
        line += ' ';
        line += it.key();
        line += '=';
        line += it.value().is_string() ? it.value().get<std::string>()
                                       : it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
  }
  logger()->log(to_spd(level), "{}", line);
}

}  // namespace cg::log
