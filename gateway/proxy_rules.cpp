#include "gateway/proxy_rules.hpp"

#include <array>
#include <cctype>
#include <utility>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {

const char* const kStreamingNotSupported =
    "Streaming operations (watch, logs -f, exec, port-forward) are not yet supported through the HTTP proxy. "
    "Use the CQRS API (/api/k8s-resources/) for resource operations, or connect directly to the data plane for "
    "streaming operations.";

namespace {

constexpr std::array<PathFormRule, 11> kPathFormRules = {{
    {PathForm::ok, "ok", ""},
    {PathForm::query, "query", "Path contains '?' after decoding (%3F); the agent would start a query string there"},
    {PathForm::fragment, "fragment", "Path contains '#' after decoding (%23); the agent would cut a URL fragment there"},
    {PathForm::percent, "percent",
     "Path contains '%' after decoding (double encoding such as %252F); the agent would decode it again"},
    {PathForm::nul, "null_byte", "Path contains null bytes"},  // upstream's text
    {PathForm::control, "control", "Path contains a control character"},
    {PathForm::backslash, "backslash", "Path contains a backslash"},
    {PathForm::invalid_utf8, "invalid_utf8", "Path is not valid UTF-8"},
    {PathForm::empty_segment, "empty_segment", "Path contains an empty segment (//)"},
    {PathForm::dot_segment, "dot_segment", "Path contains a '.' segment"},
    {PathForm::traversal, "traversal", "Path contains directory traversal"},  // upstream's text
}};

// Upstream's current list (internal/cluster-gateway/validator.go: kube-system Secrets and
// "/apis/v1/serviceaccounts"), whole segments instead of substrings, plus token creation.
constexpr std::array<BuiltinDenyRule, 3> kBuiltinDenyRules = {{
    {"kube-system-secrets", "", "/api/v1/namespaces/kube-system/secrets/**"},
    {"serviceaccount-token", "POST", "/api/v1/namespaces/*/serviceaccounts/*/token"},
    {"apis-v1-serviceaccounts", "", "/apis/v1/serviceaccounts/**"},
}};

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep, start);
    if (p == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, p - start));
    start = p + 1;
  }
}

PathForm byte_form(unsigned char c) {
  switch (c) {
    case '?': return PathForm::query;
    case '#': return PathForm::fragment;
    case '%': return PathForm::percent;
    case '\\': return PathForm::backslash;
    case 0: return PathForm::nul;
    default: return (c < 0x20 || c == 0x7f) ? PathForm::control : PathForm::ok;
  }
}

Policy build_builtin_policy() {
  Policy p;
  p.default_action = PolicyAction::allow;
  for (const auto& b : kBuiltinDenyRules) {
    PolicyRule r;
    r.name = "builtin:" + std::string(b.name);
    r.action = PolicyAction::deny;
    if (!b.method.empty()) r.methods.emplace_back(b.method);
    r.paths.push_back(compile_path_pattern(b.pattern));
    p.rules.push_back(std::move(r));
  }
  return p;
}

}  // namespace

std::span<const PathFormRule> path_form_rules() { return kPathFormRules; }

const PathFormRule& path_form_rule(PathForm f) {
  for (const auto& r : kPathFormRules)
    if (r.form == f) return r;
  return kPathFormRules[0];
}

std::span<const BuiltinDenyRule> builtin_deny_rules() { return kBuiltinDenyRules; }

const Policy& builtin_policy() {
  static const Policy p = build_builtin_policy();
  return p;
}

CanonicalPath canonicalize_proxy_path(std::string_view path) {
  CanonicalPath out;
  // Bytes first, left to right: the first offending byte decides.
  for (size_t i = 0; i < path.size();) {
    auto c = static_cast<unsigned char>(path[i]);
    if (c < 0x80) {
      if (auto f = byte_form(c); f != PathForm::ok) {
        out.form = f;
        return out;
      }
      ++i;
      continue;
    }
    size_t n = utf8_sequence_length(path, i);
    if (n == 0) {
      out.form = PathForm::invalid_utf8;
      return out;
    }
    i += n;
  }
  if (path.empty() || path.front() != '/') {  // check_proxy_request always builds "/..."
    out.form = PathForm::empty_segment;
    return out;
  }
  std::vector<std::string_view> seg = split(path.substr(1), '/');
  if (seg.size() == 1 && seg[0].empty()) seg.clear();  // "/"
  if (!seg.empty() && seg.back().empty()) seg.pop_back();  // one trailing '/'
  for (auto s : seg) {
    if (s.empty()) out.form = PathForm::empty_segment;
    else if (s == ".") out.form = PathForm::dot_segment;
    else if (s == "..") out.form = PathForm::traversal;
    if (out.form != PathForm::ok) return out;
  }
  // Legacy watch paths name the same resources (k8s.io/apiserver RequestInfoFactory: "watch" right
  // after the group version).
  if (seg.size() >= 3 && seg[0] == "api" && seg[2] == "watch") seg.erase(seg.begin() + 2);
  else if (seg.size() >= 4 && seg[0] == "apis" && seg[3] == "watch") seg.erase(seg.begin() + 3);
  out.resource = "/";
  for (size_t i = 0; i < seg.size(); ++i) {
    if (i) out.resource += '/';
    out.resource += seg[i];
  }
  return out;
}

bool is_blocked_path(std::string_view method, std::string_view path) {
  auto canon = canonicalize_proxy_path(path);
  if (canon.form != PathForm::ok) return true;
  return evaluate(builtin_policy(), CallerIdentity{}, method, "k8s", canon.resource).action == PolicyAction::deny;
}

