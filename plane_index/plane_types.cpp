#include "plane_index/plane_types.hpp"

#include <stdexcept>

namespace cg::plane {

const std::array<KindInfo, 6>& all_kinds() {
  static const std::array<KindInfo, 6> kinds{{
      {Kind::ClusterDataPlane, "ClusterDataPlane", "clusterdataplanes", "dataplane", true},
      {Kind::DataPlane, "DataPlane", "dataplanes", "dataplane", false},
      {Kind::ClusterWorkflowPlane, "ClusterWorkflowPlane", "clusterworkflowplanes", "workflowplane", true},
      {Kind::WorkflowPlane, "WorkflowPlane", "workflowplanes", "workflowplane", false},
      {Kind::ClusterObservabilityPlane, "ClusterObservabilityPlane", "clusterobservabilityplanes", "observabilityplane", true},
      {Kind::ObservabilityPlane, "ObservabilityPlane", "observabilityplanes", "observabilityplane", false},
  }};
  return kinds;
}

const KindInfo& info(Kind k) {
  for (const auto& i : all_kinds())
    if (i.kind == k) return i;
  throw std::logic_error("unknown plane kind");
}

std::optional<Kind> kind_from_name(std::string_view name) {
  for (const auto& i : all_kinds())
    if (i.name == name) return i.kind;
  return std::nullopt;
}

bool is_valid_plane_type(std::string_view t) { return t == "dataplane" || t == "workflowplane" || t == "observabilityplane"; }

std::vector<Kind> kinds_for_plane_type(std::string_view t) {
  std::vector<Kind> out;
  for (const auto& i : all_kinds())
    if (i.plane_type == t) out.push_back(i.kind);
  return out;
}

bool is_valid_plane_id(std::string_view id) {
  if (id.empty() || id.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(id.front()) || !alnum(id.back())) return false;
  for (char c : id)
    if (!alnum(c) && c != '-') return false;
  return true;
}

}  // namespace cg::plane
