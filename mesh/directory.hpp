// The session directory of the other replicas (docs/architecture.md, "Replicas"): what each peer
// says about its own agent sessions (for routing) and its per-CR and per-plane SessionReports (for
// status, summed over replicas). Pure data and the wire codec: no I/O, thread-safe.
//
// Each replica publishes its own part to every peer as a stream of updates: a snapshot (its whole
// state, after a (re)start or whenever the receiver asks for one), then deltas numbered 1, 2, … and
// heartbeats. A delta that does not follow the last update applied (a lost or repeated one, or an
// unknown process instance) is refused with `resync`, and the publisher sends a snapshot next.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/thread_annotations.hpp"
#include "common/time.hpp"
#include "session/registry.hpp"

namespace cg::mesh {

// One agent session as its replica describes it.
struct SessionEntry {
  std::string connection_id;
  std::string plane_type;
  std::string plane_id;
  std::set<std::string> crs;  // authorized CR auth keys
  std::set<std::string> capabilities;  // X-Cluster-Agent-Capabilities tokens
  bool draining = false;  // got GOAWAY (rebalancer): never picked
  bool operator==(const SessionEntry&) const = default;
};

// A report about one CR (scope cr: key = CR auth key) or one plane (scope plane: key = planeID).
enum class ReportScope : uint8_t { cr, plane };
struct ReportEntry {
  ReportScope scope = ReportScope::cr;
  std::string plane_type;
  std::string key;
  session::SessionReport report;
};

// The cluster-wide report from each replica's own (docs/architecture.md, "Replicas"): counts add,
// lastSeen is the latest, earliestConnected the earliest among replicas with agents. The total
// went to 0 at z = the latest lastZero only if every replica with agents now rose after z (and had
// not been at 0 later than z): then lastZero = z and lastRise = the earliest such rise. Otherwise
// (one replica's agents left while another's stayed: the total never reached 0, or an agent moved
// to a survivor before its departed replica was dropped) the sum has agents and no lastZero.
session::SessionReport sum_reports(const std::vector<session::SessionReport>& parts);

enum class UpdateKind : uint8_t { snapshot, delta, heartbeat, bye };
std::string_view to_string(UpdateKind k);

struct Update {
  UpdateKind kind = UpdateKind::heartbeat;
  std::string replica;  // the publisher's --replica-id
  std::string instance;  // random per process start: a restarted replica is a new instance
  uint64_t seq = 0;  // snapshot: 0; then 1, 2, … for deltas; heartbeats carry the last seq
  bool draining = false;  // shutting down: its sessions are not picked for new requests
  std::vector<SessionEntry> up;  // added or changed sessions (snapshot: all of them)
  std::vector<std::string> down;  // connection ids gone (delta only)
  std::vector<ReportEntry> reports;  // reports that changed (snapshot: all it knows)
};

// Limits of a decoded update (peers are authenticated, their bytes are still checked).
inline constexpr size_t kMaxUpdateBytes = 64u << 20;
inline constexpr size_t kMaxName = 512;  // ids, plane types and ids, CR keys, capability tokens
inline constexpr size_t kMaxEntries = 1u << 20;  // sessions, ids or reports in one update
inline constexpr size_t kMaxCrsPerSession = 1024;

std::string encode(const Update& u);
// nullopt with `error` set when the body is not a well-formed update within the limits.
std::optional<Update> decode(std::string_view body, std::string& error);

// departed: the update comes from an instance that already said bye (an update it sent before
// its bye, overtaken on the other connection); it is dropped, so the replica does not come back.
enum class ApplyResult : uint8_t { applied, resync, departed };

// What changed for status and routing when updates were applied or replicas dropped.
struct DirectoryChange {
  std::set<std::pair<std::string, std::string>> crs;  // (planeType, CR auth key)
  std::set<std::pair<std::string, std::string>> planes;  // (planeType, planeID)
  bool empty() const { return crs.empty() && planes.empty(); }
};

// A peer's part of the directory, for routing.
struct Candidate {
  std::string replica;
  size_t sessions = 0;  // its sessions authorized for the CR (with the capability)
};

class Directory {
 public:
  using Clock = std::chrono::steady_clock;
  // Applies one update received at `now`. A `bye` drops the replica at once (its sessions left the
  // sum as their own deltas said; what is left is recorded as departed at `wall_now`).
  ApplyResult apply(const Update& u, Clock::time_point now, SysTime wall_now, DirectoryChange& change) CG_EXCLUDES(mu_);
  // Drops every replica not heard from since `now - lease` (static peers: liveness from the links),
  // or not in `alive` when given (Kubernetes: the replicas whose Lease is held). Their CRs' reports
  // leave the sum; each CR that had their agents keeps a departed report (count 0, lastZero
  // `wall_now`) so that status records when those agents were last counted. Returns the dropped ids.
  std::vector<std::string> expire(Clock::time_point now, Duration lease, SysTime wall_now, DirectoryChange& change,
                                  const std::set<std::string>* alive = nullptr) CG_EXCLUDES(mu_);
  // Every replica's report (departed ones included), without the local replica's: add the local one
  // and sum them with sum_reports().
  std::vector<session::SessionReport> reports(const std::string& plane_type, const std::string& key, ReportScope scope) const
      CG_EXCLUDES(mu_);
  // Replicas that are not draining and hold a session of the plane authorized for `cr_key` (and
  // announcing `capability` when not empty), fewest sessions first is not implied: in replica order.
  std::vector<Candidate> candidates(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                    std::string_view capability) const CG_EXCLUDES(mu_);
  // Why a session for the CR is not to be had from the other replicas, as the local pick() says it:
  // `moving` when a replica holds one (draining or not: the agent is there or on its way elsewhere),
  // `not_capable`, `not_authorized` (only other CRs' sessions of the plane) or `no_agent`.
  session::PickMiss pick_miss(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                              std::string_view capability) const CG_EXCLUDES(mu_);
  // Whether any replica holds a session of the plane.
  bool plane_has_sessions(const std::string& plane_type, const std::string& plane_id) const CG_EXCLUDES(mu_);
  // Planes with at least one remote session.
  std::set<std::pair<std::string, std::string>> planes() const CG_EXCLUDES(mu_);
  // Replicas currently known (heard from and not dropped), with their instance.
  std::map<std::string, std::string> replicas() const CG_EXCLUDES(mu_);
  size_t session_count(const std::string& replica) const CG_EXCLUDES(mu_);
  // When the replica's last update arrived (nullopt: unknown or dropped).
  std::optional<Clock::time_point> heard(const std::string& replica) const CG_EXCLUDES(mu_);
  // Sessions held by each replica (for the demo and the rebalancer).
  std::map<std::string, size_t> session_counts() const CG_EXCLUDES(mu_);
  // Whether some replica says it is draining (its agents are on the move).
  bool any_draining() const CG_EXCLUDES(mu_);

