#include "common/json_lift.hpp"

#include <cstdint>
#include <cstring>

namespace cg {
namespace {

constexpr size_t npos = std::string_view::npos;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t skip_ws(std::string_view t, size_t i) {
  while (i < t.size() && is_ws(t[i])) ++i;
  return i;
}

// t[i] is '"'. Returns the index just past the closing quote (npos when there is none). `plain`: the
// content is printable ASCII without '\' (so its JSON value is the bytes themselves). A quote outside
// a string always starts one in JSON, so these are exactly the string tokens a JSON lexer sees.
size_t scan_string(std::string_view t, size_t i, bool& plain) {
  const size_t from = i + 1;
  const size_t q = t.find('"', from);
  if (q == npos) return npos;
  // Eight bytes at a time (SWAR): flags any byte below 0x20, above 0x7e, or equal to '\\'. Each
  // test is exact about whether such a byte exists in the word, which is all that is asked.
  constexpr uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  uint64_t bad = 0, backslash = 0;
  size_t k = from;
  for (; k + 8 <= q; k += 8) {
    uint64_t w;
    std::memcpy(&w, t.data() + k, 8);
    bad |= ((w - 0x20 * ones) & ~w & highs) | ((w + ones) | w);
    const uint64_t b = w ^ (0x5c * ones);
    backslash |= (b - ones) & ~b & highs;
  }
  bad &= highs;
  for (; k < q; ++k) {
    const auto c = static_cast<unsigned char>(t[k]);
    bad |= (c < 0x20) | (c > 0x7e);
    backslash |= (c == '\\');
  }
  if (!backslash) {
    plain = !bad;
    return q + 1;
  }
  plain = false;
  for (size_t k = from; k < t.size();) {
    if (t[k] == '\\') {
      k += 2;
    } else if (t[k] == '"') {
      return k + 1;
    } else {
      ++k;
    }
  }
  return npos;
}

// Skips one value starting at t[i] (after whitespace). Nested objects and arrays are skipped by
// bracket depth and string tokens; whatever they contain is left to the JSON parser, which sees it
// unchanged.
size_t skip_value(std::string_view t, size_t i) {
  if (i >= t.size()) return npos;
  bool plain = false;
  if (t[i] == '"') return scan_string(t, i, plain);
  if (t[i] == '{' || t[i] == '[') {
    size_t depth = 0;
    for (size_t k = i; k < t.size();) {
      const char c = t[k];
      if (c == '"') {
        k = scan_string(t, k, plain);
        if (k == npos) return npos;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return k + 1;
      }
      ++k;
    }
    return npos;
  }
  size_t k = i;
  while (k < t.size() && !is_ws(t[k]) && t[k] != ',' && t[k] != '}' && t[k] != ']') ++k;
  return k == i ? npos : k;
}

}  // namespace

bool lift_long_strings(std::string_view t, size_t min_len, LiftedJson& out) {
  struct Span {
    size_t begin, end;  // the value's content, without quotes
  };
  std::vector<std::string_view> keys;
  std::vector<std::pair<std::string_view, Span>> lifted;
  size_t i = skip_ws(t, 0);
  if (i >= t.size() || t[i] != '{') return false;
  i = skip_ws(t, i + 1);
  if (i < t.size() && t[i] == '}') return false;  // empty object: nothing to lift
  for (;;) {
    if (i >= t.size() || t[i] != '"') return false;
    bool plain = false;
    const size_t key_end = scan_string(t, i, plain);
    if (key_end == npos) return false;
    const std::string_view key = t.substr(i + 1, key_end - i - 2);
    if (key.find('\\') != npos) return false;  // escaped keys: compare them only after unescaping
    keys.push_back(key);
    i = skip_ws(t, key_end);
    if (i >= t.size() || t[i] != ':') return false;
    i = skip_ws(t, i + 1);
    if (i >= t.size()) return false;
    if (t[i] == '"') {
      const size_t end = scan_string(t, i, plain);
      if (end == npos) return false;
      if (plain && end - i - 2 >= min_len) lifted.push_back({key, Span{i + 1, end - 1}});
      i = end;
    } else {
      i = skip_value(t, i);
      if (i == npos) return false;
    }
    i = skip_ws(t, i);
    if (i >= t.size()) return false;
    if (t[i] == '}') break;
    if (t[i] != ',') return false;
    i = skip_ws(t, i + 1);
  }
  if (lifted.empty()) return false;
  // A key given twice: which value wins is the parser's business; do not take it apart.
  for (const auto& [key, _] : lifted) {
    size_t n = 0;
    for (const auto& k : keys) n += k == key;
    if (n != 1) return false;
  }
  out.rest.clear();
  out.members.clear();
  size_t total = t.size();
  for (const auto& [_, s] : lifted) total -= s.end - s.begin;
  out.rest.reserve(total);
  size_t at = 0;
  for (const auto& [key, s] : lifted) {
    out.rest.append(t.substr(at, s.begin - at));
    at = s.end;
    out.members.emplace_back(std::string(key), t.substr(s.begin, s.end - s.begin));
  }
  out.rest.append(t.substr(at));
  return true;
}

void restore_lifted(nlohmann::json& obj, const LiftedJson& lifted) {
  for (const auto& [key, raw] : lifted.members) obj[key] = std::string(raw);
}

std::string dump_with_plain_member(const nlohmann::json& obj, std::string_view key, std::string_view raw) {
  std::string out = obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const std::string k = nlohmann::json(std::string(key)).dump();
  out.pop_back();  // '}'
  out.reserve(out.size() + k.size() + raw.size() + 5);
  if (out.size() > 1) out += ',';
  out += k;
  out += ":\"";
  out += raw;
  out += "\"}";
  return out;
}

}  // namespace cg
