// The simulator's built-in backend: answers HTTP tunnel requests as a tiny Kubernetes API would.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace cg::sim {

// Builds the HTTPTunnelResponse (upstream §4.2) for one HTTPTunnelRequest.
nlohmann::json respond(const nlohmann::json& request, const std::string& plane_id, int agent_index);

std::string b64encode(const std::string& in);
std::string b64decode(const std::string& in);

}  // namespace cg::sim