 private:
  using Key = std::pair<std::string, std::string>;
  struct Replica {
    std::string instance;
    uint64_t seq = 0;
    bool draining = false;
    Clock::time_point heard{};
    std::map<std::string, SessionEntry> sessions;  // by connection id
    std::map<Key, std::map<std::string, const SessionEntry*>> by_plane;  // (type, id) → sessions
    std::map<Key, session::SessionReport> cr_reports;
    std::map<Key, session::SessionReport> plane_reports;
  };
  static void add_session(Replica& r, SessionEntry e, DirectoryChange& change);
  static void remove_session(Replica& r, const std::string& id, DirectoryChange& change);
  static void put_reports(Replica& r, const std::vector<ReportEntry>& reports, DirectoryChange& change);
  void depart_locked(const std::string& id, Replica& r, SysTime wall_now, DirectoryChange& change) CG_REQUIRES(mu_);

  mutable cg::Mutex mu_;  // a leaf: nothing else is locked under it
  std::map<std::string, Replica> replicas_ CG_GUARDED_BY(mu_);
  // What departed replicas last said, as count-0 reports (their lastZero: when they were dropped).
  std::map<Key, session::SessionReport> departed_cr_ CG_GUARDED_BY(mu_);
  std::map<Key, session::SessionReport> departed_plane_ CG_GUARDED_BY(mu_);
  // Replica id → the instance that said bye (at most kMaxSaidBye ids; past that one is forgotten).
  std::map<std::string, std::string> said_bye_ CG_GUARDED_BY(mu_);
  static constexpr size_t kMaxSaidBye = 1024;
};

}  // namespace cg::mesh
