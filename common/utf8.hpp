// Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), the one decoder
// for log escaping, YAML text checks, path rules, policy names and Go-style flag scanning.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cg {

// The sequence at s[i]: its length (1 to 4) with its code point in `cp`, or 0 when the bytes there
// are not valid UTF-8 (a stray continuation byte, a bad lead byte, a truncated or overlong sequence,
// a surrogate, or a code point above U+10FFFF).
inline size_t utf8_decode(std::string_view s, size_t i, uint32_t& cp) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  const size_t n = (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : 0;
  if (n == 0 || s.size() - i <= n) return 0;
  cp = c & (n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07);
  for (size_t k = 1; k <= n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    unsigned char lo = 0x80, hi = 0xBF;
    if (k == 1 && c == 0xE0) lo = 0xA0;  // overlong
    if (k == 1 && c == 0xED) hi = 0x9F;  // surrogates
    if (k == 1 && c == 0xF0) lo = 0x90;  // overlong
    if (k == 1 && c == 0xF4) hi = 0x8F;  // above U+10FFFF
    if (cc < lo || cc > hi) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  return n + 1;
}

inline size_t utf8_length(std::string_view s, size_t i) {
  uint32_t cp = 0;
  return utf8_decode(s, i, cp);
}

inline bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace cg
