#include "gateway/upgrade_target.hpp"

#include <boost/url/parse.hpp>

#include "plane_index/plane_types.hpp"

namespace cg::gateway {

UpgradeDecision check_upgrade_target(const std::string& target) {
  UpgradeDecision d;
  auto u = boost::urls::parse_origin_form(target);
  if (!u) {
    d.status = 400;
    d.body = "malformed request target\n";
    return d;
  }
  if (u->path() != "/ws") {
    d.status = 404;
    d.body = "404 page not found\n";
    return d;
  }
  for (auto p : u->params()) {
    if (p.key == "planeType" && d.plane_type.empty()) d.plane_type = p.value;
    if (p.key == "planeID" && d.plane_id.empty()) d.plane_id = p.value;
  }
  if (d.plane_type.empty()) {
    d.status = 400;
    d.body = "missing planeType parameter\n";
  } else if (d.plane_id.empty()) {
    d.status = 400;
    d.body = "missing planeID parameter\n";
  } else if (!plane::is_valid_plane_type(d.plane_type)) {
    d.status = 400;
    d.body = "invalid planeType: must be 'dataplane', 'workflowplane', or 'observabilityplane'\n";
  }
  return d;
}

}  // namespace cg::gateway
