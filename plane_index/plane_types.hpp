// The six OpenChoreo plane kinds, their plane types and CR identities.
#pragma once
#include <array>
#include <compare>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cg::plane {

enum class Kind {
  DataPlane,
  ClusterDataPlane,
  WorkflowPlane,
  ClusterWorkflowPlane,
  ObservabilityPlane,
  ClusterObservabilityPlane
};

struct KindInfo {
  Kind kind;
  std::string_view name;  // "ClusterWorkflowPlane"
  std::string_view plural;  // "clusterworkflowplanes"
  std::string_view plane_type;  // "workflowplane" (wire value)
  bool cluster_scoped;
};

inline constexpr std::string_view kApiGroup = "openchoreo.dev";
inline constexpr std::string_view kApiVersion = "openchoreo.dev/v1alpha1";

const std::array<KindInfo, 6>& all_kinds();
const KindInfo& info(Kind k);
std::optional<Kind> kind_from_name(std::string_view name);
bool is_valid_plane_type(std::string_view plane_type);
// "ClusterWorkflowPlane" first: cluster-scoped kinds are listed before namespaced ones.
std::vector<Kind> kinds_for_plane_type(std::string_view plane_type);

// Identity of one plane CR. `ns` is empty for cluster-scoped kinds.
struct CrRef {
  Kind kind{};
  std::string ns;
  std::string name;
  // Upstream's authorization key: "ns/name", "/name" for cluster-scoped CRs.
  std::string auth_key() const { return ns + "/" + name; }
  std::string plane_type() const { return std::string(info(kind).plane_type); }
  // "ClusterWorkflowPlane//name" style unique id for maps and logs.
  std::string id() const { return std::string(info(kind).name) + "/" + ns + "/" + name; }
  auto operator<=>(const CrRef&) const = default;
  bool operator==(const CrRef&) const = default;
};

// Validation of spec.planeID (DNS label, at most 63 characters).
bool is_valid_plane_id(std::string_view id);

}  // namespace cg::plane
