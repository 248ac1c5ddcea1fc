// Parsing and validation of /api/proxy requests, in upstream's order (pure; tested and fuzzed).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cg::gateway {

inline constexpr uint64_t kMaxProxyBody = 10u * 1024 * 1024;

struct ProxyCheck {
  unsigned status = 0;  // 0: valid
  std::string message;  // plain-text error (without the trailing newline)
  std::string plane_type, plane_id, cr_namespace, cr_name, target, path;
  std::string cr_key;      // "ns/name", "/name" for _cluster
  bool streaming = false;  // watch=true, logs follow=true, or upgrade headers
  bool upgrade = false;    // Connection: Upgrade / Upgrade headers (port-forward, SPDY): always 501
};

// `decoded_path` is the percent-decoded URL path starting with /api/proxy/.
ProxyCheck check_proxy_request(std::string_view method, std::string_view decoded_path, std::string_view raw_query,
                               std::optional<uint64_t> content_length, bool upgrade_headers,
                               uint64_t max_body = kMaxProxyBody);

// Path prefix deny-list (prefix matching on whole segments) plus service-account token creation.
bool is_blocked_path(std::string_view method, std::string_view path);

// Go's canonical header key: "content-type" → "Content-Type".
std::string canonical_header_key(std::string_view k);

extern const char* const kStreamingNotSupported;

}  // namespace cg::gateway
