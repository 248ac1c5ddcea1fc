// Plane CRs and Secrets as the gateway needs them, parsed from Kubernetes-shaped JSON
// (the file source converts YAML to JSON first; the Kubernetes source gets JSON).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plane_index/plane_types.hpp"

namespace cg::plane {

struct SecretKeyRef {
  std::string name;
  std::string ns;  // empty: not given
  std::string key;
};

struct ObservabilityRef {
  std::string kind;  // as written; empty means the default (ClusterObservabilityPlane)
  std::string name;
};

struct PlaneCR {
  CrRef ref;
  int64_t generation = 1;
  std::string plane_id;  // effective: spec.planeID, else metadata.name
  bool plane_id_explicit = false;
  std::map<std::string, std::string> annotations;
  std::optional<std::string> ca_value;
  std::optional<SecretKeyRef> ca_secret;
  bool has_client_ca = false;
  std::optional<ObservabilityRef> obs_ref;
  nlohmann::json spec = nlohmann::json::object();
  nlohmann::json status;  // as observed (Kubernetes source), null otherwise
  std::string resource_version;
  std::string origin;  // "file.yaml#2" or "kubernetes"

  std::string display_name() const {
    auto it = annotations.find("openchoreo.dev/display-name");
    return it == annotations.end() ? ref.name : it->second;
  }
};

struct SecretObj {
  std::string ns;
  std::string name;
  std::map<std::string, std::string> data;  // decoded bytes
  std::string resource_version;
};

struct PlaneWorld {
  std::vector<PlaneCR> crs;
  std::vector<SecretObj> secrets;
};

struct ParsedObject {
  std::optional<PlaneCR> cr;
  std::optional<SecretObj> secret;
  std::string error;  // set when the object is rejected
};

// Parses one object (a plane CR of the six kinds, apiVersion openchoreo.dev/v1alpha1, or a v1 Secret).
// metadata.name and metadata.namespace are validated as the API server does (ValidateObjectMeta):
// names of plane CRs and Secrets are DNS-1123 subdomains, namespaces DNS-1123 labels; an object
// with another name is rejected (these names end up in status file names and API paths).
ParsedObject parse_object(const nlohmann::json& obj);

// Kubernetes' IsDNS1123Subdomain: at most 253 characters of [a-z0-9.-], every dot-separated part
// non-empty and starting and ending with [a-z0-9] (no per-part length limit, as in Kubernetes).
bool is_dns1123_subdomain(std::string_view s);
// Kubernetes' IsDNS1123Label: at most 63 characters of [a-z0-9-], starting and ending with [a-z0-9].
bool is_dns1123_label(std::string_view s);
// Why `value` (at `field`, e.g. "metadata.name") is not a valid subdomain / label; "" when it is.
// The value is quoted with control and non-ASCII bytes escaped and cut to 80 characters.
std::string dns1123_subdomain_problem(std::string_view field, std::string_view value);
std::string dns1123_label_problem(std::string_view field, std::string_view value);

}  // namespace cg::plane
