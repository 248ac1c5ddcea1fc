// The internal API's /api/v1/planes endpoints (upstream plane_api.go) as plain functions of the
// registry and the index: no I/O, so they are unit-tested without a connection. The connection
// writes what they return (internal_api.cpp).
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gateway/internal_routes.hpp"
#include "plane_index/index.hpp"
#include "session/registry.hpp"

namespace cg::gateway {

// An endpoint's answer: 200 with `json`, or `status` with the plain-text `text` (no trailing newline).
struct PlaneAnswer {
  unsigned status = 200;
  nlohmann::json json;
  std::string text;
};

// GET /api/v1/planes/status: every plane with a session, upstream's {"planes": [...], "total": n}.
PlaneAnswer all_planes_status(session::SessionRegistry& registry);
// GET /api/v1/planes/{type}/{id}/status[/{ns}/{name}]: the plane-wide or the one CR's report.
PlaneAnswer plane_status(session::SessionRegistry& registry, const PlaneStatusRoute& r);
// POST /api/v1/planes/{type}/{id}/reconnect: every session of the plane is closed with 1001.
PlaneAnswer reconnect_plane(session::SessionRegistry& registry, const ReconnectRoute& r);
// POST /api/v1/planes/notify with `body` (already read, at most the notify limit): `deleted` closes
// the plane's sessions with 1001; `created`/`updated` re-verify them against the CRs' current CAs,
// with upstream's 400/500/503 texts for a bad payload or a CR whose CA cannot be used.
PlaneAnswer notify_plane(plane::PlaneIndex& index, session::SessionRegistry& registry, std::string_view body);

}  // namespace cg::gateway
