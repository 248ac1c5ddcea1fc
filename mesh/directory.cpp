#include "mesh/directory.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace cg::mesh {

std::string_view to_string(UpdateKind k) {
  switch (k) {
    case UpdateKind::snapshot: return "snapshot";
    case UpdateKind::delta: return "delta";
    case UpdateKind::heartbeat: return "heartbeat";
    case UpdateKind::bye: return "bye";
  }
  return "unknown";
}

session::SessionReport sum_reports(const std::vector<session::SessionReport>& parts) {
  session::SessionReport s;
  std::optional<SysTime> z;
  for (const auto& p : parts) {
    s.connected_agents += p.connected_agents;
    if (p.last_seen && (!s.last_seen || *p.last_seen > *s.last_seen)) s.last_seen = p.last_seen;
    if (p.connected_agents > 0 && p.earliest_connected &&
        (!s.earliest_connected || *p.earliest_connected < *s.earliest_connected))
      s.earliest_connected = p.earliest_connected;
    if (p.last_zero && (!z || *p.last_zero > *z)) z = p.last_zero;
    if (p.moving_until && (!s.moving_until || *p.moving_until > *s.moving_until)) s.moving_until = p.moving_until;
  }
  if (s.connected_agents == 0) {
    s.last_zero = z;
    for (const auto& p : parts)
      if (p.last_rise && (!s.last_rise || *p.last_rise > *s.last_rise)) s.last_rise = p.last_rise;
    return s;
  }
  // Agents now. Was the total at 0 at z, with every replica that has agents rising after it?
  bool zero_at_z = z.has_value();
  std::optional<SysTime> first_rise;
  for (const auto& p : parts) {
    if (p.connected_agents == 0) continue;
    if (!p.last_rise) {
      zero_at_z = false;
    } else {
      if (!first_rise || *p.last_rise < *first_rise) first_rise = p.last_rise;
      if (z && (*p.last_rise <= *z || (p.last_zero && *p.last_zero > *z))) zero_at_z = false;
    }
  }
  s.last_rise = first_rise;
  if (zero_at_z) s.last_zero = z;
  return s;
}

// ---- codec ------------------------------------------------------------------------------------------
namespace {
using nlohmann::json;

json time_json(const std::optional<SysTime>& t) { return t ? json(format_rfc3339_nano(*t)) : json(nullptr); }

struct Reader {
  std::string& error;
  bool fail(std::string why) {
    if (error.empty()) error = std::move(why);
    return false;
  }
  bool name(const json& j, const char* field, std::string& out, bool required = true) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return required ? fail(std::string("missing ") + field) : true;
    if (!it->is_string()) return fail(std::string(field) + " is not a string");
    const auto& s = it->get_ref<const std::string&>();
    if (s.size() > kMaxName) return fail(std::string(field) + " is too long");
    if (required && s.empty()) return fail(std::string(field) + " is empty");
    out = s;
    return true;
  }
  bool time(const json& j, const char* field, std::optional<SysTime>& out) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return true;
    if (!it->is_string()) return fail(std::string(field) + " is not a time");
    auto t = parse_rfc3339(it->get_ref<const std::string&>());
    if (!t) return fail(std::string(field) + " is not an RFC 3339 time");
    out = t;
    return true;
  }
  bool names(const json& j, const char* field, std::set<std::string>& out, size_t max) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return true;
    if (!it->is_array()) return fail(std::string(field) + " is not an array");
    if (it->size() > max) return fail(std::string(field) + " has too many entries");
    for (const auto& v : *it) {
      if (!v.is_string() || v.get_ref<const std::string&>().empty() || v.get_ref<const std::string&>().size() > kMaxName)
        return fail(std::string(field) + " has an entry that is not a name");
      out.insert(v.get<std::string>());
    }
    return true;
  }
  // An optional boolean field.
  bool flag(const json& j, const char* field, bool& out) {
    auto it = j.find(field);
    if (it == j.end()) return true;
    if (!it->is_boolean()) return fail(std::string(field) + " is not a boolean");
    out = it->get<bool>();
    return true;
  }
  const json* array(const json& j, const char* field) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) return &empty;
    if (!it->is_array()) {
      fail(std::string(field) + " is not an array");
      return nullptr;
    }
    if (it->size() > kMaxEntries) {
      fail(std::string(field) + " has too many entries");
      return nullptr;
    }
    return &*it;
  }
  json empty = json::array();
};
}  // namespace

