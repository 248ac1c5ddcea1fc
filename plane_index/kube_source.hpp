// The Kubernetes plane source: the client-go informer pattern for the six plane kinds and for the CA
// secrets the CRs reference, feeding whole snapshots into the PlaneIndex.
//
// * Plane CRs: per kind, LIST /apis/openchoreo.dev/v1alpha1/<plural> (namespaced kinds across all
//   namespaces), then WATCH from the list's resourceVersion with allowWatchBookmarks=true and a
//   timeoutSeconds in [watch_timeout, 2*watch_timeout); a clean end re-watches from the last seen
//   resourceVersion (events and bookmarks); 410 Gone (HTTP 410, or an ERROR event carrying a 410
//   Status) relists; other errors back off (backoff_initial doubling to backoff_max, +-20% jitter,
//   Retry-After honoured) and resume from the last resourceVersion.
// * Secrets: only those referenced by some CR's spec.clusterAgent.clientCA.secretKeyRef (namespace
//   defaults to the CR's) are requested and kept. Each gets its own informer restricted to that one
//   secret: LIST and WATCH /api/v1/namespaces/<ns>/secrets?fieldSelector=metadata.name=<name>.
//   Why: the API server filters, so no other secret of the cluster ever reaches the gateway (no
//   cluster- or namespace-wide secret traffic, nothing to discard), a missing secret is just an empty
//   list and its later creation arrives as ADDED, and the watch resumes from the list's collection
//   resourceVersion (a GET's object resourceVersion can be older than the watch cache and would 410
//   forever). The cost is one watch connection per referenced secret, which is small in practice
//   (one CA secret per plane or shared). Informers start and stop as references appear and go.
// * Every change marks the snapshot dirty; a dedicated thread rebuilds the PlaneWorld and calls
//   PlaneIndex::replace, at most once per `coalesce`. Nothing is applied before the first full sync
//   (all six kinds listed and every referenced secret listed once), so the index never sees a partial
//   world. After that, a newly referenced secret holds snapshots back for at most `new_secret_grace`.
//
// start() returns immediately unless KubeSourceOptions::start_wait is set (then it waits up to that
// long for the first sync; synced() tells whether it happened). stop() must not be called from the
// client's io threads.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "plane_index/index.hpp"
#include "plane_index/plane_source.hpp"

namespace cg::kube {
class KubeClient;
}

namespace cg::plane {

struct KubeSourceOptions {
  std::chrono::seconds watch_timeout{300};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds coalesce{50};
  std::chrono::milliseconds list_timeout{60000};
  std::chrono::milliseconds new_secret_grace{1000};
  std::chrono::milliseconds start_wait{0};
  std::chrono::milliseconds stop_wait{5000};  // stop() waits this long at most for in-flight callbacks
};

struct KubeSourceStats {
  uint64_t lists = 0;          // successful LISTs (CR kinds and secrets)
  uint64_t relists_gone = 0;   // LISTs caused by 410 Gone
  uint64_t watches = 0;        // watch requests started
  uint64_t errors = 0;         // failed lists/watches (each followed by a backoff)
  uint64_t replaces = 0;       // snapshots applied to the index
  uint64_t secrets_tracked = 0;  // referenced secrets currently followed
};

class KubePlaneSource : public PlaneSource {
 public:
  // `client` and `index` must outlive the source.
  KubePlaneSource(kube::KubeClient& client, PlaneIndex& index, KubeSourceOptions opts = {});
  ~KubePlaneSource() override;
  void start() override;
  void stop() override;
  // True once the first full list of all six kinds and the referenced secrets was applied to the index.
  bool synced() const;
  bool wait_synced(std::chrono::milliseconds timeout) const;
  KubeSourceStats stats() const;

  struct State;

 private:
  std::shared_ptr<State> st_;
  std::thread applier_;
};

}  // namespace cg::plane
