// Kubernetes Leases (coordination.k8s.io/v1): leader election as client-go's leaderelection package
// does it, and a watcher that tells which Leases of a set are alive. Generic: nothing here knows
// plane types. The same LeaderElector serves a per-pod Lease (lease name = identity = pod name: the
// pod leads unless the API fails) and an election among replicas (e.g. the status writer's).
//
// Expiry is judged by the local clock, as client-go does: a Lease held by someone else is taken as
// expired once leaseDurationSeconds have passed on OUR clock since we last saw its record change
// (observed time + duration), not by comparing its renewTime with our clock. Replicas whose clocks
// disagree therefore never steal a Lease that is being renewed, nor wait on one that is not. The
// cost: a Lease first seen (after a start, or a relist that brings a new record) counts as held for
// one full duration from then, even if its renewTime is long past. LeaseRecord::expired() (by
// renewTime) is for callers with no observation history.
//
// Threads: everything asynchronous runs on a strand of the executor given to the constructor (the
// gateway's control executor; docs/architecture.md, "Threads"), through a ControlTimer: the timers,
// the election's state machine, and the callbacks. API requests go out on the KubeClient (its io
// threads) and their answers are posted back to that strand. Callbacks are always posted, never
// called inline from start() or stop(). stop() waits for the strand, so it must not be called from
// the control thread itself (nor from a callback). The KubeClient must outlive the object's stop().
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "common/time.hpp"

namespace cg::kube {

class KubeClient;

inline constexpr const char* kLeaseApiVersion = "coordination.k8s.io/v1";

// "/apis/coordination.k8s.io/v1/namespaces/<ns>/leases" and ".../leases/<name>" (URL-encoded).
std::string lease_collection_path(const std::string& ns);
std::string lease_path(const std::string& ns, const std::string& name);

// A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits,
// "2026-12-06T18:00:00.123456Z" (the API server rejects other forms in a Lease).
std::string format_micro_time(SysTime t);

// The parts of a Lease that leader election uses. Pure data; parsing never throws.
struct LeaseRecord {
  std::string name;  // metadata.name
  std::string ns;  // metadata.namespace ("" when absent)
  std::string resource_version;  // metadata.resourceVersion ("" when absent)
  std::map<std::string, std::string> labels;  // metadata.labels (entries that are not strings are dropped)
  std::string holder;  // spec.holderIdentity; "" when none (released, or never held)
  // spec.leaseDurationSeconds, when an integer in [1, 2^31-1]; 0 otherwise (absent, wrong type,
  // out of range): such a Lease counts as expired.
  std::chrono::seconds lease_duration{0};
  std::optional<SysTime> acquire_time;  // spec.acquireTime (absent or unreadable: nullopt)
  std::optional<SysTime> renew_time;  // spec.renewTime (absent or unreadable: nullopt)
  int32_t lease_transitions = 0;  // spec.leaseTransitions; 0 when absent or not an integer in [0, 2^31-1]

  // From a Lease object (JSON as the API server sends it). nullopt when `obj` is not an object or has
  // no string metadata.name; any other defect (wrong types, missing spec, times that do not parse,
  // years outside 1900..2200, huge or negative numbers) leaves the field at its "absent" value.
  static std::optional<LeaseRecord> parse(const nlohmann::json& obj);
  // Same from text; nullopt when it is not JSON.
  static std::optional<LeaseRecord> parse_text(const std::string& text);

