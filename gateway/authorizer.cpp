#include "gateway/authorizer.hpp"

#include "common/log.hpp"

namespace cg::gateway {

ReverifyResult reverify_plane(plane::PlaneIndex& index, session::SessionRegistry& registry, const std::string& plane_type,
                              const std::string& plane_id) {
  ReverifyResult out;
  auto sessions = registry.sessions_of(plane_type, plane_id);
  if (sessions.empty()) return out;
  auto anchors = index.anchors(plane_type, plane_id);
  for (const auto& s : sessions) {
    if (s.handle->closing()) continue;
    auto verdicts = tls::verify_all(s.handle->peer(), anchors);
    std::set<std::string> ok;
    nlohmann::json reasons = nlohmann::json::array();
    for (const auto& v : verdicts) {
      if (v.ok) ok.insert(v.key);
      else reasons.push_back({{"cr", v.key}, {"reason", v.reason}});
    }
    auto [granted, revoked] = registry.set_authorized(*s.handle, ok);
    out.granted += granted.size();
    out.revoked += revoked.size();
    nlohmann::json f = {{"planeType", plane_type}, {"planeID", plane_id}, {"connectionID", s.handle->connection_id()}};
    if (!granted.empty() || !revoked.empty()) {
      f["authorizationsGranted"] = granted;
      f["authorizationsRevoked"] = revoked;
      f["notAuthorizedFor"] = reasons;
      log::info("CR re-validation completed", f);
    }
    if (ok.empty()) {
      ++out.closed;
      f["perCR"] = reasons;
      log::warn("agent no longer authorized for any CR; closing", f);
      s.handle->close(1008, "no longer authorized for any CR with planeID '" + plane_id + "'", session::CloseCause::revoked);
    }
  }
  return out;
}

}  // namespace cg::gateway
