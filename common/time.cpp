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
  // Fixed positions, digits only (no sign, no blank: sscanf's %d took both).
  auto num = [&](size_t at, size_t n) -> std::optional<int> {
    if (at + n > s.size()) return std::nullopt;
    int v = 0;
    for (size_t k = at; k < at + n; ++k) {
      if (s[k] < '0' || s[k] > '9') return std::nullopt;
      v = v * 10 + (s[k] - '0');
    }
    return v;
  };
  if (s.size() < 20) return std::nullopt;
  if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') return std::nullopt;
  auto Y = num(0, 4), M = num(5, 2), D = num(8, 2), h = num(11, 2), m = num(14, 2), sec = num(17, 2);
  if (!Y || !M || !D || !h || !m || !sec) return std::nullopt;
  if (*M < 1 || *M > 12 || *D < 1 || *D > 31 || *h > 23 || *m > 59 || *sec > 60) return std::nullopt;
  size_t i = 19;
  long long frac_ns = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      if (digits < 9) {
        frac_ns = frac_ns * 10 + (s[i] - '0');
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
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    auto oh = num(i + 1, 2), om = num(i + 4, 2);
    if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
    offset = (*oh * 3600L + *om * 60L) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = *Y - 1900;
  tm.tm_mon = *M - 1;
  tm.tm_mday = *D;
  tm.tm_hour = *h;
  tm.tm_min = *m;
  tm.tm_sec = *sec;
  const std::time_t tt = timegm(&tm) - offset;
  // system_clock counts nanoseconds in 64 bits: about 1677-09-21 to 2262-04-11. A time outside is
  // refused rather than wrapped (a hostile peer or API server could send year 9999).
  using Secs = std::chrono::duration<long long>;
  static const long long lo = std::chrono::duration_cast<Secs>(SysTime::duration::min()).count() + 1;
  static const long long hi = std::chrono::duration_cast<Secs>(SysTime::duration::max()).count() - 1;
  if (static_cast<long long>(tt) < lo || static_cast<long long>(tt) > hi) return std::nullopt;
  return std::chrono::system_clock::from_time_t(tt) +
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
