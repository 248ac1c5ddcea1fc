// A generic informer: LIST + WATCH of one Kubernetes collection (optionally restricted by a field
// and/or a label selector), following client-go's reflector. It knows no resource type: it hands the
// objects to its callbacks as JSON (plane_index/kube_source.cpp maps them to plane CRs and CA
// secrets, kube/lease.cpp to Lease records).
//
// * LIST the collection in pages of `page_size` (`limit`, following `continue` tokens, like client-go's
//   pager); a continue token that expired (410 while paging) lists again from scratch in one unpaged
//   request (client-go's FullListIfExpired); any other failure lists again from the first page after
//   a backoff.
// * Then WATCH from the list's resourceVersion with allowWatchBookmarks=true and a timeoutSeconds in
//   [watch_timeout, 2*watch_timeout); a clean end re-watches from the last seen resourceVersion
//   (events and bookmarks); 410 Gone (HTTP 410, or an ERROR event carrying a 410 Status) relists;
//   other errors back off (backoff_initial doubling to backoff_max, +-20% jitter, Retry-After
//   honoured) and resume from the last resourceVersion. A watch that sends no byte for its
//   timeoutSeconds + watch_idle_margin is presumed hung (a server or proxy that stopped without
//   closing the connection): it is closed and restarted at once from the last resourceVersion.
//
// Callbacks (InformerCallbacks):
// * Each runs on a thread of the KubeClient's io_context: from the client's completion handlers, or
//   from the informer's backoff timer (a steady_timer on a strand of that io_context private to the
//   informer). None is ever called inline from start() or stop().
// * One informer's callbacks run one at a time, in the order of the list/watch cycle (there is one
//   chain of operations per informer), never concurrently with each other; callbacks of different
//   informers may run concurrently. They must not block; they may call start()/stop() of any informer,
//   their own included (no informer lock is held while a callback runs).
// * After stop(), no callback starts. One that already started may still be running when stop()
//   returns: Inflight::wait_zero() waits for it (and for every request and timer of the informers
//   sharing that Inflight).
//
// Ownership: an Informer is held by a shared_ptr (create()); each pending request, watch and timer
// holds it too, so it lives until stop() and the end of its last operation. It holds no reference to
// its owner: an owner that keeps its informers and is reached from their callbacks must capture a
// weak_ptr to itself in them (KubePlaneSource does), or it forms a cycle that only stop() breaks.
// Lock order: Informer's mutex, then Inflight's (a leaf); callbacks run with neither held. Both are
// cg::Mutex, checked by scripts/lint (-Wthread-safety).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/thread_annotations.hpp"

namespace cg::kube {

class KubeClient;
struct Response;
struct WatchEnd;
class WatchHandle;

// The kind of a watch event handed to on_event (BOOKMARK and unknown types are not handed on).
enum class EventType { Added, Modified, Deleted };
const char* to_string(EventType t);

// What happened in the list/watch cycle, for counters and metrics (on_signal); each also logs.
enum class InformerSignal {
  Listed,  // a LIST completed (all its pages); on_list follows
  ListPage,  // a LIST page came with a continue token; the next page was requested
  ContinueExpired,  // 410 on a continue token: listing again from scratch, unpaged
  ListError,  // a LIST failed or its answer was unreadable; a Backoff follows
  WatchStarted,  // a watch request was sent
  RelistGone,  // the watch ended with 410 Gone (HTTP 410 or an ERROR event): relisting
  WatchIdle,  // a running watch was silent past its idle bound: restarted from the last resourceVersion
  WatchError,  // the watch was refused, broke, or sent an ERROR event or a bad line; a Backoff follows
  Backoff,  // a retry was scheduled after a backoff (every failure, and a watch that ended at once)
};
// "listed", "list_page", "continue_expired", "list_error", "watch_started", "relist_gone", "watch_idle",
// "watch_error", "backoff".
const char* to_string(InformerSignal s);

struct InformerResource {
  std::string path;  // the collection, e.g. "/api/v1/namespaces/team-a/configmaps"
  std::string field_selector;  // e.g. "metadata.name=ca" (sent URL-encoded); empty: none
  std::string label_selector;  // e.g. "app=cluster-gateway" (sent URL-encoded); empty: none
  // Filled into every object that lacks them (items of typed lists carry no apiVersion and kind).
  std::string api_version;  // e.g. "v1"
  std::string kind;  // e.g. "ConfigMap"
  std::string name;  // for logs (the "resource" field); empty: `path`
};

struct InformerOptions {
  size_t page_size = 500;  // LIST `limit` (client-go's pager uses 500); 0: unpaged
  std::chrono::milliseconds list_timeout{60000};
  std::chrono::seconds watch_timeout{300};  // timeoutSeconds in [watch_timeout, 2*watch_timeout), at least 1 s
  // A running watch silent for its timeoutSeconds plus this margin is closed and restarted. Servers
  // need not send bookmarks, so the bound rests on timeoutSeconds, the one promise that a healthy
  // server ends the stream by then.
  std::chrono::seconds watch_idle_margin{30};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
};

struct InformerCallbacks {
  // The complete current set after every LIST (the first one and each relist), with the list's
  // resourceVersion. Items are as the server sent them, apiVersion and kind filled in.
  std::function<void(std::vector<nlohmann::json> items, const std::string& resource_version)> on_list;
  // One ADDED, MODIFIED or DELETED watch event (apiVersion and kind filled in).
  std::function<void(EventType type, const nlohmann::json& object)> on_event;
  std::function<void(InformerSignal)> on_signal;  // optional
};

// The asynchronous operations (requests, watches, timers) of one or more informers whose callbacks
// have not finished yet, so that an owner can wait, after stopping them, until none runs any more.
class Inflight {
 public:
  // True when the count is zero or reaches zero within `timeout`.
  bool wait_zero(std::chrono::milliseconds timeout) CG_EXCLUDES(mu_);
  int count() const CG_EXCLUDES(mu_);

