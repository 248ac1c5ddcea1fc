#include "gateway/internal_routes.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include "common/time.hpp"

namespace cg::gateway {
namespace {

// Go's strings.SplitN(s, "/", n): at most n parts, the last one keeps the remaining separators.
std::vector<std::string> split_n(std::string_view s, size_t n) {
  std::vector<std::string> out;
  while (out.size() + 1 < n) {
    size_t p = s.find('/');
    if (p == std::string_view::npos) break;
    out.emplace_back(s.substr(0, p));
    s.remove_prefix(p + 1);
  }
  out.emplace_back(s);
  return out;
}

std::string cr_key_of(const std::string& ns, const std::string& name) {
  return (ns == "_cluster" ? std::string() : ns) + "/" + name;
}

// Go's url.Values.Get: the first value of the key ("" when absent).
struct Query {
  boost::urls::url_view u;
  std::string get(std::string_view key) const {
    for (auto p : u.params())
      if (p.key == key) return p.value;
    return {};
  }
  std::vector<std::string> all(std::string_view key) const {
    std::vector<std::string> out;
    for (auto p : u.params())
      if (p.key == key) out.push_back(p.value);
    return out;
  }
};

RouteError method_not_allowed(const char* allow) { return RouteError{405, "Method Not Allowed", allow}; }

Route exec_route(std::string_view rest, const Query& q) {
  auto parts = split_n(rest, 4);
  if (parts.size() < 4)
    return RouteError{400, "invalid exec URL: expected /api/exec/{planeType}/{planeID}/{crNamespace}/{crName}", {}};
  ExecRoute r;
  r.plane_type = parts[0];
  r.plane_id = parts[1];
  r.cr_key = cr_key_of(parts[2], parts[3]);
  r.pod_namespace = q.get("podNamespace");
  r.pod_name = q.get("podName");
  if (r.pod_namespace.empty() || r.pod_name.empty())
    return RouteError{400, "podNamespace and podName query parameters are required", {}};
  // Stricter than upstream, which formats them into the Kubernetes path unchecked.
  auto bad = [](const std::string& s) { return s.find('/') != std::string::npos || s == "." || s == ".."; };
  if (bad(r.pod_namespace) || bad(r.pod_name)) return RouteError{400, "invalid podNamespace or podName", {}};
  r.container = q.get("container");
  r.command = q.all("command");
  r.tty = q.get("tty");
  r.stdin_ = q.get("stdin");
  return r;
}

Route wirelogs_route(std::string_view rest, const Query& q) {
  auto parts = split_n(rest, 4);
  if (parts.size() < 4)
    return RouteError{400, "invalid wirelogs URL: expected /api/wirelogs/{planeType}/{planeID}/{crNamespace}/{crName}", {}};
  WirelogsRoute r;
  r.plane_type = parts[0];
  r.plane_id = parts[1];
  r.cr_key = cr_key_of(parts[2], parts[3]);
  r.environment = q.get("environment");
  r.ns = q.get("namespace");
  r.project = q.get("project");
  r.component = q.get("component");
  if (r.environment.empty() || r.ns.empty())
    return RouteError{400, "environment and namespace query parameters are required", {}};
  return r;
}

Route planes_route(std::string_view method, std::string_view path, const Query& q) {
  if (path == "/api/v1/planes/notify") {
    if (method != "POST") return method_not_allowed("POST");
    return NotifyRoute{};
  }
  if (path == "/api/v1/planes/status") {
    if (method != "GET") return method_not_allowed("GET");
    return AllStatusRoute{};
  }
  constexpr std::string_view kPrefix = "/api/v1/planes/";
  auto seg = split_n(path.substr(kPrefix.size()), 4);
  if (seg.size() == 3 && !seg[0].empty() && !seg[1].empty()) {
    if (seg[2] == "status") {
      if (method != "GET") return method_not_allowed("GET");
      return PlaneStatusRoute{seg[0], seg[1], q.get("namespace"), q.get("name")};
    }
    if (seg[2] == "reconnect") {
      if (method != "POST") return method_not_allowed("POST");
      return ReconnectRoute{seg[0], seg[1]};
    }
  }
  return RouteError{404, "404 page not found", {}};
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

RoutedRequest route_internal(std::string_view method, std::string_view target) {
  RoutedRequest out;
  auto u = boost::urls::parse_origin_form(target);
  if (!u) {
    out.route = RouteError{400, "malformed request target", {}, false, true};
    return out;
  }
  out.path = u->path();
  out.query = std::string(u->encoded_query());
  const Query q{*u};
  const std::string_view path = out.path;
  if (starts_with(path, "/api/proxy/")) out.route = ProxyRoute{};
  else if (starts_with(path, "/api/v1/planes/")) out.route = planes_route(method, path, q);
  else if (starts_with(path, "/api/exec/")) out.route = exec_route(path.substr(10), q);
  else if (starts_with(path, "/api/wirelogs/")) out.route = wirelogs_route(path.substr(14), q);
  else out.route = RouteError{404, "404 page not found", {}};
  return out;
}

nlohmann::json plane_status_json(const std::string& type, const std::string& id, const session::SessionReport& r) {
  return {{"planeType", type},
          {"planeID", id},
          {"connected", r.connected_agents > 0},
          {"connectedAgents", r.connected_agents},
          {"lastSeen", r.last_seen ? format_rfc3339_nano(*r.last_seen) : "0001-01-01T00:00:00Z"}};
}

}  // namespace cg::gateway
