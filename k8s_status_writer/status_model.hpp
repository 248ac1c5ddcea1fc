// The pure part of status writing: a CR's desired status from its previous status, the session
// report and the CR's spec facts. No I/O, no clocks (time is an argument), no shared state.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/time.hpp"
#include "session/registry.hpp"

namespace cg::status {

struct AgentConnection {
  bool connected = false;
  int64_t connected_agents = 0;
  std::optional<SysTime> last_connected;
  std::optional<SysTime> last_disconnected;
  std::optional<SysTime> last_heartbeat;
  std::string message;
  bool operator==(const AgentConnection&) const = default;
};

struct Condition {
  std::string type;
  std::string status;  // "True" | "False" | "Unknown"
  std::string reason;
  std::string message;
  std::optional<SysTime> last_transition;
  int64_t observed_generation = 0;
  nlohmann::json extra = nlohmann::json::object();  // fields of foreign conditions we do not model
  bool operator==(const Condition&) const = default;
};

struct PlaneStatus {
  int64_t observed_generation = 0;
  std::vector<Condition> conditions;
  std::optional<AgentConnection> agent;
  bool operator==(const PlaneStatus&) const = default;

  nlohmann::json to_json() const;
  static PlaneStatus from_json(const nlohmann::json& j);  // tolerant: unknown/invalid fields are dropped
};

// What the CR itself says (from plane_index), independent of sessions.
struct SpecFacts {
  int64_t generation = 1;
  std::vector<std::string> spec_problems;  // → Ready False InvalidSpec
  std::string ca_error;  // → Ready False ClientCAError
  std::string observability_problem;  // → Ready False ObservabilityPlaneNotFound
};

inline constexpr const char* kAgentConnected = "AgentConnected";
inline constexpr const char* kReady = "Ready";

// Upstream's messages: "1 agent connected", "<N> agents connected (HA mode)", "No agents connected".
std::string connection_message(int64_t agents);

// Desired status. Transition rules: lastConnectedTime only on false→true (the event time from the
// report), lastDisconnectedTime only on true→false; a disconnect+reconnect that happened between two
// writes stamps both. lastHeartbeatTime is the latest inbound frame/pong. Conditions keep their
// lastTransitionTime unless their status changes; conditions of other types are kept untouched.
PlaneStatus compute_status(const PlaneStatus& prev, const session::SessionReport& report, const SpecFacts& facts, SysTime now);

// True when `a` and `b` differ in nothing but agentConnection.lastHeartbeatTime.
bool only_heartbeat_differs(const PlaneStatus& a, const PlaneStatus& b);

}  // namespace cg::status
