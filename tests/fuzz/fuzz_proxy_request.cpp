// /api/proxy requests: check_proxy_request (and is_blocked_path, canonical_header_key).
// Input: up to five '\n'-separated fields
//   method \n path \n raw query \n content-length \n upgrade
// The path is percent-decoded here (%2F, %00, %0A…) as the internal API decodes it before the check;
// content-length is decimal (empty or unparsable: absent); upgrade is "1" for upgrade headers.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/proxy_rules.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace cg::gateway;

namespace {
int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> f;
  while (f.size() < 4) {
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    f.push_back(in.substr(0, nl));
    in.remove_prefix(nl + 1);
  }
  f.push_back(in);
  f.resize(5);
  std::string_view method = f[0], query = f[2];
  std::string path = percent_decode(f[1]);
  std::optional<uint64_t> length;
  if (uint64_t v = 0; !f[3].empty() && std::from_chars(f[3].data(), f[3].data() + f[3].size(), v).ec == std::errc())
    length = v;
  bool upgrade = f[4] == "1";

  ProxyCheck c = check_proxy_request(method, path, query, length, upgrade);
  if (c.status != 0) {
    FUZZ_CHECK(c.status == 400 || c.status == 403 || c.status == 405 || c.status == 413);
    FUZZ_CHECK(!c.message.empty());
  } else {
    FUZZ_CHECK(c.message.empty());
    FUZZ_CHECK(c.target == "k8s" || c.target == "monitoring" || c.target == "logs");
    FUZZ_CHECK(!c.path.empty() && c.path.front() == '/');
    FUZZ_CHECK(c.path.find("..") == std::string::npos && c.path.find('\0') == std::string::npos);
    FUZZ_CHECK(!is_blocked_path(method, c.path));
    FUZZ_CHECK(!length || *length <= kMaxProxyBody);
    for (const auto* part : {&c.plane_type, &c.plane_id, &c.cr_namespace, &c.cr_name, &c.target})
      FUZZ_CHECK(part->find('/') == std::string::npos);
    FUZZ_CHECK(c.cr_key == (c.cr_namespace == "_cluster" ? std::string() : c.cr_namespace) + "/" + c.cr_name);
    FUZZ_CHECK(!upgrade || c.streaming);
  }
  std::string key = canonical_header_key(method);
  FUZZ_CHECK(key.size() == method.size());
  return 0;
}
