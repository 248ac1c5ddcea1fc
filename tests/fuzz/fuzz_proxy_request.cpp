// /api/proxy requests: check_proxy_request (and is_blocked_path, canonical_header_key), with the
// built-in deny-list and a strict proxy policy.
// Input: up to six '\n'-separated fields
//   method \n path \n raw query \n content-length \n upgrade \n caller CN
// The path is percent-decoded here (%2F, %00, %0A…) as the internal API decodes it before the check;
// content-length is decimal (empty or unparsable: absent); upgrade is "1" for upgrade headers; the
// caller CN is empty for an anonymous caller.
// Invariant (issue 13, canonical paths): any accepted path, concatenated with its query as upstream's
// agent does (tests/fuzz/agent_url_model.hpp), makes the agent request exactly the path that was
// judged, and neither the deny-list nor the policy denies that path.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/proxy_policy.hpp"
#include "gateway/proxy_rules.hpp"
#include "tests/fuzz/agent_url_model.hpp"
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

namespace {
// deploy/examples/proxy-policy/proxy-policy-strict.yaml, in short.
const char* const kPolicy = R"(
defaultAction: allow
rules:
  - {name: cm-lists, action: allow, callers: [{commonName: cm}], methods: [GET], targets: [k8s],
     paths: [/api/v1/secrets, /api/v1/serviceaccounts]}
  - {name: cm-secrets, action: allow, callers: [{commonName: cm}], paths: ["/api/v1/namespaces/*/secrets/**"]}
  - {name: deny-secrets, action: deny, paths: ["/api/v1/secrets/**", "/api/v1/namespaces/*/secrets/**"]}
  - {name: deny-sa, action: deny, paths: ["/api/v1/serviceaccounts/**"]}
)";
const Policy* policy = nullptr;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  static const Policy p = parse_policy(kPolicy);
  policy = &p;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> f;
  while (f.size() < 5) {
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    f.push_back(in.substr(0, nl));
    in.remove_prefix(nl + 1);
  }
  f.push_back(in);
  f.resize(6);
  std::string_view method = f[0], query = f[2];
  std::string path = percent_decode(f[1]);
  std::optional<uint64_t> length;
  if (uint64_t v = 0; !f[3].empty() && std::from_chars(f[3].data(), f[3].data() + f[3].size(), v).ec == std::errc()) length = v;
  bool upgrade = f[4] == "1";
  CallerIdentity caller;
  if (!f[5].empty()) {
    caller.verified = true;
    caller.common_name = std::string(f[5]);
  }

  ProxyCheck c = check_proxy_request(method, path, query, length, upgrade, kMaxProxyBody, policy, &caller);
  if (c.status != 0) {
    FUZZ_CHECK(c.status == 400 || c.status == 403 || c.status == 405 || c.status == 413);
    FUZZ_CHECK(!c.message.empty());
    if (c.path_form != PathForm::ok) FUZZ_CHECK(c.status == 400 && c.message == path_form_rule(c.path_form).message);
    if (!c.rule.empty()) FUZZ_CHECK(c.status == 403);
  } else {
    FUZZ_CHECK(c.message.empty());
    FUZZ_CHECK(c.target == "k8s" || c.target == "monitoring" || c.target == "logs");
    FUZZ_CHECK(!c.path.empty() && c.path.front() == '/');
    FUZZ_CHECK(c.path.find("..") == std::string::npos && c.path.find('\0') == std::string::npos);
    FUZZ_CHECK(!is_blocked_path(method, c.path));
    FUZZ_CHECK(c.rule.empty() && c.path_form == PathForm::ok);
    // What the agent requests is what was judged.
    auto canon = canonicalize_proxy_path(c.path);
    FUZZ_CHECK(canon.form == PathForm::ok && canon.resource == c.resource_path);
    if (auto requested = cg::testing::agent_requested_path(c.path, query)) {
      FUZZ_CHECK(*requested == c.path);
      auto seen = canonicalize_proxy_path(*requested);
      FUZZ_CHECK(seen.form == PathForm::ok && seen.resource == c.resource_path);
      FUZZ_CHECK(evaluate(builtin_policy(), caller, method, c.target, seen.resource).action == PolicyAction::allow);
      FUZZ_CHECK(evaluate(*policy, caller, method, c.target, seen.resource).action == PolicyAction::allow);
    }
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
