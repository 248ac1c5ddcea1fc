#include "common/time.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <ctime>

namespace cg {

namespace {
std::string format_with(SysTime t, bool nano) {
  using namespace std::chrono;
  auto secs = time_point_cast<seconds>(t);
  if (secs > t) secs -= seconds(1);
  auto ns = duration_cast<nanoseconds>(t - secs).count();
  std::time_t tt = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf);
  if (nano && ns != 0) {
    char frac[16];
    std::snprintf(frac, sizeof frac, ".%09lld", static_cast<long long>(ns));
    std::string f(frac);
    while (!f.empty() && f.back() == '0') f.pop_back();  // like Go's RFC3339Nano
    out += f;
  }
  out += 'Z';
  return out;
}
}  // namespace

std::string format_rfc3339(SysTime t) { return format_with(t, false); }
std::string format_rfc3339_nano(SysTime t) { return format_with(t, true); }

std::optional<SysTime> parse_rfc3339(std::string_view s) {
  int Y, M, D, h, m, sec;
  if (s.size() < 20) return std::nullopt;
  std::string str(s);
  if (std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &Y, &M, &D, &h, &m, &sec) != 6) return std::nullopt;
  if (str[4] != '-' || str[7] != '-' || (str[10] != 'T' && str[10] != 't') || str[13] != ':' || str[16] != ':')
    return std::nullopt;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return std::nullopt;
  size_t i = 19;
  long long frac_ns = 0;
  if (i < str.size() && str[i] == '.') {
    ++i;
    int digits = 0;
    while (i < str.size() && std::isdigit(static_cast<unsigned char>(str[i]))) {
      if (digits < 9) {
        frac_ns = frac_ns * 10 + (str[i] - '0');
        ++digits;
      }
      ++i;
    }
    if (digits == 0) return std::nullopt;
    while (digits < 9) {
      frac_ns *= 10;
      ++digits;
    }
  }
  long offset = 0;
  if (i < str.size() && (str[i] == 'Z' || str[i] == 'z')) {
    ++i;
  } else if (i + 6 == str.size() && (str[i] == '+' || str[i] == '-') && str[i + 3] == ':') {
    int oh = std::atoi(str.substr(i + 1, 2).c_str()), om = std::atoi(str.substr(i + 4, 2).c_str());
    offset = (oh * 3600 + om * 60) * (str[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != str.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  std::time_t tt = timegm(&tm);
  return std::chrono::system_clock::from_time_t(tt - offset) +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(frac_ns));
}

std::optional<Duration> parse_go_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (s == "0") return Duration::zero();
  if (s[0] == '-') return std::nullopt;
  if (s[0] == '+') s.remove_prefix(1);
  long double total_ns = 0;
  size_t i = 0;
  bool any = false;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    if (i == start) return std::nullopt;
    std::string num(s.substr(start, i - start));
    if (std::count(num.begin(), num.end(), '.') > 1 || num == ".") return std::nullopt;
    long double v = std::strtold(num.c_str(), nullptr);
    size_t ustart = i;
    while (i < s.size() && !(std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    std::string_view unit = s.substr(ustart, i - ustart);
    long double mult;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") mult = 1e3;
    else if (unit == "ms") mult = 1e6;
    else if (unit == "s") mult = 1e9;
    else if (unit == "m") mult = 60e9;
    else if (unit == "h") mult = 3600e9;
    else return std::nullopt;
    total_ns += v * mult;
    any = true;
  }
  if (!any || total_ns > 9.2e18L) return std::nullopt;
  return Duration(static_cast<long long>(std::llround(static_cast<double>(total_ns))));
}

std::string format_go_duration(Duration d) {
  using namespace std::chrono;
  auto ns = d.count();
  if (ns == 0) return "0s";
  if (ns % 1000000000 != 0) {
    if (ns < 1000000000 && ns % 1000000 == 0) return std::to_string(ns / 1000000) + "ms";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%gs", static_cast<double>(ns) / 1e9);
    return buf;
  }
  long long s = ns / 1000000000;
  std::string out;
  if (s >= 3600) {
    out += std::to_string(s / 3600) + "h";
    s %= 3600;
  }
  if (s >= 60 || (!out.empty() && s > 0)) {
    out += std::to_string(s / 60) + "m";
    s %= 60;
  }
  if (s > 0 || out.empty()) out += std::to_string(s) + "s";
  else if (!out.empty() && out.back() != 's') out += "0s";
  return out;
}

}  // namespace cg
