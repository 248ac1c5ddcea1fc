// The peers an EndpointSlice of the mesh's headless Service lists (pure; its own translation unit so
// that the fuzz target links it without the Kubernetes client KubeMembership needs).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "mesh/mesh.hpp"

namespace cg::mesh {

// The peers one EndpointSlice lists (pure; hostile objects give no peers, never an exception):
// every endpoint, ready, not ready or terminating (a starting replica waits for its peers'
// directories before it turns ready, and a terminating one still drains requests that may wait for an
// agent moving to another replica, so both must get the directories), first address each,
// on the slice's port named "mesh" (else its only port, else `default_port`); the replica id is
// targetRef.name for a Pod, else the endpoint's hostname. `self` is left out.
std::vector<PeerAddress> peers_of_slice(const nlohmann::json& slice, const std::string& self, uint16_t default_port);

}  // namespace cg::mesh
