#include "gateway/go_flag.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <stdexcept>

#include "common/utf8.hpp"

namespace cg::goflag {
namespace {

char lower(char c) { return static_cast<char>(c | ('x' - 'X')); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// strconv's underscoreOK: '_' only between digits (or after a base prefix and before a digit).
bool underscore_ok(std::string_view s) {
  char saw = '^';
  size_t i = 0;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  bool hex = false;
  if (s.size() >= 2 && s[0] == '0' && (lower(s[1]) == 'b' || lower(s[1]) == 'o' || lower(s[1]) == 'x')) {
    i = 2;
    saw = '0';
    hex = lower(s[1]) == 'x';
  }
  for (; i < s.size(); ++i) {
    if (is_digit(s[i]) || (hex && lower(s[i]) >= 'a' && lower(s[i]) <= 'f')) {
      saw = '0';
      continue;
    }
    if (s[i] == '_') {
      if (saw != '0') return false;
      saw = '_';
      continue;
    }
    if (saw == '_') return false;
    saw = '!';
  }
  return saw != '_';
}

// One UTF-8 sequence at s[i]: its code point and length; (0xFFFD, 1) when invalid.
std::pair<uint32_t, size_t> decode_rune(std::string_view s, size_t i) {
  uint32_t r = 0;
  const size_t n = utf8_decode(s, i, r);
  if (n == 0) return {0xFFFD, 1};
  return {r, n};
}

// fmt's isSpace (the scanner's blank set).
bool fmt_is_space(uint32_t r) {
  static constexpr uint32_t ranges[][2] = {{0x0009, 0x000d}, {0x0020, 0x0020}, {0x0085, 0x0085}, {0x00a0, 0x00a0},
                                           {0x1680, 0x1680}, {0x2000, 0x200a}, {0x2028, 0x2029}, {0x202f, 0x202f},
                                           {0x205f, 0x205f}, {0x3000, 0x3000}};
  for (const auto& rg : ranges) {
    if (r < rg[0]) return false;
    if (r <= rg[1]) return true;
  }
  return false;
}

}  // namespace

std::optional<bool> parse_bool(std::string_view s) {
  if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") return true;
  if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False") return false;
  return std::nullopt;
}

NumError parse_uint(std::string_view s0, uint64_t& out) {
  out = 0;
  if (s0.empty()) return NumError::syntax;
  std::string_view s = s0;
  unsigned base = 10;
  if (s[0] == '0') {
    if (s.size() >= 3 && lower(s[1]) == 'b') base = 2, s.remove_prefix(2);
    else if (s.size() >= 3 && lower(s[1]) == 'o') base = 8, s.remove_prefix(2);
    else if (s.size() >= 3 && lower(s[1]) == 'x') base = 16, s.remove_prefix(2);
    else base = 8, s.remove_prefix(1);
  }
  const uint64_t max = UINT64_MAX;
  const uint64_t cutoff = max / base + 1;
  bool underscores = false;
  uint64_t n = 0;
  for (char c : s) {
    unsigned d;
    if (c == '_') {
      underscores = true;
      continue;
    } else if (is_digit(c)) {
      d = static_cast<unsigned>(c - '0');
    } else if (lower(c) >= 'a' && lower(c) <= 'z') {
      d = static_cast<unsigned>(lower(c) - 'a' + 10);
    } else {
      return NumError::syntax;
    }
    if (d >= base) return NumError::syntax;
    if (n >= cutoff) {
      out = max;
      return NumError::range;
    }
    n *= base;
    const uint64_t n1 = n + d;
    if (n1 < n) {
      out = max;
      return NumError::range;
    }
    n = n1;
  }
  if (underscores && !underscore_ok(s0)) return NumError::syntax;
  out = n;
  return NumError::none;
}

NumError parse_int(std::string_view s0, int64_t& out) {
  out = 0;
  if (s0.empty()) return NumError::syntax;
  std::string_view s = s0;
  bool neg = false;
  if (s[0] == '+') s.remove_prefix(1);
  else if (s[0] == '-') neg = true, s.remove_prefix(1);
  uint64_t un = 0;
  NumError e = parse_uint(s, un);
  if (e == NumError::syntax) return e;
  const uint64_t cutoff = uint64_t{1} << 63;
  if (!neg && un >= cutoff) {
    out = INT64_MAX;
    return NumError::range;
  }
  if (neg && un > cutoff) {
    out = INT64_MIN;
    return NumError::range;
  }
  out = neg ? static_cast<int64_t>(0 - un) : static_cast<int64_t>(un);
  return NumError::none;
}

NumError parse_float(std::string_view s, double& out) {
  out = 0;
  // strconv's special(): [+-]inf, [+-]infinity (any case), nan (no sign).
  auto iprefix = [](std::string_view a, std::string_view b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && lower(a[n]) == b[n]) ++n;
    return n;
  };
  if (!s.empty()) {
    std::string_view r = s;
    double sign = 1;
    bool signed_ = false;
    if (r[0] == '+' || r[0] == '-') sign = r[0] == '-' ? -1 : 1, r.remove_prefix(1), signed_ = true;
    if (!r.empty() && (r[0] == 'i' || r[0] == 'I')) {
      size_t n = iprefix(r, "infinity");
      if (n > 3 && n < 8) n = 3;
      if (n == 3 || n == 8) {
        if (n != r.size()) return NumError::syntax;
        out = sign * HUGE_VAL;
        return NumError::none;
      }
    } else if (!signed_ && !r.empty() && (r[0] == 'n' || r[0] == 'N') && iprefix(r, "nan") == 3) {
      if (r.size() != 3) return NumError::syntax;
      out = std::nan("");
      return NumError::none;
    }
  }
  // strconv's readFloat, for the syntax; the value comes from strtod on the same text without '_'.
  size_t i = 0;
  bool underscores = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  bool hex = false;
  if (i + 2 < s.size() && s[i] == '0' && lower(s[i + 1]) == 'x') hex = true, i += 2;
  const char exp_char = hex ? 'p' : 'e';
  bool sawdot = false, sawdigits = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      underscores = true;
      continue;
    }
    if (c == '.') {
      if (sawdot) break;
      sawdot = true;
      continue;
    }
    if (is_digit(c) || (hex && lower(c) >= 'a' && lower(c) <= 'f')) {
      sawdigits = true;
      continue;
    }
    break;
  }
  if (!sawdigits) return NumError::syntax;
  if (i < s.size() && lower(s[i]) == exp_char) {
    ++i;
    if (i >= s.size()) return NumError::syntax;
    if (s[i] == '+' || s[i] == '-') ++i;
    if (i >= s.size() || !is_digit(s[i])) return NumError::syntax;
    for (; i < s.size() && (is_digit(s[i]) || s[i] == '_'); ++i)
      if (s[i] == '_') underscores = true;
  } else if (hex) {
    return NumError::syntax;
  }
  if (underscores && !underscore_ok(s.substr(0, i))) return NumError::syntax;
  if (i != s.size()) return NumError::syntax;
  std::string text;
  for (char c : s)
    if (c != '_') text += c;
  errno = 0;
  out = std::strtod(text.c_str(), nullptr);
  if (std::isinf(out)) return NumError::range;
  return NumError::none;
}

