#include "gateway/agent_auth.hpp"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cctype>
#include <cstring>

#include "common/base64.hpp"

namespace cg::gateway {

std::optional<AgentAuthMode> parse_agent_auth_mode(std::string_view s) {
  if (s.empty() || s == "mtls") return AgentAuthMode::mtls;
  if (s == "forwarded-header") return AgentAuthMode::forwarded_header;
  return std::nullopt;
}

const char* to_string(AgentAuthMode m) { return m == AgentAuthMode::mtls ? "mtls" : "forwarded-header"; }

namespace {

std::string_view trim(std::string_view s, std::string_view set = " \t\r\n\v\f") {
  while (!s.empty() && set.find(s.front()) != std::string_view::npos) s.remove_prefix(1);
  while (!s.empty() && set.find(s.back()) != std::string_view::npos) s.remove_suffix(1);
  return s;
}

// An address as 16 bytes: IPv4 (and IPv4-mapped IPv6) in the first 4 with v6 = false.
std::optional<IpRange> parse_address(std::string_view text) {
  std::string t(text);
  IpRange r;
  if (inet_pton(AF_INET, t.c_str(), r.addr.data()) == 1) {
    r.prefix = 32;
    return r;
  }
  std::array<uint8_t, 16> a{};
  if (inet_pton(AF_INET6, t.c_str(), a.data()) != 1) return std::nullopt;
  static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.data(), mapped, 12) == 0) {
    std::memcpy(r.addr.data(), a.data() + 12, 4);
    r.prefix = 32;
    return r;
  }
  r.v6 = true;
  r.addr = a;
  r.prefix = 128;
  return r;
}

bool prefix_equal(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, unsigned bits) {
  const unsigned full = bits / 8, rest = bits % 8;
  if (std::memcmp(a.data(), b.data(), full) != 0) return false;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

}  // namespace

std::optional<std::vector<IpRange>> parse_ip_ranges(std::string_view list, std::string& error) {
  std::vector<IpRange> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (item.empty()) continue;
    const size_t slash = item.find('/');
    auto r = parse_address(item.substr(0, slash));
    // An IPv4-mapped IPv6 network is not accepted as a range: write the IPv4 range.
    if (!r || (!r->v6 && item.substr(0, slash).find(':') != std::string_view::npos && slash != std::string_view::npos)) {
      error = "'" + std::string(item) + "' is not an IP address or CIDR range";
      return std::nullopt;
    }
    if (slash != std::string_view::npos) {
      std::string_view bits = item.substr(slash + 1);
      const unsigned max = r->v6 ? 128 : 32;
      unsigned n = 0;
      bool ok = !bits.empty() && bits.size() <= 3;
      for (char c : bits) ok = ok && c >= '0' && c <= '9', n = n * 10 + static_cast<unsigned>(c - '0');
      if (!ok || n > max || (bits.size() > 1 && bits[0] == '0')) {
        error = "'" + std::string(item) + "': prefix length must be 0 to " + std::to_string(max);
        return std::nullopt;
      }
      r->prefix = n;
    }
    // Host bits below the prefix are dropped, as Go's net.ParseCIDR does ("10.1.2.3/8" is 10.0.0.0/8).
    for (unsigned bit = r->prefix; bit < (r->v6 ? 128u : 32u); ++bit)
      r->addr[bit / 8] = static_cast<uint8_t>(r->addr[bit / 8] & ~(0x80u >> (bit % 8)));
    out.push_back(*r);
  }
  return out;
}

bool ip_in_ranges(const std::vector<IpRange>& ranges, std::string_view address) {
  auto a = parse_address(address);
  if (!a) return false;
  for (const auto& r : ranges)
    if (r.v6 == a->v6 && prefix_equal(r.addr, a->addr, r.prefix)) return true;
  return false;
}

