#include "gateway/proxy_rules.hpp"

#include <array>
#include <cctype>
#include <vector>

namespace cg::gateway {

const char* const kStreamingNotSupported =
    "Streaming operations (watch, logs -f, exec, port-forward) are not yet supported through the HTTP proxy. "
    "Use the CQRS API (/api/k8s-resources/) for resource operations, or connect directly to the data plane for "
    "streaming operations.";

namespace {
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

std::string_view trim_right_slash(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return s;
}

bool prefix_match(std::string_view path, std::string_view blocked) {
  path = trim_right_slash(path);
  blocked = trim_right_slash(blocked);
  return path == blocked || (path.size() > blocked.size() && path.substr(0, blocked.size()) == blocked &&
                             path[blocked.size()] == '/');
}
}  // namespace

bool is_blocked_path(std::string_view method, std::string_view path) {
  static constexpr std::array<std::string_view, 3> kBlocked = {
      "/api/v1/namespaces/kube-system/secrets", "/api/v1/secrets", "/api/v1/serviceaccounts"};
  for (auto b : kBlocked)
    if (prefix_match(path, b)) return true;
  if (method != "POST") return false;
  std::string_view t = path;
  while (!t.empty() && t.front() == '/') t.remove_prefix(1);
  t = trim_right_slash(t);
  auto seg = split(t, '/');
  return seg.size() == 7 && seg[0] == "api" && seg[1] == "v1" && seg[2] == "namespaces" && !seg[3].empty() &&
         seg[4] == "serviceaccounts" && !seg[5].empty() && seg[6] == "token";
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
                               std::optional<uint64_t> content_length, bool upgrade_headers, uint64_t max_body) {
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
  if (!method_ok) {
    c.status = 405;
    c.message = "HTTP method not allowed: " + std::string(method);
  } else if (c.target != "k8s" && c.target != "monitoring" && c.target != "logs") {
    c.status = 403;
    c.message = "Target not allowed: " + c.target;
  } else if (is_blocked_path(method, c.path)) {
    c.status = 403;
    c.message = "Access to path is blocked: " + c.path;
  } else if (content_length && *content_length > max_body) {
    c.status = 413;
    c.message = "Request body too large: " + std::to_string(*content_length) + " bytes (max: " + std::to_string(max_body) + ")";
  } else if (c.path.find("..") != std::string::npos) {
    c.status = 400;
    c.message = "Path contains directory traversal";
  } else if (c.path.find('\0') != std::string::npos) {
    c.status = 400;
    c.message = "Path contains null bytes";
  }
  if (c.status) return c;
  c.cr_key = (c.cr_namespace == "_cluster" ? std::string() : c.cr_namespace) + "/" + c.cr_name;
  c.streaming = raw_query.find("watch=true") != std::string_view::npos ||
                (c.path.find("/log") != std::string::npos && raw_query.find("follow=true") != std::string_view::npos) ||
                upgrade_headers;
  c.upgrade = upgrade_headers;
  return c;
}

}  // namespace cg::gateway