std::optional<Duration> parse_duration(std::string_view s) {
  // time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+
  static const std::map<std::string_view, uint64_t> units = {{"ns", 1},           {"us", 1000},        {"\xC2\xB5s", 1000},
                                                             {"\xCE\xBCs", 1000}, {"ms", 1000000},     {"s", 1000000000},
                                                             {"m", 60000000000},  {"h", 3600000000000}};
  constexpr uint64_t kLimit = uint64_t{1} << 63;
  uint64_t d = 0;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) neg = s[0] == '-', s.remove_prefix(1);
  if (s == "0") return Duration::zero();
  if (s.empty()) return std::nullopt;
  while (!s.empty()) {
    uint64_t v = 0, f = 0;
    double scale = 1;
    if (!(s[0] == '.' || is_digit(s[0]))) return std::nullopt;
    size_t i = 0;
    for (; i < s.size() && is_digit(s[i]); ++i) {  // leadingInt
      if (v > kLimit / 10) return std::nullopt;
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
      if (v > kLimit) return std::nullopt;
    }
    const bool pre = i > 0;
    s.remove_prefix(i);
    bool post = false;
    if (!s.empty() && s[0] == '.') {
      s.remove_prefix(1);
      size_t j = 0;
      bool overflow = false;
      for (; j < s.size() && is_digit(s[j]); ++j) {  // leadingFraction
        if (overflow) continue;
        if (f > (kLimit - 1) / 10) {
          overflow = true;
          continue;
        }
        const uint64_t y = f * 10 + static_cast<uint64_t>(s[j] - '0');
        if (y > kLimit) {
          overflow = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      post = j > 0;
      s.remove_prefix(j);
    }
    if (!pre && !post) return std::nullopt;
    size_t u = 0;
    while (u < s.size() && s[u] != '.' && !is_digit(s[u])) ++u;
    if (u == 0) return std::nullopt;  // missing unit
    auto it = units.find(s.substr(0, u));
    if (it == units.end()) return std::nullopt;
    s.remove_prefix(u);
    const uint64_t unit = it->second;
    if (v > kLimit / unit) return std::nullopt;
    v *= unit;
    if (f > 0) {
      v += static_cast<uint64_t>(static_cast<double>(f) * (static_cast<double>(unit) / scale));
      if (v > kLimit) return std::nullopt;
    }
    d += v;
    if (d > kLimit) return std::nullopt;
  }
  if (neg) return Duration(static_cast<int64_t>(0 - d));
  if (d > kLimit - 1) return std::nullopt;
  return Duration(static_cast<int64_t>(d));
}

std::string format_duration(Duration dur) {
  // time.Duration.String.
  char buf[40];
  size_t w = sizeof buf;
  const int64_t ns = dur.count();
  uint64_t u = static_cast<uint64_t>(ns);
  const bool neg = ns < 0;
  if (neg) u = 0 - u;
  auto frac = [&](uint64_t v, int prec) {
    bool print = false;
    for (int i = 0; i < prec; ++i) {
      const auto digit = static_cast<char>(v % 10);
      print = print || digit != 0;
      if (print) buf[--w] = static_cast<char>('0' + digit);
      v /= 10;
    }
    if (print) buf[--w] = '.';
    return v;
  };
  auto integer = [&](uint64_t v) {
    if (v == 0) {
      buf[--w] = '0';
      return;
    }
    while (v > 0) buf[--w] = static_cast<char>('0' + v % 10), v /= 10;
  };
  if (u < 1000000000) {
    if (u == 0) return "0s";
    buf[--w] = 's';
    int prec;
    if (u < 1000) prec = 0, buf[--w] = 'n';
    else if (u < 1000000) prec = 3, buf[--w] = '\xB5', buf[--w] = '\xC2';
    else prec = 6, buf[--w] = 'm';
    u = frac(u, prec);
    integer(u);
  } else {
    buf[--w] = 's';
    u = frac(u, 9);
    integer(u % 60);
    u /= 60;
    if (u > 0) {
      buf[--w] = 'm';
      integer(u % 60);
      u /= 60;
      if (u > 0) {
        buf[--w] = 'h';
        integer(u);
      }
    }
  }
  if (neg) buf[--w] = '-';
  return std::string(buf + w, sizeof buf - w);
}

std::string quote(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    auto [r, n] = decode_rune(s, i);
    if (r == 0xFFFD && n == 1) {
      const auto b = static_cast<unsigned char>(s[i]);
      if (b >= 0x80) {
        out += "\\x";
        out += hex[b >> 4];
        out += hex[b & 0xF];
        ++i;
        continue;
      }
    }
    if (r >= 0x80) {
      out.append(s.substr(i, n));
    } else if (r == '"' || r == '\\') {
      out += '\\';
      out += static_cast<char>(r);
    } else if (r >= 0x20 && r < 0x7f) {
      out += static_cast<char>(r);
    } else {
      switch (r) {
        case '\a': out += "\\a"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\v': out += "\\v"; break;
        default:
          out += "\\x";
          out += hex[r >> 4];
          out += hex[r & 0xF];
      }
    }
    i += n;
  }
  return out + "\"";
}

