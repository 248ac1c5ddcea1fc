// The replica mesh's untrusted inputs: a peer's POST /mesh/v1/directory body (mesh::decode, then
// what Mesh::receive does with it: Directory::apply, and the reads routing and status make) and a
// Kubernetes EndpointSlice (mesh::peers_of_slice).
//
// Input: a selector byte, then the payload.
//   selector bit 0 = 0: directory updates, one per '\n'-separated line (at most kMaxLines), applied in
//     order to a fresh Directory (it has no reset), one second apart on both clocks.
//       bits 1-3: the lease in seconds (0-7) of expire();
//       bit 4: expire() after every line (else only at the end);
//       bit 5: those expire() calls also pass `alive` = the replicas of this line and the previous one.
//     At the end every replica is expired (alive = {}), so that departed reports are read too.
//   selector bit 0 = 1: an EndpointSlice (JSON).
//       bits 1-2: `self` ("", "gw-self", "gw-a", "gw-b"); bits 3-4: the default port (8445, 0, 1, 65535).
// Invariants checked (read off mesh/directory.cpp and mesh/endpoint_slice.cpp): decode sets an error
// exactly when it refuses; a decoded update is within the limits; decode(encode(u)) gives u back
// field by field and encodes to the same bytes (encode is what a publisher sends, so everything decode
// accepts must survive it); snapshots and byes always apply, a resync changes nothing; the reads agree
// with each other (session_counts, session_count, replicas, heard, planes, plane_has_sessions,
// candidates); sum_reports adds the counts and keeps the latest lastSeen and movingUntil; expire drops
// exactly the replicas past their lease or not alive. peers_of_slice never throws and gives peers with
// a host, bounded names, not `self`, all on one port.
//
// Finding (docs/fuzzing.md, "Findings"): parse_rfc3339 (common/time.cpp) overflowed a signed 64-bit
// nanosecond count for a time outside about 1677-09-21 to 2262-04-11 (decode() calls it on a report's
// times); it refuses such times since.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mesh/directory.hpp"
#include "mesh/endpoint_slice.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace cg;
using namespace cg::mesh;
using nlohmann::json;