std::string encode(const Update& u) {
  json j;
  j["kind"] = std::string(to_string(u.kind));
  j["replica"] = u.replica;
  j["instance"] = u.instance;
  j["seq"] = u.seq;
  if (u.draining) j["draining"] = true;
  json up = json::array();
  for (const auto& s : u.up) {
    json e{{"id", s.connection_id}, {"planeType", s.plane_type}, {"planeID", s.plane_id}, {"crs", s.crs}};
    if (!s.capabilities.empty()) e["capabilities"] = s.capabilities;
    if (s.draining) e["draining"] = true;
    up.push_back(std::move(e));
  }
  if (!up.empty()) j["up"] = std::move(up);
  if (!u.down.empty()) j["down"] = u.down;
  json reps = json::array();
  for (const auto& r : u.reports) {
    json e{{"scope", r.scope == ReportScope::cr ? "cr" : "plane"},
           {"planeType", r.plane_type},
           {"key", r.key},
           {"count", r.report.connected_agents}};
    if (r.report.last_seen) e["lastSeen"] = time_json(r.report.last_seen);
    if (r.report.earliest_connected) e["earliestConnected"] = time_json(r.report.earliest_connected);
    if (r.report.last_rise) e["lastRise"] = time_json(r.report.last_rise);
    if (r.report.last_zero) e["lastZero"] = time_json(r.report.last_zero);
    if (r.report.moving_until) e["movingUntil"] = time_json(r.report.moving_until);
    reps.push_back(std::move(e));
  }
  if (!reps.empty()) j["reports"] = std::move(reps);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<Update> decode(std::string_view body, std::string& error) {
  error.clear();
  if (body.size() > kMaxUpdateBytes) {
    error = "update larger than " + std::to_string(kMaxUpdateBytes) + " bytes";
    return std::nullopt;
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  Reader rd{error};
  Update u;
  std::string kind;
  if (!rd.name(j, "kind", kind)) return std::nullopt;
  if (kind == "snapshot") u.kind = UpdateKind::snapshot;
  else if (kind == "delta") u.kind = UpdateKind::delta;
  else if (kind == "heartbeat") u.kind = UpdateKind::heartbeat;
  else if (kind == "bye") u.kind = UpdateKind::bye;
  else {
    error = "unknown kind";
    return std::nullopt;
  }
  if (!rd.name(j, "replica", u.replica) || !rd.name(j, "instance", u.instance)) return std::nullopt;
  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_unsigned()) {
    error = "seq is not a non-negative integer";
    return std::nullopt;
  }
  u.seq = seq->get<uint64_t>();
  if (!rd.flag(j, "draining", u.draining)) return std::nullopt;
  const json* up = rd.array(j, "up");
  if (!up) return std::nullopt;
  for (const auto& e : *up) {
    if (!e.is_object()) {
      error = "up has an entry that is not an object";
      return std::nullopt;
    }
    SessionEntry s;
    if (!rd.name(e, "id", s.connection_id) || !rd.name(e, "planeType", s.plane_type) || !rd.name(e, "planeID", s.plane_id) ||
        !rd.names(e, "crs", s.crs, kMaxCrsPerSession) || !rd.names(e, "capabilities", s.capabilities, 64) ||
        !rd.flag(e, "draining", s.draining))
      return std::nullopt;
    u.up.push_back(std::move(s));
  }
  const json* down = rd.array(j, "down");
  if (!down) return std::nullopt;
  for (const auto& e : *down) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty() || e.get_ref<const std::string&>().size() > kMaxName) {
      error = "down has an entry that is not a connection id";
      return std::nullopt;
    }
    u.down.push_back(e.get<std::string>());
  }
  const json* reps = rd.array(j, "reports");
  if (!reps) return std::nullopt;
  for (const auto& e : *reps) {
    if (!e.is_object()) {
      error = "reports has an entry that is not an object";
      return std::nullopt;
    }
    ReportEntry r;
    std::string scope;
    if (!rd.name(e, "scope", scope) || !rd.name(e, "planeType", r.plane_type) || !rd.name(e, "key", r.key)) return std::nullopt;
    if (scope == "cr") r.scope = ReportScope::cr;
    else if (scope == "plane") r.scope = ReportScope::plane;
    else {
      error = "unknown report scope";
      return std::nullopt;
    }
    auto n = e.find("count");
    if (n == e.end() || !n->is_number_unsigned() || n->get<uint64_t>() > 10'000'000) {
      error = "count is not a non-negative integer";
      return std::nullopt;
    }
    r.report.connected_agents = static_cast<int>(n->get<uint64_t>());
    if (!rd.time(e, "lastSeen", r.report.last_seen) || !rd.time(e, "earliestConnected", r.report.earliest_connected) ||
        !rd.time(e, "lastRise", r.report.last_rise) || !rd.time(e, "lastZero", r.report.last_zero) ||
        !rd.time(e, "movingUntil", r.report.moving_until))
      return std::nullopt;
    u.reports.push_back(std::move(r));
  }
  if (u.kind != UpdateKind::delta && u.kind != UpdateKind::snapshot && (!u.up.empty() || !u.down.empty() || !u.reports.empty())) {
    error = std::string(to_string(u.kind)) + " carries entries";
    return std::nullopt;
  }
  if (u.kind == UpdateKind::snapshot && !u.down.empty()) {
    error = "snapshot carries down";
    return std::nullopt;
  }
  return u;
}

