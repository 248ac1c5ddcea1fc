// The Kubernetes plane source: one kube::Informer (kube/informer.hpp: LIST in pages, WATCH from the
// list's resourceVersion, 410 relist, backoff with jitter, idle-watch restart) per plane kind and per
// CA secret the CRs reference; this file maps the objects they deliver to plane CRs and secrets and
// feeds whole snapshots into the PlaneIndex.
//
// * Plane CRs: per kind, the collection /apis/openchoreo.dev/v1alpha1/<plural> (namespaced kinds
//   across all namespaces).
// * Secrets: only those referenced by some CR's spec.clusterAgent.clientCA.secretKeyRef (namespace
//   defaults to the CR's) are requested and kept. Each gets its own informer restricted to that one
//   secret: LIST and WATCH /api/v1/namespaces/<ns>/secrets?fieldSelector=metadata.name=<name>.
//   Why: the API server filters, so no other secret of the cluster ever reaches the gateway (no
//   cluster- or namespace-wide secret traffic, nothing to discard), a missing secret is just an empty
//   list and its later creation arrives as ADDED, and the watch resumes from the list's collection
//   resourceVersion (a GET's object resourceVersion can be older than the watch cache and would 410
//   forever). The cost is one watch connection per referenced secret, which is small in practice
//   (one CA secret per plane or shared). Informers start and stop as references appear and go.
// * Every change marks the snapshot dirty and posts the applier to its ControlTimer (on the executor
//   given: the gateway's control thread), which rebuilds the PlaneWorld and calls
//   PlaneIndex::replace, at most once per `coalesce`. Nothing is applied before the first full sync
//   (all six kinds listed and every referenced secret listed once), so the index never sees a partial
//   world. After that, a newly referenced secret holds snapshots back for at most `new_secret_grace`.
//
// start() returns immediately unless KubeSourceOptions::start_wait is set (then it waits up to that
// long for the first sync; synced() tells whether it happened). stop() must not be called from the
// client's io threads nor from the control executor.
//
// Threads and ownership: the informers' callbacks (on the client's io threads) update the State under
// its mutex; the applier (on the control strand) reads it. The State owns the informers (shared_ptr); their callbacks
// hold only a weak_ptr to the State, so there is no State <-> Informer cycle, and no lock order
// between them (an informer calls back with no lock held; the State starts and stops informers
// outside its mutex). stop() stops every informer, stops the applier's timer (waiting for an apply in
// progress) and waits (stop_wait at most) for
// the informers' callbacks in flight (one kube::Inflight shared by all of them).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>

#include <boost/asio/any_io_executor.hpp>

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
  size_t list_page_size = 500;  // LIST `limit` (client-go's pager uses 500); 0: unpaged
  // A running watch silent for its timeoutSeconds plus this margin is closed and restarted. Servers
  // need not send bookmarks, so the bound rests on timeoutSeconds, the one promise that a healthy
  // server ends the stream by then.
  std::chrono::seconds watch_idle_margin{30};
};

struct KubeSourceStats {
  uint64_t lists = 0;  // successful LISTs (CR kinds and secrets)
  uint64_t relists_gone = 0;  // LISTs caused by 410 Gone
  uint64_t watches = 0;  // watch requests started
  uint64_t errors = 0;  // failed lists/watches (each followed by a backoff)
  uint64_t list_pages = 0;  // LIST requests that followed a continue token
  uint64_t continue_expired = 0;  // 410 on a continue token: listed again from scratch, unpaged
  uint64_t watch_idle_restarts = 0;  // watches silent past their idle bound, restarted
  uint64_t replaces = 0;  // snapshots applied to the index
  uint64_t secrets_tracked = 0;  // referenced secrets currently followed
};

class KubePlaneSource : public PlaneSource {
 public:
  // `client` and `index` must outlive the source; `control` runs the applier and must keep running
  // until stop() returned.
  KubePlaneSource(const boost::asio::any_io_executor& control, kube::KubeClient& client, PlaneIndex& index,
                  KubeSourceOptions opts = {});
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
};

}  // namespace cg::plane