std::optional<int64_t> env_int(std::string_view s) {
  // fmt.Sscanf(s, "%d", &v): SkipSpace (a newline is an error), an optional sign, at least one decimal
  // digit, then strconv.ParseInt(token, 10, 64). Trailing input is not looked at.
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') return std::nullopt;
    if (s[i] == '\n') return std::nullopt;
    auto [r, n] = decode_rune(s, i);
    if (!fmt_is_space(r) || (r == 0xFFFD && n == 1 && static_cast<unsigned char>(s[i]) >= 0x80)) break;
    i += n;
  }
  const size_t start = i;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  const size_t digits = i;
  while (i < s.size() && is_digit(s[i])) ++i;
  if (i == digits) return std::nullopt;
  int64_t v = 0;
  // Decimal only (ParseInt base 10): strip a leading zero run's octal meaning by parsing digit by digit.
  bool neg = s[start] == '-';
  uint64_t un = 0;
  for (size_t k = digits; k < i; ++k) {
    if (un > (UINT64_MAX - 9) / 10) return std::nullopt;
    un = un * 10 + static_cast<uint64_t>(s[k] - '0');
  }
  const uint64_t cutoff = uint64_t{1} << 63;
  if ((!neg && un >= cutoff) || (neg && un > cutoff)) return std::nullopt;
  v = neg ? static_cast<int64_t>(0 - un) : static_cast<int64_t>(un);
  return v;
}

bool env_bool(std::string_view value) { return value == "true" || value == "1"; }