// ---- directory ----------------------------------------------------------------------------------
void Directory::add_session(Replica& r, SessionEntry e, DirectoryChange& change) {
  remove_session(r, e.connection_id, change);
  auto [it, _] = r.sessions.emplace(e.connection_id, std::move(e));
  const SessionEntry& s = it->second;
  r.by_plane[{s.plane_type, s.plane_id}][s.connection_id] = &s;
  change.planes.insert({s.plane_type, s.plane_id});
  for (const auto& k : s.crs) change.crs.insert({s.plane_type, k});
}

void Directory::put_reports(Replica& r, const std::vector<ReportEntry>& reports, DirectoryChange& change) {
  for (const auto& e : reports) {
    Key k{e.plane_type, e.key};
    (e.scope == ReportScope::cr ? r.cr_reports : r.plane_reports)[k] = e.report;
    (e.scope == ReportScope::cr ? change.crs : change.planes).insert(k);
  }
}

void Directory::remove_session(Replica& r, const std::string& id, DirectoryChange& change) {
  auto it = r.sessions.find(id);
  if (it == r.sessions.end()) return;
  const SessionEntry& s = it->second;
  Key plane{s.plane_type, s.plane_id};
  if (auto p = r.by_plane.find(plane); p != r.by_plane.end()) {
    p->second.erase(id);
    if (p->second.empty()) r.by_plane.erase(p);
  }
  change.planes.insert(plane);
  for (const auto& k : s.crs) change.crs.insert({s.plane_type, k});
  r.sessions.erase(it);
}