std::optional<std::string> path_unescape(std::string_view s) {
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

namespace {

// Go's encoding/pem getLine: one line without its "\n" (or "\r\n"), trailing spaces and tabs removed.
std::pair<std::string_view, std::string_view> get_line(std::string_view data) {
  size_t i = data.find('\n'), j;
  if (i == std::string_view::npos) {
    i = j = data.size();
  } else {
    j = i + 1;
    if (i > 0 && data[i - 1] == '\r') --i;
  }
  std::string_view line = data.substr(0, i);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
  return {line, data.substr(j)};
}

struct PemBlock {
  std::string type;
  std::string bytes;
};

// Go's encoding/pem Decode: the next well-formed block (malformed ones are skipped), and the rest.
std::optional<PemBlock> pem_decode(std::string_view& data) {
  constexpr std::string_view start = "\n-----BEGIN ", end = "\n-----END ", eol = "-----";
  std::string_view rest = data;
  for (;;) {
    if (rest.substr(0, start.size() - 1) == start.substr(1)) {
      rest.remove_prefix(start.size() - 1);
    } else if (size_t p = rest.find(start); p != std::string_view::npos) {
      rest.remove_prefix(p + start.size());
    } else {
      return std::nullopt;
    }
    auto [type_line, after_type] = get_line(rest);
    rest = after_type;
    if (type_line.size() < eol.size() || type_line.substr(type_line.size() - eol.size()) != eol) continue;
    type_line.remove_suffix(eol.size());
    bool headers = false;
    bool truncated = false;
    for (;;) {
      if (rest.empty()) {
        truncated = true;
        break;
      }
      auto [line, next] = get_line(rest);
      if (line.find(':') == std::string_view::npos) break;
      headers = true;
      rest = next;
    }
    if (truncated) return std::nullopt;
    size_t end_index, trailer_index;
    if (!headers && rest.substr(0, end.size() - 1) == end.substr(1)) {
      end_index = 0;
      trailer_index = end.size() - 1;
    } else {
      end_index = rest.find(end);
      if (end_index == std::string_view::npos) continue;
      trailer_index = end_index + end.size();
    }
    std::string_view trailer = rest.substr(trailer_index);
    const size_t trailer_len = type_line.size() + eol.size();
    if (trailer.size() < trailer_len) continue;
    std::string_view rest_of_end_line = trailer.substr(trailer_len);
    trailer = trailer.substr(0, trailer_len);
    if (trailer.substr(0, type_line.size()) != type_line || trailer.substr(type_line.size()) != eol) continue;
    if (!get_line(rest_of_end_line).first.empty()) continue;
    std::string b64;
    for (char c : rest.substr(0, end_index))
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') b64 += c;
    auto bytes = base64_decode(b64);
    if (!bytes) continue;
    data = get_line(rest.substr(end_index + end.size() - 1)).second;
    return PemBlock{std::string(type_line), std::move(*bytes)};
  }
}

// upstream's parseCACertificates: every CERTIFICATE block must parse; other blocks are skipped.
ForwardedChain certificates_from_pem(std::string_view pem) {
  ForwardedChain out;
  size_t count = 0;
  while (auto block = pem_decode(pem)) {
    if (block->type != "CERTIFICATE") continue;
    const auto* p = reinterpret_cast<const unsigned char*>(block->bytes.data());
    X509* cert = d2i_X509(nullptr, &p, static_cast<long>(block->bytes.size()));
    const bool whole = cert && p == reinterpret_cast<const unsigned char*>(block->bytes.data()) + block->bytes.size();
    if (!cert || !whole) {
      if (cert) X509_free(cert);
      out.pem.clear();
      out.error = std::string("forwarded certificate: failed to parse certificate") + (cert ? ": trailing data" : "");
      return out;
    }
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, cert);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    out.pem.append(data, static_cast<size_t>(n));
    BIO_free(bio);
    X509_free(cert);
    ++count;
  }
  if (count == 0) out.error = "forwarded certificate: no certificates found in PEM data";
  return out;
}

// upstream's splitUnquoted: splits at `sep` outside double quotes (a backslash escapes inside them).
std::vector<std::string_view> split_unquoted(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  bool in_quotes = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      if (in_quotes && i + 1 < s.size()) ++i;
    } else if (s[i] == '"') {
      in_quotes = !in_quotes;
    } else if (s[i] == sep && !in_quotes) {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

ForwardedChain decode_url_encoded_pem(std::string_view encoded) {
  auto decoded = path_unescape(encoded);
  return certificates_from_pem(decoded ? std::string_view(*decoded) : encoded);
}

}  // namespace

ForwardedChain parse_forwarded_cert_chain(std::string_view raw) {
  if (raw.substr(0, 10) == "-----BEGIN") return decode_url_encoded_pem(raw);
  // Envoy XFCC: only the first (client-facing) element.
  std::string_view element = split_unquoted(raw, ',')[0];
  std::string_view leaf, chain;
  for (std::string_view pair : split_unquoted(element, ';')) {
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    std::string key(trim(pair.substr(0, eq)));
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = trim(trim(pair.substr(eq + 1)), "\"");
    if (key == "cert") leaf = value;
    else if (key == "chain") chain = value;
  }
  std::string_view source = chain.empty() ? leaf : chain;
  if (source.empty()) return {"", "forwarded certificate: XFCC header has no Cert or Chain element"};
  return decode_url_encoded_pem(source);
}

}  // namespace cg::gateway
