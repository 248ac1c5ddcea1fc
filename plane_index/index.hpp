// In-memory index of plane CRs with their decoded CA stores, by planeType/planeID.
// Sources (file or Kubernetes) hand it whole snapshots; it diffs them, reuses CA stores whose
// bundle did not change, bumps a version, and tells listeners which planes and CRs changed.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/thread_annotations.hpp"
#include "plane_index/objects.hpp"
#include "tls/ca_store.hpp"
#include "tls/verifier.hpp"

namespace cg::plane {

// One CR as the rest of the gateway sees it: the parsed CR plus everything derived from it.
struct CrEntry {
  PlaneCR cr;
  std::shared_ptr<const tls::CaStore> ca;  // null when the CA could not be loaded
  std::string ca_error;  // why, for logs and the Ready condition
  tls::CaState ca_state = tls::CaState::unreachable;  // see tls::CaState
  std::vector<std::string> spec_problems;  // readable; non-empty means Ready=False InvalidSpec
  std::string observability_problem;  // non-empty: referenced ClusterObservabilityPlane missing
};

struct IndexChange {
  uint64_t version = 0;
  std::set<std::pair<std::string, std::string>> planes;  // (planeType, planeID) whose authorization inputs changed
  std::set<CrRef> changed;  // CRs added or changed in a way status can see
  std::set<CrRef> removed;
};

class PlaneIndex {
 public:
  using Listener = std::function<void(const IndexChange&)>;

  void add_listener(Listener l) CG_EXCLUDES(mu_);
  // Replaces the whole world. Listeners are called after the new state is visible, outside the lock.
  void replace(const PlaneWorld& world) CG_EXCLUDES(mu_);

  // Every CR of that plane type whose effective planeID matches, cluster-scoped kinds first.
  // CRs whose CA could not be loaded are included with a null store and the error.
  std::vector<tls::Anchor> anchors(const std::string& plane_type, const std::string& plane_id) const CG_EXCLUDES(mu_);
  std::vector<std::shared_ptr<const CrEntry>> all() const CG_EXCLUDES(mu_);
  std::shared_ptr<const CrEntry> find(const CrRef& ref) const CG_EXCLUDES(mu_);
  uint64_t version() const CG_EXCLUDES(mu_);
  bool synced() const CG_EXCLUDES(mu_);  // true once the first snapshot was applied

 private:
  // Callers may hold StatusWriter::mu_ (order StatusWriter::mu_ → PlaneIndex::mu_); nothing is
  // called with mu_ held.
  mutable cg::Mutex mu_;
  std::map<CrRef, std::shared_ptr<const CrEntry>> crs_ CG_GUARDED_BY(mu_);
  // (planeType, planeID) → CRs
  std::map<std::pair<std::string, std::string>, std::vector<CrRef>> by_plane_ CG_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<const tls::CaStore>> ca_cache_ CG_GUARDED_BY(mu_);  // bundle text → store
  uint64_t version_ CG_GUARDED_BY(mu_) = 0;
  bool synced_ CG_GUARDED_BY(mu_) = false;
  std::vector<Listener> listeners_ CG_GUARDED_BY(mu_);
};

}  // namespace cg::plane