ApplyResult Directory::apply(const Update& u, Clock::time_point now, SysTime wall_now, DirectoryChange& change) {
  cg::MutexLock lk(mu_);
  if (u.kind == UpdateKind::bye) {
    if (auto it = replicas_.find(u.replica); it != replicas_.end() && it->second.instance == u.instance) {
      depart_locked(u.replica, it->second, wall_now, change);
      replicas_.erase(it);
    }
    if (said_bye_.size() >= kMaxSaidBye && !said_bye_.count(u.replica)) said_bye_.erase(said_bye_.begin());
    said_bye_[u.replica] = u.instance;
    return ApplyResult::applied;
  }
  if (auto it = said_bye_.find(u.replica); it != said_bye_.end() && it->second == u.instance) return ApplyResult::departed;
  if (u.kind == UpdateKind::snapshot) {
    auto& r = replicas_[u.replica];
    // Everything it said before is replaced; what changed is what either version mentions.
    for (const auto& [id, s] : r.sessions) {
      change.planes.insert({s.plane_type, s.plane_id});
      for (const auto& k : s.crs) change.crs.insert({s.plane_type, k});
    }
    for (const auto& [k, _] : r.cr_reports) change.crs.insert(k);
    for (const auto& [k, _] : r.plane_reports) change.planes.insert(k);
    if (r.draining != u.draining)
      for (const auto& [k, _] : r.by_plane) change.planes.insert(k);
    r = Replica{};
    r.instance = u.instance;
    r.seq = u.seq;
    r.draining = u.draining;
    r.heard = now;
    for (const auto& s : u.up) add_session(r, s, change);
    put_reports(r, u.reports, change);
    return ApplyResult::applied;
  }
  auto it = replicas_.find(u.replica);
  if (it == replicas_.end() || it->second.instance != u.instance) return ApplyResult::resync;
  Replica& r = it->second;
  if (u.kind == UpdateKind::heartbeat) {
    if (u.seq != r.seq) return ApplyResult::resync;
  } else if (u.seq != r.seq + 1) {
    return ApplyResult::resync;
  }
  r.seq = u.seq;
  r.heard = now;
  if (r.draining != u.draining) {
    r.draining = u.draining;
    for (const auto& [k, sessions] : r.by_plane) {
      change.planes.insert(k);
      for (const auto& [_, s] : sessions)
        for (const auto& c : s->crs) change.crs.insert({s->plane_type, c});
    }
  }
  for (const auto& id : u.down) remove_session(r, id, change);
  for (const auto& s : u.up) add_session(r, s, change);
  put_reports(r, u.reports, change);
  return ApplyResult::applied;
}

void Directory::depart_locked(const std::string&, Replica& r, SysTime wall_now, DirectoryChange& change) {
  auto leave = [&](std::map<Key, session::SessionReport>& from, std::map<Key, session::SessionReport>& to,
                   std::set<Key>& changed) {
    for (const auto& [k, rep] : from) {
      changed.insert(k);
      session::SessionReport d;
      d.last_seen = rep.last_seen;
      d.last_rise = rep.last_rise;
      d.last_zero = rep.connected_agents > 0 ? std::optional<SysTime>(wall_now) : rep.last_zero;
      d.moving_until = rep.moving_until;
      auto& slot = to[k];
      slot = sum_reports({slot, d});
    }
  };
  leave(r.cr_reports, departed_cr_, change.crs);
  leave(r.plane_reports, departed_plane_, change.planes);
  for (const auto& [k, _] : r.by_plane) change.planes.insert(k);
  for (const auto& [_, s] : r.sessions)
    for (const auto& c : s.crs) change.crs.insert({s.plane_type, c});
}

std::vector<std::string> Directory::expire(Clock::time_point now, Duration lease, SysTime wall_now, DirectoryChange& change,
                                           const std::set<std::string>* alive) {
  cg::MutexLock lk(mu_);
  std::vector<std::string> dropped;
  for (auto it = replicas_.begin(); it != replicas_.end();) {
    const bool dead = now - it->second.heard > lease || (alive && !alive->count(it->first));
    if (!dead) {
      ++it;
      continue;
    }
    depart_locked(it->first, it->second, wall_now, change);
    dropped.push_back(it->first);
    it = replicas_.erase(it);
  }
  return dropped;
}

