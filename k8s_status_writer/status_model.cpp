#include "k8s_status_writer/status_model.hpp"

namespace cg::status {
namespace {

std::optional<SysTime> time_field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return parse_rfc3339(it->get<std::string>());
}

// Kubernetes serializes metav1.Time with second precision: truncate so that comparisons with what
// was read back are exact.
SysTime trunc(SysTime t) { return std::chrono::time_point_cast<std::chrono::seconds>(t); }
std::optional<SysTime> trunc(std::optional<SysTime> t) {
  if (t) return trunc(*t);
  return t;
}

void set_condition(std::vector<Condition>& conds, Condition c, SysTime now) {
  for (auto& old : conds) {
    if (old.type != c.type) continue;
    c.last_transition = old.status == c.status && old.last_transition ? old.last_transition : trunc(now);
    c.extra = old.extra;
    old = std::move(c);
    return;
  }
  c.last_transition = trunc(now);
  conds.push_back(std::move(c));
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "; ") + x;
  return s;
}
}  // namespace

std::string connection_message(int64_t n) {
  if (n <= 0) return "No agents connected";
  if (n == 1) return "1 agent connected";
  return std::to_string(n) + " agents connected (HA mode)";
}

nlohmann::json PlaneStatus::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  j["observedGeneration"] = observed_generation;
  nlohmann::json conds = nlohmann::json::array();
  for (const auto& c : conditions) {
    nlohmann::json cj = c.extra.is_object() ? c.extra : nlohmann::json::object();
    cj["type"] = c.type;
    cj["status"] = c.status;
    cj["reason"] = c.reason;
    cj["message"] = c.message;
    cj["lastTransitionTime"] = format_rfc3339(c.last_transition.value_or(SysTime{}));
    if (c.observed_generation) cj["observedGeneration"] = c.observed_generation;
    conds.push_back(std::move(cj));
  }
  j["conditions"] = std::move(conds);
  if (agent) {
    nlohmann::json a = {{"connected", agent->connected}, {"connectedAgents", agent->connected_agents}};
    if (agent->last_connected) a["lastConnectedTime"] = format_rfc3339(*agent->last_connected);
    if (agent->last_disconnected) a["lastDisconnectedTime"] = format_rfc3339(*agent->last_disconnected);
    if (agent->last_heartbeat) a["lastHeartbeatTime"] = format_rfc3339(*agent->last_heartbeat);
    if (!agent->message.empty()) a["message"] = agent->message;
    j["agentConnection"] = std::move(a);
  }
  return j;
}

PlaneStatus PlaneStatus::from_json(const nlohmann::json& j) {
  PlaneStatus s;
  if (!j.is_object()) return s;
  if (auto it = j.find("observedGeneration"); it != j.end() && it->is_number_integer())
    s.observed_generation = it->get<int64_t>();
  if (auto it = j.find("conditions"); it != j.end() && it->is_array()) {
    for (const auto& cj : *it) {
      if (!cj.is_object() || !cj.contains("type") || !cj["type"].is_string()) continue;
      Condition c;
      c.type = cj["type"].get<std::string>();
      c.status = cj.value("status", "Unknown");
      c.reason = cj.value("reason", "");
      c.message = cj.value("message", "");
      c.last_transition = time_field(cj, "lastTransitionTime");
      if (auto g = cj.find("observedGeneration"); g != cj.end() && g->is_number_integer())
        c.observed_generation = g->get<int64_t>();
      nlohmann::json extra = cj;
      for (const char* k : {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}) extra.erase(k);
      c.extra = extra;
      s.conditions.push_back(std::move(c));
    }
  }
  if (auto it = j.find("agentConnection"); it != j.end() && it->is_object()) {
    AgentConnection a;
    a.connected = it->value("connected", false);
    if (auto n = it->find("connectedAgents"); n != it->end() && n->is_number_integer()) a.connected_agents = n->get<int64_t>();
    a.last_connected = time_field(*it, "lastConnectedTime");
    a.last_disconnected = time_field(*it, "lastDisconnectedTime");
    a.last_heartbeat = time_field(*it, "lastHeartbeatTime");
    a.message = it->value("message", "");
    s.agent = a;
  }
  return s;
}

PlaneStatus compute_status(const PlaneStatus& prev, const session::SessionReport& r, const SpecFacts& f, SysTime now) {
  PlaneStatus next = prev;
  next.observed_generation = f.generation;

  AgentConnection a = prev.agent.value_or(AgentConnection{});
  const bool was = prev.agent && prev.agent->connected;
  const bool is = r.connected_agents > 0;
  a.connected = is;
  a.connected_agents = r.connected_agents;
  a.message = connection_message(r.connected_agents);
  if (is) {
    if (r.last_seen) a.last_heartbeat = trunc(r.last_seen);
    if (!was) {
      a.last_connected = trunc(r.last_rise ? r.last_rise : r.earliest_connected ? r.earliest_connected : now);
    } else if (r.last_zero && r.last_rise && *r.last_rise >= *r.last_zero &&
               (!a.last_disconnected || trunc(*r.last_zero) > *a.last_disconnected) &&
               (!a.last_connected || trunc(*r.last_zero) >= *a.last_connected)) {
      // A disconnect and reconnect happened between two writes: record both events.
      a.last_disconnected = trunc(*r.last_zero);
      a.last_connected = trunc(*r.last_rise);
    }
  } else if (was) {
    a.last_disconnected = trunc(r.last_zero.value_or(now));
  }
  next.agent = a;

  Condition ac{kAgentConnected, is ? "True" : "False",   is ? "AgentConnected" : "NoAgentConnected", a.message, {},
               f.generation,    nlohmann::json::object()};
  set_condition(next.conditions, ac, now);

  Condition ready{kReady, "False", "", "", {}, f.generation, nlohmann::json::object()};
  if (!f.spec_problems.empty()) {
    ready.reason = "InvalidSpec";
    ready.message = join(f.spec_problems);
  } else if (!f.ca_error.empty()) {
    ready.reason = "ClientCAError";
    ready.message = "client CA cannot be loaded: " + f.ca_error;
  } else if (!f.observability_problem.empty()) {
    ready.reason = "ObservabilityPlaneNotFound";
    ready.message = f.observability_problem;
  } else if (!is) {
    ready.reason = "NoAgentConnected";
    ready.message = "No agents connected";
  } else {
    ready.status = "True";
    ready.reason = "Ready";
    ready.message = a.message;
  }
  set_condition(next.conditions, ready, now);
  return next;
}

bool only_heartbeat_differs(const PlaneStatus& a, const PlaneStatus& b) {
  if (a == b) return false;
  PlaneStatus x = a;
  PlaneStatus y = b;
  if (x.agent) x.agent->last_heartbeat.reset();
  if (y.agent) y.agent->last_heartbeat.reset();
  return x == y;
}

}  // namespace cg::status
