// Parsing and validation of /api/proxy requests, in upstream's order (pure; tested and fuzzed).
// The path is judged exactly as the agent will request it: upstream's agent concatenates
// endpoint + path + "?" + query and parses the result as a URL, so a decoded '?', '#' or '%' in the
// path would turn into a query, a fragment or a second decoding there. Such paths (and the other
// forms in kPathFormRules) are refused with 400 before any deny rule runs; the rules then judge the
// canonical resource path (legacy /watch/ prefix removed). docs/compatibility.md, "Proxy deny-list".
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "gateway/proxy_policy.hpp"

namespace cg::gateway {

inline constexpr uint64_t kMaxProxyBody = 10u * 1024 * 1024;

// Why a path is refused before the rules (ok: it is not).
enum class PathForm {
  ok,
  query,  // '?' (from %3F): the agent would start the query there
  fragment,  // '#' (from %23): the agent's URL parser would cut a fragment there
  percent,  // '%' (from %25, double encoding): the agent's URL parser would decode it again
  nul,  // NUL byte
  control,  // other bytes below 0x20, and 0x7f (the agent's URL parser refuses them)
  backslash,  // '\' (some URL parsers read it as '/')
  invalid_utf8,  // bytes that are not UTF-8 (the tunnel frame is JSON)
  empty_segment,  // "//" (the API server does not merge them: /namespaces//secrets names namespace "")
  dot_segment,  // a "." segment (the API server does not remove it)
  traversal,  // a ".." segment, or ".." anywhere (upstream's check, kept)
};

// The refusals as data: one row per form, with its metric label and its plain-text message.
struct PathFormRule {
  PathForm form;
  std::string_view reason;  // cluster_gateway_proxy_path_rejected_total{reason}
  std::string_view message;  // the 400 body (plus "\n")
};
std::span<const PathFormRule> path_form_rules();
const PathFormRule& path_form_rule(PathForm f);

struct CanonicalPath {
  PathForm form = PathForm::ok;
  // When ok: the path the rules judge. A single trailing '/' is dropped, and the legacy watch
  // prefix is removed (/api/v1/watch/X → /api/v1/X, /apis/G/V/watch/X → /apis/G/V/X), as the
  // API server's request-info parser does.
  std::string resource;
};
// `path` is the decoded path the agent will receive (it starts with '/').
CanonicalPath canonicalize_proxy_path(std::string_view path);

// The built-in deny-list (always applied, before a --proxy-policy-file), as data. It matches
// upstream's current list (kube-system Secrets; the /apis/v1/serviceaccounts entry, which no API
// serves) plus the service-account token subresource. `method` empty: every method.
struct BuiltinDenyRule {
  std::string_view name;
  std::string_view method;
  std::string_view pattern;  // a PathPattern (proxy_policy.hpp)
};
std::span<const BuiltinDenyRule> builtin_deny_rules();
const Policy& builtin_policy();  // the rows above as a Policy (defaultAction allow)

struct ProxyCheck {
  unsigned status = 0;  // 0: valid
  std::string message;  // plain-text error (without the trailing newline)
  std::string plane_type, plane_id, cr_namespace, cr_name, target, path;
  std::string resource_path;  // canonical path the rules judged (set once the form is ok)
  PathForm path_form = PathForm::ok;
  std::string rule;  // a 403 by a rule: "builtin:<name>", a policy rule's name, or "default"
  std::string cr_key;  // "ns/name", "/name" for _cluster
  bool streaming = false;  // watch=true, logs follow=true, or upgrade headers
  bool upgrade = false;  // Connection: Upgrade / Upgrade headers (port-forward, SPDY): always 501
};

// `decoded_path` is the percent-decoded URL path starting with /api/proxy/. `policy` (may be null)
// is the --proxy-policy-file policy, judged for `caller` after the built-in deny-list.
ProxyCheck check_proxy_request(std::string_view method, std::string_view decoded_path, std::string_view raw_query,
                               std::optional<uint64_t> content_length, bool upgrade_headers, uint64_t max_body = kMaxProxyBody,
                               const Policy* policy = nullptr, const CallerIdentity* caller = nullptr);

// The built-in deny-list on a decoded path (canonicalised first; a path of a refused form counts
// as blocked).
bool is_blocked_path(std::string_view method, std::string_view path);

// A refused request's log line ("request validation failed", with the caller's identity, method,
// path, rule) and its metric (path form or rule). Call once per refusal.
void record_proxy_refusal(const ProxyCheck& c, const CallerIdentity& caller, std::string_view method,
                          std::string_view request_id);

// Go's canonical header key: "content-type" → "Content-Type".
std::string canonical_header_key(std::string_view k);

extern const char* const kStreamingNotSupported;

}  // namespace cg::gateway