namespace {
constexpr size_t kMaxLines = 16;
constexpr size_t kMaxReads = 8;  // up entries and reports of one update whose keys are read back
constexpr size_t kMaxKeys = 32;  // report keys read back at the end

using Clock = Directory::Clock;
SysTime wall_at(int s) { return SysTime{} + std::chrono::hours(24 * 365 * 50) + std::chrono::seconds(s); }
Clock::time_point steady_at(int s) { return Clock::time_point{} + std::chrono::hours(1) + std::chrono::seconds(s); }

bool is_name(const std::string& s) { return !s.empty() && s.size() <= kMaxName; }

void check_limits(const Update& u) {
  FUZZ_CHECK(is_name(u.replica) && is_name(u.instance));
  FUZZ_CHECK(u.up.size() <= kMaxEntries && u.down.size() <= kMaxEntries && u.reports.size() <= kMaxEntries);
  if (u.kind == UpdateKind::heartbeat || u.kind == UpdateKind::bye)
    FUZZ_CHECK(u.up.empty() && u.down.empty() && u.reports.empty());
  if (u.kind == UpdateKind::snapshot) FUZZ_CHECK(u.down.empty());
  for (const auto& s : u.up) {
    FUZZ_CHECK(is_name(s.connection_id) && is_name(s.plane_type) && is_name(s.plane_id));
    FUZZ_CHECK(s.crs.size() <= kMaxCrsPerSession && s.capabilities.size() <= 64);
    for (const auto& c : s.crs) FUZZ_CHECK(is_name(c));
    for (const auto& c : s.capabilities) FUZZ_CHECK(is_name(c));
  }
  for (const auto& d : u.down) FUZZ_CHECK(is_name(d));
  for (const auto& r : u.reports) {
    FUZZ_CHECK(is_name(r.plane_type) && is_name(r.key));
    FUZZ_CHECK(r.report.connected_agents >= 0 && r.report.connected_agents <= 10'000'000);
  }
}

bool same_report(const session::SessionReport& a, const session::SessionReport& b) {
  return a.connected_agents == b.connected_agents && a.last_seen == b.last_seen && a.earliest_connected == b.earliest_connected &&
         a.last_rise == b.last_rise && a.last_zero == b.last_zero && a.moving_until == b.moving_until;
}

void check_round_trip(const Update& u) {
  std::string body = encode(u);
  if (body.size() > kMaxUpdateBytes) return;  // not with libFuzzer's input sizes
  std::string err;
  auto back = decode(body, err);
  FUZZ_CHECK(back.has_value() && err.empty());
  FUZZ_CHECK(back->kind == u.kind && back->replica == u.replica && back->instance == u.instance);
  FUZZ_CHECK(back->seq == u.seq && back->draining == u.draining);
  FUZZ_CHECK(back->up == u.up);
  FUZZ_CHECK(back->down == u.down);
  FUZZ_CHECK(back->reports.size() == u.reports.size());
  for (size_t i = 0; i < u.reports.size(); ++i) {
    const auto &a = back->reports[i], &b = u.reports[i];
    FUZZ_CHECK(a.scope == b.scope && a.plane_type == b.plane_type && a.key == b.key);
    FUZZ_CHECK(same_report(a.report, b.report));
  }
  FUZZ_CHECK(encode(*back) == body);
}

// sum_reports over the directory's parts for one key, with and without a local part added (as
// SummingRegistry does).
void check_sum(const Directory& dir, const std::string& plane_type, const std::string& key, ReportScope scope, size_t replicas,
               SysTime wall) {
  auto parts = dir.reports(plane_type, key, scope);
  FUZZ_CHECK(parts.size() <= replicas + 1);  // one per replica, and the departed one
  for (int local = 0; local < 2; ++local) {
    if (local) {
      session::SessionReport mine;
      mine.connected_agents = 1;
      mine.last_rise = wall;
      mine.earliest_connected = wall;
      mine.last_seen = wall;
      parts.push_back(mine);
    }
    auto s = sum_reports(parts);
    int64_t total = 0;
    std::optional<SysTime> seen, moving;
    for (const auto& p : parts) {
      FUZZ_CHECK(p.connected_agents >= 0);
      total += p.connected_agents;
      if (p.last_seen && (!seen || *p.last_seen > *seen)) seen = p.last_seen;
      if (p.moving_until && (!moving || *p.moving_until > *moving)) moving = p.moving_until;
    }
    FUZZ_CHECK(s.connected_agents == total);
    FUZZ_CHECK(s.last_seen == seen && s.moving_until == moving);
    if (s.connected_agents > 0 && s.last_zero) FUZZ_CHECK(s.last_rise && *s.last_rise > *s.last_zero);
  }
}

// Every read routing and status make, for the keys `u` mentions; they must agree with each other.
void read_back(const Directory& dir, const Update* u, Clock::time_point now, SysTime wall) {
  auto reps = dir.replicas();
  auto counts = dir.session_counts();
  FUZZ_CHECK(reps.size() == counts.size());
  for (const auto& [id, n] : counts) {
    FUZZ_CHECK(reps.count(id));
    FUZZ_CHECK(dir.session_count(id) == n);
    auto h = dir.heard(id);
    FUZZ_CHECK(h && *h <= now);
  }
  for (const auto& [type, id] : dir.planes()) FUZZ_CHECK(dir.plane_has_sessions(type, id));
  (void)dir.any_draining();
  if (!u) return;
  size_t n = 0;
  for (const auto& s : u->up) {
    if (n++ == kMaxReads) break;
    std::string cr = s.crs.empty() ? std::string() : *s.crs.begin();
    std::string cap = s.capabilities.empty() ? std::string() : *s.capabilities.begin();
    for (const std::string& c : {std::string(), cap}) {
      auto cands = dir.candidates(s.plane_type, s.plane_id, cr, c);
      std::string prev;
      for (const auto& cand : cands) {
        FUZZ_CHECK(cand.sessions > 0 && counts.count(cand.replica) && cand.sessions <= counts[cand.replica]);
        FUZZ_CHECK(prev.empty() || prev < cand.replica);  // in replica order, each once
        prev = cand.replica;
      }
      if (!cands.empty()) FUZZ_CHECK(dir.plane_has_sessions(s.plane_type, s.plane_id));
    }
    check_sum(dir, s.plane_type, cr, ReportScope::cr, reps.size(), wall);
    check_sum(dir, s.plane_type, s.plane_id, ReportScope::plane, reps.size(), wall);
  }
  n = 0;
  for (const auto& r : u->reports) {
    if (n++ == kMaxReads) break;
    check_sum(dir, r.plane_type, r.key, r.scope, reps.size(), wall);
  }
}

bool mentions_all(const Update& u, const DirectoryChange& ch) {
  for (const auto& s : u.up) {
    if (!ch.planes.count({s.plane_type, s.plane_id})) return false;
    for (const auto& c : s.crs)
      if (!ch.crs.count({s.plane_type, c})) return false;
  }
  for (const auto& r : u.reports)
    if (!(r.scope == ReportScope::cr ? ch.crs : ch.planes).count({r.plane_type, r.key})) return false;
  return true;
}

// `byes`: replica → the instance whose bye came last (the directory's own memory, modelled; nullptr
// once more replicas said bye than the directory remembers).
void check_apply(const Directory& dir, const Update& u, ApplyResult r, const std::map<std::string, std::string>& before,
                 const DirectoryChange& ch, Clock::time_point now, const std::map<std::string, std::string>* byes) {
  auto after = dir.replicas();
  auto known = before.find(u.replica);
  const bool same_instance = known != before.end() && known->second == u.instance;
  if (u.kind != UpdateKind::bye && byes) {
    auto b = byes->find(u.replica);
    const bool departed = b != byes->end() && b->second == u.instance;
    FUZZ_CHECK((r == ApplyResult::departed) == departed);
  }
  if (r == ApplyResult::departed) {  // an update overtaken by its sender's bye changes nothing
    FUZZ_CHECK(u.kind != UpdateKind::bye && after == before && ch.empty());
    return;
  }
  switch (u.kind) {
    case UpdateKind::bye:
      FUZZ_CHECK(r == ApplyResult::applied);
      if (same_instance) {
        FUZZ_CHECK(!after.count(u.replica) && after.size() + 1 == before.size());
      } else {
        FUZZ_CHECK(after == before && ch.empty());
      }
      return;
    case UpdateKind::snapshot: {
      FUZZ_CHECK(r == ApplyResult::applied);
      std::set<std::string> ids;
      for (const auto& s : u.up) ids.insert(s.connection_id);
      FUZZ_CHECK(dir.session_count(u.replica) == ids.size());
      break;
    }
    case UpdateKind::delta:
    case UpdateKind::heartbeat:
      if (!same_instance) FUZZ_CHECK(r == ApplyResult::resync);
      if (r == ApplyResult::resync) {
        FUZZ_CHECK(after == before && ch.empty());
        return;
      }
      break;
  }
  auto it = after.find(u.replica);
  FUZZ_CHECK(it != after.end() && it->second == u.instance);
  FUZZ_CHECK(dir.heard(u.replica) == now);
  FUZZ_CHECK(mentions_all(u, ch));
  if (u.draining) FUZZ_CHECK(dir.any_draining());
}

void check_expire(Directory& dir, Clock::time_point now, Duration lease, SysTime wall, const std::set<std::string>* alive) {
  auto before = dir.replicas();
  DirectoryChange ch;
  auto dropped = dir.expire(now, lease, wall, ch, alive);
  auto after = dir.replicas();
  FUZZ_CHECK(after.size() + dropped.size() == before.size());
  for (const auto& d : dropped) FUZZ_CHECK(before.count(d) && !after.count(d));
  for (const auto& [id, _] : after) {
    auto h = dir.heard(id);
    FUZZ_CHECK(h && now - *h <= lease);
    if (alive) FUZZ_CHECK(alive->count(id));
  }
}

void fuzz_updates(uint8_t sel, std::string_view data) {
  const Duration lease = std::chrono::seconds((sel >> 1) & 7);
  const bool expire_each = sel & 0x10;
  const bool with_alive = sel & 0x20;
  Directory dir;
  std::map<std::string, std::string> byes;
  constexpr size_t kModelledByes = 1000;  // below what the directory remembers (1024)
  std::set<std::pair<std::string, std::string>> cr_keys, plane_keys;  // read back at the end
  std::string prev_replica;
  int line_no = 0;
  while (!data.empty() && line_no < static_cast<int>(kMaxLines)) {
    size_t nl = data.find('\n');
    std::string_view line = data.substr(0, nl);
    data = nl == std::string_view::npos ? std::string_view() : data.substr(nl + 1);
    ++line_no;
    const auto now = steady_at(line_no);
    const SysTime wall = wall_at(line_no);
    std::string err;
    auto u = decode(line, err);
    FUZZ_CHECK(u.has_value() == err.empty());
    if (u) {
      FUZZ_CHECK(!to_string(u->kind).empty());
      check_limits(*u);
      check_round_trip(*u);
      auto before = dir.replicas();
      DirectoryChange ch;
      auto r = dir.apply(*u, now, wall, ch);
      check_apply(dir, *u, r, before, ch, now, byes.size() <= kModelledByes ? &byes : nullptr);
      if (u->kind == UpdateKind::bye) byes[u->replica] = u->instance;
      read_back(dir, &*u, now, wall);
      for (const auto& s : u->up) {
        if (plane_keys.size() < kMaxKeys) plane_keys.insert({s.plane_type, s.plane_id});
        for (const auto& c : s.crs)
          if (cr_keys.size() < kMaxKeys) cr_keys.insert({s.plane_type, c});
      }
      for (const auto& rep : u->reports) {
        auto& keys = rep.scope == ReportScope::cr ? cr_keys : plane_keys;
        if (keys.size() < kMaxKeys) keys.insert({rep.plane_type, rep.key});
      }
    }
    if (expire_each) {
      std::set<std::string> alive;
      if (u) alive.insert(u->replica);
      if (!prev_replica.empty()) alive.insert(prev_replica);
      check_expire(dir, now, lease, wall, with_alive ? &alive : nullptr);
      read_back(dir, u ? &*u : nullptr, now, wall);
    }
    prev_replica = u ? u->replica : std::string();
  }
  // Everyone leaves: what is left is the departed reports.
  const auto now = steady_at(line_no + 1);
  const SysTime wall = wall_at(line_no + 1);
  std::set<std::string> none;
  check_expire(dir, now, lease, wall, &none);
  FUZZ_CHECK(dir.replicas().empty() && dir.session_counts().empty() && dir.planes().empty());
  for (const auto& [type, key] : cr_keys) check_sum(dir, type, key, ReportScope::cr, 0, wall);
  for (const auto& [type, key] : plane_keys) check_sum(dir, type, key, ReportScope::plane, 0, wall);
}

void fuzz_slice(uint8_t sel, std::string_view data) {
  static const char* const kSelf[] = {"", "gw-self", "gw-a", "gw-b"};
  static const uint16_t kPort[] = {8445, 0, 1, 65535};
  const std::string self = kSelf[(sel >> 1) & 3];
  const uint16_t default_port = kPort[(sel >> 3) & 3];
  json slice = json::parse(data, nullptr, false);
  if (slice.is_discarded()) return;
  auto peers = peers_of_slice(slice, self, default_port);  // an exception escaping is a finding
  size_t endpoints = 0;
  bool has_ports = false;
  if (slice.is_object()) {
    if (auto e = slice.find("endpoints"); e != slice.end() && e->is_array()) endpoints = e->size();
    if (auto p = slice.find("ports"); p != slice.end() && p->is_array()) has_ports = true;
  }
  FUZZ_CHECK(peers.size() <= endpoints);
  for (const auto& p : peers) {
    FUZZ_CHECK(!p.host.empty() && p.host.size() <= 253 && p.replica.size() <= 253);
    FUZZ_CHECK(self.empty() || p.replica != self);
    FUZZ_CHECK(p.port == peers.front().port);
    if (!has_ports) FUZZ_CHECK(p.port == default_port);
    FUZZ_CHECK(p.port == default_port || p.port >= 1);
  }
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (sel & 1) fuzz_slice(sel, rest);
  else fuzz_updates(sel, rest);
  return 0;
}
