// The simulator's built-in backend: answers HTTP tunnel requests as a tiny Kubernetes API would.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace cg::sim {

// Builds the HTTPTunnelResponse (upstream §4.2) for one HTTPTunnelRequest.
nlohmann::json respond(const nlohmann::json& request, const std::string& plane_id, int agent_index);

// What the agent does with one text frame from the gateway: parse it (long base64 strings past the
// JSON lexer, as Go's decoder is fast on them) and serialize its answer (the body appended as is).
// parse_frame gives a discarded value for bad JSON.
nlohmann::json parse_frame(std::string_view text);
std::string dump_reply(nlohmann::json reply);

std::string b64encode(const std::string& in);
std::string b64decode(const std::string& in);

}  // namespace cg::sim
