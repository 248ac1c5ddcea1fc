#include "common/base64.hpp"

#include <openssl/evp.h>

namespace cg {

std::string base64_encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

void base64_append(std::string& out, std::string_view in) {
  const size_t at = out.size();
  out.resize(at + 4 * ((in.size() + 2) / 3) + 1);
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + at), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(at + static_cast<size_t>(n));
}

namespace {
// 0..63 for the alphabet, 64 for '=', 255 for everything else.
struct DecodeTable {
  unsigned char v[256];
  constexpr DecodeTable() : v() {
    for (auto& x : v) x = 255;
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (unsigned i = 0; i < 64; ++i) v[static_cast<unsigned char>(a[i])] = static_cast<unsigned char>(i);
    v[static_cast<unsigned char>('=')] = 64;
  }
};
constexpr DecodeTable kDecode;
}  // namespace

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  if (in.empty()) return std::string();
  const size_t pad = (in.back() == '=') + (in[in.size() - 2] == '=');
  if (pad == 1 && in.back() != '=') return std::nullopt;  // "x=x" ends: '=' only at the end
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const size_t full = in.size() / 4 - (pad ? 1 : 0);  // quads without padding
  std::string out(in.size() / 4 * 3 - pad, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  unsigned bad = 0;
  for (size_t q = 0; q < full; ++q, p += 4, o += 3) {
    const unsigned a = kDecode.v[p[0]], b = kDecode.v[p[1]], c = kDecode.v[p[2]], d = kDecode.v[p[3]];
    bad |= (a | b | c | d) & 0xc0;  // 64 ('=') and 255 are both refused inside the data
    const unsigned w = (a << 18) | (b << 12) | (c << 6) | d;
    o[0] = static_cast<unsigned char>(w >> 16);
    o[1] = static_cast<unsigned char>(w >> 8);
    o[2] = static_cast<unsigned char>(w);
  }
  if (bad) return std::nullopt;
  if (pad) {
    const unsigned a = kDecode.v[p[0]], b = kDecode.v[p[1]];
    const unsigned c = pad == 2 ? 0 : kDecode.v[p[2]];
    if ((a | b | c) & 0xc0) return std::nullopt;
    const unsigned w = (a << 18) | (b << 12) | (c << 6);
    o[0] = static_cast<unsigned char>(w >> 16);
    if (pad == 1) o[1] = static_cast<unsigned char>(w >> 8);
  }
  return out;
}

}  // namespace cg