 private:
  friend class Informer;
  void begin() CG_EXCLUDES(mu_);
  void end() CG_EXCLUDES(mu_);
  mutable cg::Mutex mu_;  // a leaf
  std::condition_variable_any cv_;  // wait_zero(); waits on a cg::MutexLock
  int count_ CG_GUARDED_BY(mu_) = 0;
};

class Informer : public std::enable_shared_from_this<Informer> {
 public:
  // `client` must outlive the informer's operations (call stop() and Inflight::wait_zero() before
  // shutting it down). `inflight`: shared with other informers, or null for one of its own.
  static std::shared_ptr<Informer> create(KubeClient& client, InformerResource resource, InformerOptions opts,
                                          InformerCallbacks callbacks, std::shared_ptr<Inflight> inflight = nullptr);
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Sends the first LIST and returns (call once).
  void start();
  // Cancels the running request, watch or backoff timer and drops the callbacks. Thread-safe, idempotent.
  void stop();
  const std::shared_ptr<Inflight>& inflight() const { return inflight_; }
  const std::string& name() const { return name_; }

 private:
  struct Private {};

 public:
  Informer(Private, KubeClient& client, InformerResource resource, InformerOptions opts, InformerCallbacks callbacks,
           std::shared_ptr<Inflight> inflight);

 private:
  enum class ListMode { Paged, UnpagedOnce };

  bool stopped() CG_EXCLUDES(mu_);
  void notify(InformerSignal s) CG_EXCLUDES(mu_);
  void fill_type(nlohmann::json& obj) const;
  void list() CG_EXCLUDES(mu_);
  void list_page(const std::string& token) CG_EXCLUDES(mu_);
  void on_list(const Response& r, const std::string& token) CG_EXCLUDES(mu_);
  void watch() CG_EXCLUDES(mu_);
  void cancel_watch() CG_EXCLUDES(mu_);
  void on_line(std::string_view line) CG_EXCLUDES(mu_);
  void on_watch_end(const WatchEnd& e) CG_EXCLUDES(mu_);
  void retry_later(bool relist, std::optional<std::chrono::seconds> retry_after) CG_EXCLUDES(mu_);

  KubeClient& client_;
  const InformerResource res_;
  const std::string name_;
  const std::string selector_query_;  // "fieldSelector=...&labelSelector=...", either, or ""
  const InformerOptions opts_;
  const std::shared_ptr<Inflight> inflight_;

  // Guards what follows up to the LIST state. Order: Informer::mu_ -> Inflight::mu_; under it also
  // WatchHandle::cancel() (the client's WatchOp::mu, a leaf) and KubeClient::watch() (the client's
  // Impl::mu). Never held while a callback runs.
  cg::Mutex mu_;
  InformerCallbacks callbacks_ CG_GUARDED_BY(mu_);
  bool stopped_ CG_GUARDED_BY(mu_) = false;
  std::string rv_ CG_GUARDED_BY(mu_);  // the last resourceVersion seen (list, events, bookmarks)
  std::chrono::steady_clock::duration backoff_ CG_GUARDED_BY(mu_);
  std::shared_ptr<WatchHandle> handle_ CG_GUARDED_BY(mu_);
  struct Timer;
  // The backoff timer, on a strand private to this informer; armed and cancelled under mu_.
  const std::shared_ptr<Timer> timer_;

  // The LIST in progress: the items of its pages so far, and whether it asks for pages at all (not
  // right after a continue token expired; back to Paged once a LIST completed). The pages of one
  // LIST go one after the other, each from the previous one's callback: never touched concurrently.
  std::vector<nlohmann::json> pages_;
  ListMode list_mode_ = ListMode::Paged;
  // Per watch; only touched by that watch's callbacks, which run one after the other.
  enum class WatchOutcome { Running, Gone, Error };
  WatchOutcome outcome_ = WatchOutcome::Running;
  std::string watch_error_;
  uint64_t events_ = 0;
  std::chrono::steady_clock::time_point watch_started_;
};

}  // namespace cg::kube
