#include "common/log.hpp"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>

#include "common/utf8.hpp"

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

void apply_pattern(spdlog::logger& lg, Format format) {
  if (format == Format::json) {
    lg.set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  } else {
    lg.set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v", spdlog::pattern_time_type::utc);
  }
}

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    auto lg = std::make_shared<spdlog::logger>("cluster-gateway", sink);
    apply_pattern(*lg, Format::json);
    lg->flush_on(spdlog::level::trace);
    return lg;
  }();
  return l;
}

}  // namespace

std::string escape_text(std::string_view s, bool quote_if_needed) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  bool quote = quote_if_needed && s.empty();
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      uint32_t cp = 0;
      size_t n = utf8_decode(s, i, cp);
      if (n == 0) {  // not UTF-8: the byte, escaped
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 0xf];
        ++i;
      } else if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029) {  // C1 controls, line separators
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4) out += hex[(cp >> shift) & 0xf];
        i += n;
      } else {
        out.append(s.substr(i, n));
        i += n;
      }
      continue;
    }
    ++i;
    switch (c) {
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '"':
        if (quote_if_needed) {
          quote = true;
          out += "\\\"";
          continue;
        }
        break;
      case ' ':
      case '=': quote = quote || quote_if_needed; break;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return quote ? "\"" + out + "\"" : out;
}

void set_output_for_tests(std::ostream* out) {
  auto lg = logger();
  lg->sinks().clear();
  if (out) lg->sinks().push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(*out, true));
  else lg->sinks().push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
  apply_pattern(*lg, g_format.load());
}

void init(Level level, Format format) {
  g_level = level;
  g_format = format;
  auto lg = logger();
  lg->set_level(to_spd(level));
  apply_pattern(*lg, format);
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
    // Peer-supplied text (paths, request ids, names) must not start a line of its own.
    line = escape_text(msg);
    if (fields.is_object())
      for (auto it = fields.begin(); it != fields.end(); ++it) {
        line += ' ';
        line += escape_text(it.key());
        line += '=';
        // Non-strings as JSON in pure ASCII: one line, no control characters.
        line += it.value().is_string() ? escape_text(it.value().get_ref<const std::string&>(), true)
                                       : it.value().dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
      }
  }
  logger()->log(to_spd(level), "{}", line);
}

}  // namespace cg::log