Result parse(const std::vector<Flag>& flags, const std::vector<std::string>& args) {
  std::map<std::string, const Flag*, std::less<>> formal;
  for (const auto& f : flags)
    if (!formal.emplace(f.name, &f).second) throw std::logic_error("flag redefined: " + f.name);
  Result res;
  size_t k = 0;
  auto fail = [&](std::string msg) {
    res.outcome = Outcome::error;
    res.error = std::move(msg);
    return res;
  };
  while (k < args.size()) {
    const std::string& s = args[k];
    if (s.size() < 2 || s[0] != '-') break;
    size_t minuses = 1;
    if (s[1] == '-') {
      minuses = 2;
      if (s.size() == 2) {  // "--" ends the flags
        ++k;
        break;
      }
    }
    std::string name = s.substr(minuses);
    if (name.empty() || name[0] == '-' || name[0] == '=') return fail("bad flag syntax: " + s);
    ++k;
    bool has_value = false;
    std::string value;
    if (auto eq = name.find('=', 1); eq != std::string::npos) {
      value = name.substr(eq + 1);
      has_value = true;
      name.resize(eq);
    }
    auto it = formal.find(name);
    if (it == formal.end()) {
      if (name == "help" || name == "h") {
        res.outcome = Outcome::help;
        return res;
      }
      return fail("flag provided but not defined: -" + name);
    }
    const Flag& f = *it->second;
    if (auto* set_bool = std::get_if<std::function<void(bool)>>(&f.set)) {
      if (has_value) {
        auto b = parse_bool(value);
        if (!b) return fail("invalid boolean value " + quote(value) + " for -" + name + ": parse error");
        (*set_bool)(*b);
      } else {
        (*set_bool)(true);
      }
    } else {
      if (!has_value && k < args.size()) {
        value = args[k++];
        has_value = true;
      }
      if (!has_value) return fail("flag needs an argument: -" + name);
      auto invalid = [&](NumError e) {
        return fail("invalid value " + quote(value) + " for flag -" + name + ": " +
                    (e == NumError::range ? "value out of range" : "parse error"));
      };
      if (auto* si = std::get_if<std::function<void(int64_t)>>(&f.set)) {
        int64_t v;
        if (auto e = parse_int(value, v); e != NumError::none) return invalid(e);
        (*si)(v);
      } else if (auto* su = std::get_if<std::function<void(uint64_t)>>(&f.set)) {
        uint64_t v;
        if (auto e = parse_uint(value, v); e != NumError::none) return invalid(e);
        (*su)(v);
      } else if (auto* sf = std::get_if<std::function<void(double)>>(&f.set)) {
        double v;
        if (auto e = parse_float(value, v); e != NumError::none) return invalid(e);
        (*sf)(v);
      } else if (auto* sd = std::get_if<std::function<void(Duration)>>(&f.set)) {
        auto v = parse_duration(value);
        if (!v) return invalid(NumError::syntax);
        (*sd)(*v);
      } else {
        std::get<std::function<void(const std::string&)>>(f.set)(value);
      }
    }
    res.set.push_back(name);
  }
  res.args.assign(args.begin() + static_cast<std::ptrdiff_t>(k), args.end());
  return res;
}

std::string usage(const std::vector<Flag>& flags, std::string_view program) {
  std::vector<const Flag*> sorted;
  sorted.reserve(flags.size());
  for (const auto& f : flags) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(), [](const Flag* a, const Flag* b) { return a->name < b->name; });
  std::string out = "Usage of " + std::string(program) + ":\n";
  for (const Flag* f : sorted) {
    std::string line = "  -" + f->name;
    std::string type, zero;
    switch (f->set.index()) {
      case 0: type = "", zero = "false"; break;
      case 1: type = "int", zero = "0"; break;
      case 2: type = "uint", zero = "0"; break;
      case 3: type = "float", zero = "0"; break;
      case 4: type = "string", zero = ""; break;
      default: type = "duration", zero = "0s"; break;
    }
    std::string text = f->usage;
    // A back-quoted word in the usage names the value (Go's UnquoteUsage).
    if (auto a = text.find('`'); a != std::string::npos) {
      if (auto b = text.find('`', a + 1); b != std::string::npos) {
        type = text.substr(a + 1, b - a - 1);
        text.replace(a, b - a + 1, type);
      }
    }
    if (!type.empty()) line += " " + type;
    line += line.size() <= 4 ? "\t" : "\n    \t";
    for (char c : text) line += c == '\n' ? std::string("\n    \t") : std::string(1, c);
    if (f->default_text != zero) line += " (default " + (f->set.index() == 4 ? quote(f->default_text) : f->default_text) + ")";
    out += line + "\n";
  }
  return out;
}

}  // namespace cg::goflag
