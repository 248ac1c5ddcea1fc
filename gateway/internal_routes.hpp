// The internal API's routing, as a pure function of the method and the request target (tested and
// fuzzed): which endpoint, its parameters, or the error a caller gets before anything else happens.
// Upstream's handlers are matched text for text (internal/cluster-gateway/{server,exec,wirelogs,plane_api}.go).
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "session/registry.hpp"

namespace cg::gateway {

struct RouteError {
  unsigned status = 400;
  std::string message;  // plain text without the trailing newline
  std::string allow;  // 405: the Allow header
  bool websocket_version = false;  // gorilla's refusals carry "Sec-Websocket-Version: 13"
  bool malformed_target = false;  // the request target is not origin-form (counted as a rejected request)
};
struct ProxyRoute {};  // /api/proxy/…: validated by check_proxy_request (path and query in RoutedRequest)
struct NotifyRoute {};  // POST /api/v1/planes/notify
struct AllStatusRoute {};  // GET /api/v1/planes/status
struct PlaneStatusRoute {
  std::string plane_type, plane_id, cr_namespace, cr_name;
};
struct ReconnectRoute {
  std::string plane_type, plane_id;
};
struct ExecRoute {
  std::string plane_type, plane_id, cr_key;  // cr_key "ns/name", "/name" for _cluster
  std::string pod_namespace, pod_name, container, tty, stdin_;
  std::vector<std::string> command;
};
struct WirelogsRoute {
  std::string plane_type, plane_id, cr_key;
  std::string environment, ns, project, component;
};

using Route =
    std::variant<RouteError, ProxyRoute, NotifyRoute, AllStatusRoute, PlaneStatusRoute, ReconnectRoute, ExecRoute, WirelogsRoute>;

struct RoutedRequest {
  Route route;
  std::string path;  // percent-decoded
  std::string query;  // raw (encoded), without '?'
};

RoutedRequest route_internal(std::string_view method, std::string_view target);

// Upstream's PlaneConnectionStatus: {"planeType","planeID","connected","connectedAgents","lastSeen"}
// (lastSeen is the zero time 0001-01-01T00:00:00Z without sessions).
nlohmann::json plane_status_json(const std::string& type, const std::string& id, const session::SessionReport& r);

}  // namespace cg::gateway
