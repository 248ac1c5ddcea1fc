#include "gateway/plane_endpoints.hpp"

#include <optional>
#include <set>
#include <utility>

#include "common/log.hpp"
#include "gateway/authorizer.hpp"

namespace cg::gateway {
namespace {

PlaneAnswer error(unsigned status, std::string text) { return PlaneAnswer{status, nullptr, std::move(text)}; }
PlaneAnswer ok(nlohmann::json j) { return PlaneAnswer{200, std::move(j), {}}; }

size_t disconnect_all(session::SessionRegistry& registry, const std::string& type, const std::string& id,
                      const std::string& why) {
  auto sessions = registry.sessions_of(type, id);
  for (const auto& s : sessions) s.handle->close(1001, why);
  log::info("disconnected all agents for plane", {{"planeType", type}, {"planeID", id}, {"disconnectedAgents", sessions.size()}});
  return sessions.size();
}

}  // namespace

PlaneAnswer all_planes_status(session::SessionRegistry& registry) {
  const auto planes = registry.planes();
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [type, id] : planes) arr.push_back(plane_status_json(type, id, registry.plane_report(type, id)));
  return ok({{"planes", arr}, {"total", arr.size()}});
}

PlaneAnswer plane_status(session::SessionRegistry& registry, const PlaneStatusRoute& r) {
  auto rep = r.cr_name.empty() ? registry.plane_report(r.plane_type, r.plane_id)
                               : registry.report(r.plane_type, r.cr_namespace + "/" + r.cr_name);
  return ok(plane_status_json(r.plane_type, r.plane_id, rep));
}

PlaneAnswer reconnect_plane(session::SessionRegistry& registry, const ReconnectRoute& r) {
  log::info("manual reconnection requested", {{"planeType", r.plane_type}, {"planeID", r.plane_id}});
  auto n = disconnect_all(registry, r.plane_type, r.plane_id, "reconnect requested");
  return ok({{"success", true}, {"disconnectedAgents", n}});
}

PlaneAnswer notify_plane(plane::PlaneIndex& index, session::SessionRegistry& registry, std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return error(400, "invalid payload: body is not a JSON object");
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  std::string type = str("planeType"), id = str("planeID"), event = str("event"), ns = str("namespace"), name = str("name");
  if (type.empty() || id.empty() || event.empty()) return error(400, "missing required fields: planeType, planeID, event");
  log::info("received plane notification", {{"planeType", type}, {"planeID", id}, {"event", event}, {"cr", ns + "/" + name}});
  if (event == "deleted") {
    auto n = disconnect_all(registry, type, id, "plane CR deleted");
    return ok({{"success", true}, {"action", "disconnect"}, {"disconnectedAgents", n}});
  }
  if (event != "created" && event != "updated") return error(400, "unknown event type: " + event);
  // The gateway follows CRs itself; a notification re-verifies the plane's live sessions now.
  // Upstream's answers (plane_api.go fetchCRClientCA, RevalidateCR).
  const std::string key = ns + "/" + name;
  std::optional<tls::CaState> state;
  for (const auto& a : index.anchors(type, id))
    if (a.key == key) state = a.state;
  if (!state || *state == tls::CaState::unreachable)
    return error(503, "failed to fetch CR CA for re-validation: CR " + key + " not found");
  if (*state == tls::CaState::not_configured)
    return error(503, "failed to fetch CR CA for re-validation: CR " + key + " has no CA configured");
  if (*state == tls::CaState::unparseable && !registry.sessions_of(type, id).empty())
    return error(500, "re-validation failed: failed to parse new CA certificate");
  auto res = reverify_plane(index, registry, type, id);
  return ok({{"success", true},
             {"action", "revalidate"},
             {"authorizationsGranted", res.granted},
             {"authorizationsRevoked", res.revoked}});
}

}  // namespace cg::gateway