std::string canonical_header_key(std::string_view k) {
  std::string out(k);
  bool upper = true;
  for (char& c : out) {
    if (c == '-') {
      upper = true;
      continue;
    }
    c = upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
              : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    upper = false;
  }
  return out;
}

ProxyCheck check_proxy_request(std::string_view method, std::string_view decoded_path, std::string_view raw_query,
                               std::optional<uint64_t> content_length, bool upgrade_headers, uint64_t max_body,
                               const Policy* policy, const CallerIdentity* caller) {
  ProxyCheck c;
  constexpr std::string_view kPrefix = "/api/proxy/";
  std::string_view rest = decoded_path.substr(decoded_path.rfind(kPrefix, 0) == 0 ? kPrefix.size() : decoded_path.size());
  auto parts = split(rest, '/');
  if (decoded_path.rfind(kPrefix, 0) != 0 || parts.size() < 6) {
    c.status = 400;
    c.message = "invalid proxy URL format: /api/proxy/{planeType}/{planeID}/{namespace}/{crName}/{target}/{path}";
    return c;
  }
  c.plane_type = parts[0];
  c.plane_id = parts[1];
  c.cr_namespace = parts[2];
  c.cr_name = parts[3];
  c.target = parts[4];
  std::string path;
  for (size_t i = 5; i < parts.size(); ++i) {
    path += '/';
    path += parts[i];
  }
  c.path = path;
  static constexpr std::array<std::string_view, 7> kMethods = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
  bool method_ok = false;
  for (auto m : kMethods) method_ok |= m == method;
  const CallerIdentity anonymous;
  if (!caller) caller = &anonymous;
  if (!method_ok) {
    c.status = 405;
    c.message = "HTTP method not allowed: " + std::string(method);
    return c;
  }
  if (c.target != "k8s" && c.target != "monitoring" && c.target != "logs") {
    c.status = 403;
    c.message = "Target not allowed: " + c.target;
    return c;
  }
  auto canon = canonicalize_proxy_path(c.path);
  if (canon.form != PathForm::ok && c.path.find('\0') != std::string::npos) {
    // Upstream refuses a NUL byte too, but last (validator.go: deny-list substrings, declared size,
    // "..", NUL): such a request gets upstream's answer in upstream's order. Refused either way.
    static constexpr std::pair<std::string_view, std::string_view> kUpstreamEntries[] = {
        {"/api/v1/namespaces/kube-system/secrets", "builtin:kube-system-secrets"},
        {"/apis/v1/serviceaccounts", "builtin:apis-v1-serviceaccounts"}};
    for (auto [entry, rule] : kUpstreamEntries)
      if (c.path.find(entry) != std::string::npos) {
        c.status = 403;
        c.rule = rule;
        c.message = "Access to path is blocked: " + c.path;
        return c;
      }
    if (content_length && *content_length > max_body) {
      c.status = 413;
      c.message = "Request body too large: " + std::to_string(*content_length) + " bytes (max: " + std::to_string(max_body) + ")";
      return c;
    }
    c.status = 400;
    c.path_form = c.path.find("..") != std::string::npos ? PathForm::traversal : PathForm::nul;
    c.message = std::string(path_form_rule(c.path_form).message);
    return c;
  }
  if (canon.form != PathForm::ok) {
    c.status = 400;
    c.path_form = canon.form;
    c.message = std::string(path_form_rule(canon.form).message);
    return c;
  }
  c.resource_path = std::move(canon.resource);
  if (auto d = evaluate(builtin_policy(), *caller, method, c.target, c.resource_path); d.action == PolicyAction::deny) {
    c.status = 403;
    c.rule = d.rule;
    c.message = "Access to path is blocked: " + c.path;  // upstream's text
  } else if (policy) {
    if (auto p = evaluate(*policy, *caller, method, c.target, c.resource_path); p.action == PolicyAction::deny) {
      c.status = 403;
      c.rule = p.rule;
      c.message = "Access to path is denied by proxy policy (rule " + p.rule + "): " + c.path;
    }
  }
  if (c.status) return c;
  if (content_length && *content_length > max_body) {
    c.status = 413;
    c.message = "Request body too large: " + std::to_string(*content_length) + " bytes (max: " + std::to_string(max_body) + ")";
  } else if (c.path.find("..") != std::string::npos) {
    c.status = 400;
    c.path_form = PathForm::traversal;
    c.message = std::string(path_form_rule(PathForm::traversal).message);
  }
  if (c.status) return c;
  c.cr_key = (c.cr_namespace == "_cluster" ? std::string() : c.cr_namespace) + "/" + c.cr_name;
  c.streaming = raw_query.find("watch=true") != std::string_view::npos ||
                (c.path.find("/log") != std::string::npos && raw_query.find("follow=true") != std::string_view::npos) ||
                upgrade_headers;
  c.upgrade = upgrade_headers;
  return c;
}

void record_proxy_refusal(const ProxyCheck& c, const CallerIdentity& caller, std::string_view method,
                          std::string_view request_id) {
  nlohmann::json f = {
      {"requestID", request_id}, {"planeType", c.plane_type}, {"planeID", c.plane_id}, {"cr", c.cr_namespace + "/" + c.cr_name},
      {"target", c.target},      {"method", method},          {"path", c.path},        {"caller", identity_json(caller)},
      {"status", c.status},      {"reason", c.message}};
  if (!c.rule.empty()) f["rule"] = c.rule;
  if (c.path_form != PathForm::ok) f["pathForm"] = path_form_rule(c.path_form).reason;
  log::warn("request validation failed", f);
  if (c.path_form != PathForm::ok) metrics::proxy_path_rejected(std::string(path_form_rule(c.path_form).reason));
  if (!c.rule.empty()) metrics::proxy_policy_denied(c.rule);
}

}  // namespace cg::gateway