  bool held() const { return !holder.empty(); }
  // By the record alone: renewTime + leaseDurationSeconds < now. No holder, no renewTime or no
  // valid duration: expired.
  bool expired(SysTime now) const;
  // Whether the election-relevant fields (the spec) are the same: a change restarts observed time.
  bool same_spec(const LeaseRecord& o) const;
};

// The body of a create (POST) or update (PUT) of `rec`: apiVersion, kind, metadata (name, namespace,
// labels, and resourceVersion when `rec` has one: the update is then conditional) and the whole spec.
// `base`, when it is an object (the Lease as read), is the starting point, so that what the record
// does not model (annotations, ownerReferences, ...) is kept; its labels are replaced by `rec.labels`.
// A holder of "" is sent as "" (a released Lease); absent times and a duration of 0 are left out.
nlohmann::json lease_body(const LeaseRecord& rec, const nlohmann::json& base = nullptr);

// --- Leader election -----------------------------------------------------------------------------

struct LeaderElectorOptions {
  std::string ns;  // the Lease's namespace (must exist)
  std::string lease_name;
  std::string identity;  // written as holderIdentity; must be unique among the candidates
  std::map<std::string, std::string> labels;  // put on the Lease when we create it (and kept on our updates)
  // How long a Lease is good for after its last renewal (leaseDurationSeconds, rounded up to whole
  // seconds): how long the other candidates wait after they last saw it change.
  std::chrono::milliseconds lease_duration{15000};
  // The leader steps down when renewal has not succeeded for this long (< lease_duration). Also the
  // timeout of each API request.
  std::chrono::milliseconds renew_deadline{10000};
  // Between two tries to acquire (jittered up to x2.2, as client-go) and between renewals.
  std::chrono::milliseconds retry_period{2000};
};

struct LeaderCallbacks {
  std::function<void()> on_started_leading;  // we acquired the Lease
  std::function<void()> on_stopped_leading;  // we lost, gave up or released it (once per on_started_leading)
  // The holder we observe changed (our own identity included; "" when the Lease was released). Optional.
  std::function<void(const std::string& identity)> on_new_leader;
};

// client-go's LeaderElector on a Lease:
// * Try to acquire: GET the Lease; 404: create it with us as holder; held by another and not expired
//   (observed time + its leaseDurationSeconds, see above): try again after retry_period; released
//   (no holder), expired or ours: PUT it (conditional on the resourceVersion read) with us as holder.
//   A 409 Conflict (someone wrote in between) reads it again and decides again. On a change of holder
//   leaseTransitions is incremented and acquireTime set; renewTime is set on every write.
// * While leading: renew (PUT, from the record of our last write; read again after a failure) every
//   retry_period. When renewal has not succeeded for renew_deadline, or the Lease turns out to be held
//   by someone else, step down (on_stopped_leading) and go back to trying to acquire. (client-go
//   waits for renew_deadline even when it sees another holder; stepping down at once is safer.)
// * stop(release): stop leading (on_stopped_leading first, so our work stops before anyone else can
//   take over) and, with release, PUT the Lease with no holder and leaseDurationSeconds 1 so that
//   another candidate takes it at once (client-go's ReleaseOnCancel).
// Logs acquisition, loss, release and API errors (with the reason); never the token.
class LeaderElector {
 public:
  // Throws std::invalid_argument unless ns, lease_name and identity are set and
  // lease_duration > renew_deadline > retry_period > 0.
  LeaderElector(const boost::asio::any_io_executor& control, KubeClient& client, LeaderElectorOptions opts,
                LeaderCallbacks callbacks);
  ~LeaderElector();  // stop(false)
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  void start();  // the first try is posted; once; no-op after stop()
  // Idempotent; not from the control strand. Waits until on_stopped_leading (if leading) has run and,
  // with `release`, until the release PUT was answered (at most renew_deadline + 1 s); afterwards no
  // callback runs and no request is sent.
  void stop(bool release);
  bool leading() const;  // thread-safe
  std::string leader() const;  // the holder last observed ("" when none or unknown); thread-safe
  const LeaderElectorOptions& options() const;

  struct State;

 private:
  std::shared_ptr<State> st_;
};

// --- Watching Leases -----------------------------------------------------------------------------

struct LeaseWatcherOptions {
  std::string ns;
  std::string label_selector;  // e.g. "app.kubernetes.io/name=cluster-gateway"; empty: every Lease of ns
  std::chrono::milliseconds backoff_initial{200};  // the informer's retry backoff
  std::chrono::milliseconds backoff_max{30000};
};

// Lists and watches the Leases of a namespace (kube::Informer: relists on 410) and keeps each one's
// record with the local time at which it was last seen changing. on_change (posted to the strand) is
// called after the first list, after every list or event that changed something (add, modify,
// delete), and when a held Lease reaches its expiry (observed time + duration) without a renewal, so
// a listener learns that a holder died without any new event. It may also come when nothing visible
// changed (an expiry timed before its Lease was renewed): a listener reads live() and compares.
class LeaseWatcher {
 public:
  LeaseWatcher(const boost::asio::any_io_executor& control, KubeClient& client, LeaseWatcherOptions opts,
               std::function<void()> on_change);
  ~LeaseWatcher();  // stop()
  LeaseWatcher(const LeaseWatcher&) = delete;
  LeaseWatcher& operator=(const LeaseWatcher&) = delete;

  void start();  // once
  void stop();  // idempotent; not from the control strand; afterwards on_change is not called
  bool synced() const;  // the first list has been applied; thread-safe

  // Names of the Leases held, with a valid duration and a renewTime, and not expired: observed time
  // + leaseDurationSeconds > now (system clock). Sorted. Thread-safe.
  std::vector<std::string> live(SysTime now = std::chrono::system_clock::now()) const;
  std::map<std::string, LeaseRecord> records() const;  // thread-safe copy

  struct State;

 private:
  std::shared_ptr<State> st_;
};

}  // namespace cg::kube