std::vector<session::SessionReport> Directory::reports(const std::string& plane_type, const std::string& key,
                                                       ReportScope scope) const {
  cg::MutexLock lk(mu_);
  std::vector<session::SessionReport> out;
  Key k{plane_type, key};
  for (const auto& [_, r] : replicas_) {
    const auto& m = scope == ReportScope::cr ? r.cr_reports : r.plane_reports;
    if (auto it = m.find(k); it != m.end()) out.push_back(it->second);
  }
  const auto& dep = scope == ReportScope::cr ? departed_cr_ : departed_plane_;
  if (auto it = dep.find(k); it != dep.end()) out.push_back(it->second);
  return out;
}

std::vector<Candidate> Directory::candidates(const std::string& plane_type, const std::string& plane_id,
                                             const std::string& cr_key, std::string_view capability) const {
  cg::MutexLock lk(mu_);
  std::vector<Candidate> out;
  for (const auto& [id, r] : replicas_) {
    if (r.draining) continue;
    auto p = r.by_plane.find({plane_type, plane_id});
    if (p == r.by_plane.end()) continue;
    size_t n = 0;
    for (const auto& [_, s] : p->second)
      if (!s->draining && s->crs.count(cr_key) && (capability.empty() || s->capabilities.count(std::string(capability)))) ++n;
    if (n) out.push_back({id, n});
  }
  return out;
}

session::PickMiss Directory::pick_miss(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                       std::string_view capability) const {
  using session::PickMiss;
  cg::MutexLock lk(mu_);
  PickMiss miss = PickMiss::no_agent;
  for (const auto& [_, r] : replicas_) {
    auto p = r.by_plane.find({plane_type, plane_id});
    if (p == r.by_plane.end()) continue;
    for (const auto& [_2, s] : p->second) {
      if (s->crs.empty()) continue;  // on its way out, as locally
      miss = std::min(miss, PickMiss::not_authorized);
      if (!s->crs.count(cr_key)) continue;
      if (!capability.empty() && !s->capabilities.count(std::string(capability))) {
        miss = std::min(miss, PickMiss::not_capable);
        continue;
      }
      return PickMiss::moving;
    }
  }
  return miss;
}

bool Directory::plane_has_sessions(const std::string& plane_type, const std::string& plane_id) const {
  cg::MutexLock lk(mu_);
  for (const auto& [_, r] : replicas_)
    if (r.by_plane.count({plane_type, plane_id})) return true;
  return false;
}

std::set<std::pair<std::string, std::string>> Directory::planes() const {
  cg::MutexLock lk(mu_);
  std::set<Key> out;
  for (const auto& [_, r] : replicas_)
    for (const auto& [k, _2] : r.by_plane) out.insert(k);
  return out;
}

std::map<std::string, std::string> Directory::replicas() const {
  cg::MutexLock lk(mu_);
  std::map<std::string, std::string> out;
  for (const auto& [id, r] : replicas_) out[id] = r.instance;
  return out;
}

size_t Directory::session_count(const std::string& replica) const {
  cg::MutexLock lk(mu_);
  auto it = replicas_.find(replica);
  return it == replicas_.end() ? 0 : it->second.sessions.size();
}

bool Directory::any_draining() const {
  cg::MutexLock lk(mu_);
  for (const auto& [_, r] : replicas_)
    if (r.draining) return true;
  return false;
}

std::optional<Directory::Clock::time_point> Directory::heard(const std::string& replica) const {
  cg::MutexLock lk(mu_);
  auto it = replicas_.find(replica);
  if (it == replicas_.end()) return std::nullopt;
  return it->second.heard;
}

std::map<std::string, size_t> Directory::session_counts() const {
  cg::MutexLock lk(mu_);
  std::map<std::string, size_t> out;
  for (const auto& [id, r] : replicas_) out[id] = r.sessions.size();
  return out;
}

}  // namespace cg::mesh
