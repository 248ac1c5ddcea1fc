#include "kube/lease.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>

#include "common/control_timer.hpp"
#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/no_throw.hpp"
#include "common/thread_annotations.hpp"
#include "kube/client.hpp"
#include "kube/informer.hpp"

namespace cg::kube {
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int kMaxConflicts = 5;  // 409s within one try before it counts as failed

// An integer in [lo, hi], whatever JSON number type holds it; nullopt otherwise (floats, strings, ...).
std::optional<int64_t> int_in(const json& v, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return std::nullopt;
    const auto i = static_cast<int64_t>(u);
    if (i < lo) return std::nullopt;
    return i;
  }
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (i < lo || i > hi) return std::nullopt;
    return i;
  }
  return std::nullopt;
}

// A MicroTime (or any RFC 3339 time) whose year keeps the nanosecond SysTime far from overflow.
std::optional<SysTime> time_of(const json& v) {
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() < 20 || s.size() > 64) return std::nullopt;
  int year = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    year = year * 10 + (s[i] - '0');
  }
  if (year < 1900 || year > 2200) return std::nullopt;
  return parse_rfc3339(s);
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::string string_member(const json& obj, const char* key) {
  const json* v = member(obj, key);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

double uniform(double a, double b) {
  thread_local std::mt19937 gen(std::random_device{}());
  return std::uniform_real_distribution<double>(a, b)(gen);
}

int64_t ms(steady::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

}  // namespace

std::string lease_collection_path(const std::string& ns) {
  return "/apis/coordination.k8s.io/v1/namespaces/" + url_encode(ns) + "/leases";
}

std::string lease_path(const std::string& ns, const std::string& name) {
  return lease_collection_path(ns) + "/" + url_encode(name);
}

std::string format_micro_time(SysTime t) {
  using namespace std::chrono;
  const auto us = floor<microseconds>(t);
  const auto secs = floor<seconds>(us);
  std::string s = format_rfc3339(secs);  // "...SSZ"
  char frac[32];
  std::snprintf(frac, sizeof frac, ".%06d", static_cast<int>((us - secs).count()));  // in [0, 999999]
  s.pop_back();
  return s + frac + "Z";
}

// --- LeaseRecord ---------------------------------------------------------------------------------

std::optional<LeaseRecord> LeaseRecord::parse(const json& obj) {
  const json* meta = member(obj, "metadata");
  if (!meta || !meta->is_object()) return std::nullopt;
  const json* name = member(*meta, "name");
  if (!name || !name->is_string() || name->get_ref<const std::string&>().empty()) return std::nullopt;
  LeaseRecord r;
  r.name = name->get<std::string>();
  r.ns = string_member(*meta, "namespace");
  r.resource_version = string_member(*meta, "resourceVersion");
  if (const json* labels = member(*meta, "labels"); labels && labels->is_object())
    for (auto it = labels->begin(); it != labels->end(); ++it)
      if (it.value().is_string()) r.labels[it.key()] = it.value().get<std::string>();
  const json* spec = member(obj, "spec");
  if (!spec || !spec->is_object()) return r;
  r.holder = string_member(*spec, "holderIdentity");
  if (const json* d = member(*spec, "leaseDurationSeconds"))
    r.lease_duration = std::chrono::seconds(int_in(*d, 1, kInt32Max).value_or(0));
  if (const json* t = member(*spec, "acquireTime")) r.acquire_time = time_of(*t);
  if (const json* t = member(*spec, "renewTime")) r.renew_time = time_of(*t);
  if (const json* n = member(*spec, "leaseTransitions"))
    r.lease_transitions = static_cast<int32_t>(int_in(*n, 0, kInt32Max).value_or(0));
  return r;
}

std::optional<LeaseRecord> LeaseRecord::parse_text(const std::string& text) {
  json obj = json::parse(text, nullptr, false);
  if (obj.is_discarded()) return std::nullopt;
  return parse(obj);
}

bool LeaseRecord::expired(SysTime now) const {
  using std::chrono::microseconds;
  if (holder.empty() || !renew_time || lease_duration.count() <= 0) return true;
  // In microseconds: renewTime (years 1900..2200) plus up to 2^31 s cannot overflow there.
  const int64_t renew = std::chrono::duration_cast<microseconds>(renew_time->time_since_epoch()).count();
  const int64_t until = renew + std::chrono::duration_cast<microseconds>(lease_duration).count();
  return until < std::chrono::duration_cast<microseconds>(now.time_since_epoch()).count();
}

bool LeaseRecord::same_spec(const LeaseRecord& o) const {
  return holder == o.holder && lease_duration == o.lease_duration && acquire_time == o.acquire_time &&
         renew_time == o.renew_time && lease_transitions == o.lease_transitions;
}

json lease_body(const LeaseRecord& rec, const json& base) {
  json obj = base.is_object() ? base : json::object();
  obj["apiVersion"] = kLeaseApiVersion;
  obj["kind"] = "Lease";
  json& meta = obj["metadata"];
  if (!meta.is_object()) meta = json::object();
  meta["name"] = rec.name;
  if (!rec.ns.empty()) meta["namespace"] = rec.ns;
  if (!rec.resource_version.empty()) meta["resourceVersion"] = rec.resource_version;
  else meta.erase("resourceVersion");
  meta.erase("managedFields");  // the server keeps its own when none are sent
  if (rec.labels.empty()) meta.erase("labels");
  else meta["labels"] = rec.labels;
  json spec = json::object();
  spec["holderIdentity"] = rec.holder;
  if (rec.lease_duration.count() > 0) spec["leaseDurationSeconds"] = rec.lease_duration.count();
  if (rec.acquire_time) spec["acquireTime"] = format_micro_time(*rec.acquire_time);
  if (rec.renew_time) spec["renewTime"] = format_micro_time(*rec.renew_time);
  spec["leaseTransitions"] = rec.lease_transitions;
  obj["spec"] = std::move(spec);
  return obj;
}

// --- LeaderElector -------------------------------------------------------------------------------

// The election's state is touched on the timer's strand only, except where a member says otherwise.
struct LeaderElector::State : std::enable_shared_from_this<LeaderElector::State> {
  State(const boost::asio::any_io_executor& control, KubeClient& c, LeaderElectorOptions o, LeaderCallbacks cb)
      : client(c),
        opts(std::move(o)),
        callbacks(std::move(cb)),
        lease(opts.ns + "/" + opts.lease_name),
        duration(std::chrono::duration_cast<std::chrono::seconds>(opts.lease_duration + std::chrono::milliseconds(999))),
        timer(control) {}

  KubeClient& client;
  const LeaderElectorOptions opts;
  const LeaderCallbacks callbacks;
  const std::string lease;  // "ns/name", for logs
  const std::chrono::seconds duration;  // leaseDurationSeconds we write
  ControlTimer timer;

  std::atomic<bool> leading_flag{false};  // any thread
  std::atomic<bool> start_called{false};  // any thread

  // Any thread: the observed holder, and stop()'s wait for the last callback / the release.
  mutable cg::Mutex mu;
  std::condition_variable_any cv;  // waits on a cg::MutexLock
  std::string observed_holder CG_GUARDED_BY(mu);
  bool stop_called CG_GUARDED_BY(mu) = false;
  bool stop_done CG_GUARDED_BY(mu) = false;

  // Strand only.
  bool stopping = false;
  bool leading = false;
  uint64_t op_gen = 0;  // a try's answers count only while this has not moved on
  bool op_running = false;
  bool need_read = true;  // the next try reads the Lease first (no fast-path renewal)
  int conflicts = 0;
  int failures = 0;  // tries failed in a row (for the log's budget)
  std::optional<LeaseRecord> observed;  // the Lease as last read or written
  json observed_obj;  // the same, whole (the base of our updates)
  steady::time_point observed_at{};  // local time at which `observed`'s spec last changed
  steady::time_point last_renew{};  // last successful write while leading
  std::optional<std::string> reported_leader;

  json log_fields() const { return {{"lease", lease}, {"identity", opts.identity}}; }

  void post_callback(const std::function<void()>& f) {
    if (f) timer.post(f);
  }
  void set_leading(bool v) {
    leading = v;
    leading_flag.store(v);
  }
  void signal_stop_done() {
    cg::MutexLock lk(mu);
    stop_done = true;
    cv.notify_all();
  }

  // Sends `req`; `then` runs on the strand with the answer, unless the try was abandoned meanwhile.
  void send(Request req, std::function<void(const Response&)> then) {
    req.timeout = opts.renew_deadline;
    const uint64_t gen = op_gen;
    auto self = shared_from_this();
    client.request(std::move(req), [self, gen, then = std::move(then)](Response r) {
      self->timer.post([self, gen, then, r = std::move(r)] {
        if (gen == self->op_gen) then(r);
      });
    });
  }

  void schedule(steady::time_point when) {
    timer.run_at(when, [self = shared_from_this()] { self->tick(); });
  }
  // While not leading: client-go's JitterUntil(retryPeriod, 1.2).
  void schedule_retry() {
    schedule(steady::now() + std::chrono::duration_cast<steady::duration>(opts.retry_period * uniform(1.0, 2.2)));
  }
  steady::time_point renew_due() const { return last_renew + opts.renew_deadline; }

  void tick() {
    if (stopping) return;
    const auto now = steady::now();
    if (leading && now >= renew_due()) {
      ++op_gen;  // whatever renewal is still in flight no longer counts
      op_running = false;
      need_read = true;
      step_down("renewal did not succeed within the renew deadline",
                {{"sinceLastRenewalMs", ms(now - last_renew)}, {"renewDeadlineMs", opts.renew_deadline.count()}});
      return schedule_retry();
    }
    if (op_running) {
      if (leading) schedule(renew_due());
      return;
    }
    begin_try();
    if (leading) schedule(renew_due());  // the deadline holds even if the renewal hangs
  }

  void begin_try() {
    op_running = true;
    conflicts = 0;
    // client-go's fast path: the leader updates optimistically from its last write.
    if (leading && !need_read && observed && observed->holder == opts.identity) return update_from(*observed);
    read();
  }

  void read() {
    Request req;
    req.path = lease_path(opts.ns, opts.lease_name);
    send(std::move(req), [this](const Response& r) { on_read(r); });
  }

  void on_read(const Response& r) {
    if (r.status == 404) return create();
    if (!r.ok()) return fail("get", r.status, r.message());
    json obj = json::parse(r.body, nullptr, false);
    auto rec = LeaseRecord::parse(obj);
    if (!rec) return fail("get", r.status, "the answer is not a Lease");
    observe(*rec, obj);
    const bool ours = rec->holder == opts.identity;
    if (!ours && leading) step_down("the lease is held by another holder or was released", {{"holder", rec->holder}});
    if (!ours && rec->held() && !observed_expired()) return held_by_other(rec->holder);
    update_from(*rec);
  }

  bool observed_expired() const {
    return !observed || observed->lease_duration.count() <= 0 || steady::now() >= observed_at + observed->lease_duration;
  }

  // Acquire or renew: PUT `old` (conditional on its resourceVersion) with us as holder.
  void update_from(const LeaseRecord& old) {
    LeaseRecord n = old;
    n.name = opts.lease_name;
    n.ns = opts.ns;
    for (const auto& [k, v] : opts.labels) n.labels[k] = v;
    n.holder = opts.identity;
    n.lease_duration = duration;
    const auto now = std::chrono::system_clock::now();
    n.renew_time = now;
    if (old.holder == opts.identity) {
      if (!n.acquire_time) n.acquire_time = now;
    } else {
      n.acquire_time = now;
      n.lease_transitions = old.lease_transitions < kInt32Max ? old.lease_transitions + 1 : old.lease_transitions;
    }
    Request req;
    req.method = "PUT";
    req.path = lease_path(opts.ns, opts.lease_name);
    req.body = to_json_text(lease_body(n, observed_obj));
    send(std::move(req), [this](const Response& r) { on_write(r, "update"); });
  }

  void create() {
    LeaseRecord n;
    n.name = opts.lease_name;
    n.ns = opts.ns;
    n.labels = opts.labels;
    n.holder = opts.identity;
    n.lease_duration = duration;
    n.acquire_time = n.renew_time = std::chrono::system_clock::now();
    Request req;
    req.method = "POST";
    req.path = lease_collection_path(opts.ns);
    req.body = to_json_text(lease_body(n));
    send(std::move(req), [this](const Response& r) { on_write(r, "create"); });
  }

  void on_write(const Response& r, const char* verb) {
    if (r.status == 409) {  // Conflict (update) or AlreadyExists (create): someone wrote first
      if (++conflicts > kMaxConflicts) return fail(verb, r.status, r.message());
      log::debug("lease write conflicted; reading it again", [&] {
        auto f = log_fields();
        f["verb"] = verb;
        f["reason"] = r.message();
        return f;
      }());
      return read();
    }
    if (r.status == 404 && std::string_view(verb) == "update") return create();  // deleted meanwhile
    if (!r.ok()) return fail(verb, r.status, r.message());
    json obj = json::parse(r.body, nullptr, false);
    auto rec = LeaseRecord::parse(obj);
    if (!rec || rec->holder != opts.identity) return fail(verb, r.status, "the answer is not the Lease we wrote");
    observe(*rec, obj);
    succeeded();
  }

  void observe(const LeaseRecord& rec, const json& obj) {
    if (!observed || !observed->same_spec(rec)) observed_at = steady::now();
    observed = rec;
    observed_obj = obj;
    {
      cg::MutexLock lk(mu);
      observed_holder = rec.holder;
    }
    if (!reported_leader || *reported_leader != rec.holder) {
      reported_leader = rec.holder;
      if (callbacks.on_new_leader) timer.post([self = shared_from_this(), h = rec.holder] { self->callbacks.on_new_leader(h); });
    }
  }

  void succeeded() {
    op_running = false;
    need_read = false;
    failures = 0;
    const auto now = steady::now();
    last_renew = now;
    if (!leading) {
      set_leading(true);
      auto f = log_fields();
      f["leaseTransitions"] = observed ? observed->lease_transitions : 0;
      log::info("lease acquired: leading", f);
      post_callback(callbacks.on_started_leading);
    }
    schedule(now + opts.retry_period);
  }

  void held_by_other(const std::string& holder) {
    op_running = false;
    need_read = true;
    failures = 0;
    log::debug("lease held by another holder; will try again", [&] {
      auto f = log_fields();
      f["holder"] = holder;
      return f;
    }());
    schedule_retry();
  }

  void fail(const char* verb, int status, const std::string& reason) {
    op_running = false;
    need_read = true;
    ++failures;
    // Every failure while leading; otherwise the 1st, 2nd, 4th, 8th, ... in a row.
    if (leading || (failures & (failures - 1)) == 0) {
      auto f = log_fields();
      f["verb"] = verb;
      f["status"] = status;
      f["reason"] = reason;
      f["failures"] = failures;
      f["leading"] = leading;
      log::warn("lease request failed; will try again", f);
    }
    if (leading) schedule(std::min(steady::now() + opts.retry_period, renew_due()));
    else schedule_retry();
  }

  void step_down(const char* why, const json& extra) {
    if (!leading) return;
    set_leading(false);
    auto f = log_fields();
    f["reason"] = why;
    for (auto it = extra.begin(); it != extra.end(); ++it) f[it.key()] = it.value();
    log::warn("lease lost: stopped leading", f);
    post_callback(callbacks.on_stopped_leading);
  }

  // stop(release): on the strand after on_stopped_leading ran. The try in flight (if any) was
  // abandoned; a renewal of it may still have landed, so a conflict reads the Lease again.
  void release(int attempt) {
    if (!observed || observed->holder != opts.identity) {
      log::info("lease not released: not ours any more", log_fields());
      return signal_stop_done();
    }
    LeaseRecord n = *observed;
    n.holder.clear();
    n.lease_duration = std::chrono::seconds(1);
    n.acquire_time = n.renew_time = std::chrono::system_clock::now();
    Request req;
    req.method = "PUT";
    req.path = lease_path(opts.ns, opts.lease_name);
    req.body = to_json_text(lease_body(n, observed_obj));
    send(std::move(req), [this, attempt](const Response& r) {
      if (r.ok()) {
        log::info("lease released", log_fields());
        return signal_stop_done();
      }
      if (r.status == 409 && attempt < kMaxConflicts) {
        Request get;
        get.path = lease_path(opts.ns, opts.lease_name);
        return send(std::move(get), [this, attempt](const Response& g) {
          json obj = json::parse(g.body, nullptr, false);
          auto rec = g.ok() ? LeaseRecord::parse(obj) : std::nullopt;
          if (!rec) {
            auto f = log_fields();
            f["status"] = g.status;
            f["reason"] = g.ok() ? "the answer is not a Lease" : g.message();
            log::warn("lease release failed", f);
            return signal_stop_done();
          }
          observed = *rec;
          observed_obj = obj;
          release(attempt + 1);
        });
      }
      auto f = log_fields();
      f["status"] = r.status;
      f["reason"] = r.message();
      log::warn("lease release failed", f);
      signal_stop_done();
    });
  }
};

LeaderElector::LeaderElector(const boost::asio::any_io_executor& control, KubeClient& client, LeaderElectorOptions opts,
                             LeaderCallbacks callbacks) {
  if (opts.ns.empty() || opts.lease_name.empty() || opts.identity.empty())
    throw std::invalid_argument("leader election needs a namespace, a lease name and an identity");
  if (opts.retry_period.count() <= 0 || opts.renew_deadline <= opts.retry_period || opts.lease_duration <= opts.renew_deadline)
    throw std::invalid_argument("leader election needs lease_duration > renew_deadline > retry_period > 0");
  st_ = std::make_shared<State>(control, client, std::move(opts), std::move(callbacks));
}

LeaderElector::~LeaderElector() {
  no_throw("LeaderElector::~LeaderElector", [this] { stop(false); });
}

void LeaderElector::start() {
  if (st_->start_called.exchange(true)) return;
  st_->timer.post([st = st_] {
    if (st->stopping) return;
    auto f = st->log_fields();
    f["leaseDurationSeconds"] = st->duration.count();
    f["renewDeadlineMs"] = st->opts.renew_deadline.count();
    f["retryPeriodMs"] = st->opts.retry_period.count();
    log::info("leader election starting", f);
    st->tick();
  });
}

void LeaderElector::stop(bool release) {
  auto st = st_;
  {
    cg::MutexLock lk(st->mu);
    if (st->stop_called) return;
    st->stop_called = true;
  }
  // The wait lets every callback posted before (an on_stopped_leading after a loss among them) run
  // before the timer stops: each on_started_leading gets its on_stopped_leading.
  const bool wait = st->timer.run_sync([&] {
    st->stopping = true;
    ++st->op_gen;  // answers of the try in flight are dropped
    st->op_running = false;
    if (!st->leading) return st->timer.post([st] { st->signal_stop_done(); });
    st->set_leading(false);
    auto f = st->log_fields();
    f["release"] = release;
    log::info("leader election stopping: stopped leading", f);
    // on_stopped_leading first, so that our leader work has stopped before anyone can take over.
    st->timer.post([st, release] {
      if (st->callbacks.on_stopped_leading) st->callbacks.on_stopped_leading();
      if (release) st->release(0);
      else st->signal_stop_done();
    });
  });
  if (wait) {
    cg::MutexLock lk(st->mu);
    const auto bound = st->opts.renew_deadline + std::chrono::seconds(1);
    if (!st->cv.wait_for(lk, bound, [&]() CG_REQUIRES(st->mu) { return st->stop_done; }))
      log::warn("leader election stopped before the lease release was answered", st->log_fields());
  }
  st->timer.stop();
}

bool LeaderElector::leading() const { return st_->leading_flag.load(); }

std::string LeaderElector::leader() const {
  cg::MutexLock lk(st_->mu);
  return st_->observed_holder;
}

const LeaderElectorOptions& LeaderElector::options() const { return st_->opts; }

// --- LeaseWatcher --------------------------------------------------------------------------------

struct LeaseWatcher::State : std::enable_shared_from_this<LeaseWatcher::State> {
  State(const boost::asio::any_io_executor& control, KubeClient& c, LeaseWatcherOptions o, std::function<void()> cb)
      : client(c), opts(std::move(o)), on_change(std::move(cb)), timer(control) {}

  struct Entry {
    LeaseRecord rec;
    SysTime observed;  // local time at which rec's spec last changed
  };

  KubeClient& client;
  const LeaseWatcherOptions opts;
  const std::function<void()> on_change;
  ControlTimer timer;  // on_change and the expiry timer

  // Informer callbacks (io threads), the strand and readers anywhere. A leaf: the informer calls back
  // with its own lock released, and it is started and stopped outside this one.
  mutable cg::Mutex mu;
  std::map<std::string, Entry> entries CG_GUARDED_BY(mu);
  bool synced CG_GUARDED_BY(mu) = false;
  bool started CG_GUARDED_BY(mu) = false;
  bool stopped CG_GUARDED_BY(mu) = false;
  std::shared_ptr<Informer> informer CG_GUARDED_BY(mu);

  static bool live(const Entry& e, SysTime now) {
    return e.rec.held() && e.rec.renew_time && e.rec.lease_duration.count() > 0 && e.observed + e.rec.lease_duration > now;
  }

  // Returns whether anything the election cares about changed.
  bool upsert_locked(LeaseRecord rec, SysTime now) CG_REQUIRES(mu) {
    auto it = entries.find(rec.name);
    if (it == entries.end()) {
      auto name = rec.name;
      entries.emplace(std::move(name), Entry{std::move(rec), now});
      return true;
    }
    const bool changed = !it->second.rec.same_spec(rec);
    if (changed) it->second.observed = now;
    it->second.rec = std::move(rec);
    return changed;
  }

  void apply_list(const std::vector<json>& items) {
    const auto now = std::chrono::system_clock::now();
    bool changed = false;
    {
      cg::MutexLock lk(mu);
      if (stopped) return;
      std::set<std::string> seen;
      for (const auto& item : items) {
        auto rec = LeaseRecord::parse(item);
        if (!rec) continue;
        seen.insert(rec->name);
        changed = upsert_locked(std::move(*rec), now) || changed;
      }
      for (auto it = entries.begin(); it != entries.end();) {
        if (seen.count(it->first)) {
          ++it;
        } else {
          it = entries.erase(it);
          changed = true;
        }
      }
      changed = changed || !synced;
      synced = true;
    }
    if (changed) notify_later();
  }

  void apply_event(EventType type, const json& obj) {
    auto rec = LeaseRecord::parse(obj);
    if (!rec) return;
    {
      cg::MutexLock lk(mu);
      if (stopped) return;
      if (type == EventType::Deleted) entries.erase(rec->name);
      else upsert_locked(std::move(*rec), std::chrono::system_clock::now());
    }
    notify_later();
  }

  void notify_later() {
    timer.post([self = shared_from_this()] { self->notify(); });
  }

  // On the strand: tell the listener, then time the next expiry.
  void notify() {
    if (on_change) on_change();
    reschedule();
  }

  void reschedule() {
    const auto now = std::chrono::system_clock::now();
    std::optional<SysTime> next;
    {
      cg::MutexLock lk(mu);
      for (const auto& [name, e] : entries) {
        if (!live(e, now)) continue;
        const SysTime at = e.observed + e.rec.lease_duration;
        if (!next || at < *next) next = at;
      }
    }
    // A timed run left from before (its Lease renewed or gone) may still fire: one extra on_change.
    if (!next) return;
    const auto delay = std::chrono::duration_cast<steady::duration>(*next - now) + std::chrono::milliseconds(5);
    timer.run_after(delay, [self = shared_from_this()] { self->notify(); });
  }
};

LeaseWatcher::LeaseWatcher(const boost::asio::any_io_executor& control, KubeClient& client, LeaseWatcherOptions opts,
                           std::function<void()> on_change)
    : st_(std::make_shared<State>(control, client, std::move(opts), std::move(on_change))) {}

LeaseWatcher::~LeaseWatcher() {
  no_throw("LeaseWatcher::~LeaseWatcher", [this] { stop(); });
}

void LeaseWatcher::start() {
  std::shared_ptr<Informer> inf;
  {
    cg::MutexLock lk(st_->mu);
    if (st_->started || st_->stopped) return;
    st_->started = true;
    InformerResource res;
    res.path = lease_collection_path(st_->opts.ns);
    res.label_selector = st_->opts.label_selector;
    res.api_version = kLeaseApiVersion;
    res.kind = "Lease";
    res.name = "leases/" + st_->opts.ns;
    InformerOptions io;
    io.backoff_initial = st_->opts.backoff_initial;
    io.backoff_max = st_->opts.backoff_max;
    std::weak_ptr<State> weak = st_;
    InformerCallbacks cb;
    cb.on_list = [weak](const std::vector<json>& items, const std::string&) {
      if (auto s = weak.lock()) s->apply_list(items);
    };
    cb.on_event = [weak](EventType type, const json& obj) {
      if (auto s = weak.lock()) s->apply_event(type, obj);
    };
    st_->informer = Informer::create(st_->client, std::move(res), io, std::move(cb));
    inf = st_->informer;
  }
  log::info("lease watcher starting", {{"namespace", st_->opts.ns}, {"labelSelector", st_->opts.label_selector}});
  inf->start();
}

void LeaseWatcher::stop() {
  std::shared_ptr<Informer> inf;
  {
    cg::MutexLock lk(st_->mu);
    if (st_->stopped) return;
    st_->stopped = true;
    inf = std::move(st_->informer);
  }
  if (inf) {
    inf->stop();
    if (!inf->inflight()->wait_zero(std::chrono::seconds(5)))
      log::warn("lease watcher stopped with callbacks still in flight", {{"namespace", st_->opts.ns}});
  }
  st_->timer.stop();
}

bool LeaseWatcher::synced() const {
  cg::MutexLock lk(st_->mu);
  return st_->synced;
}

std::vector<std::string> LeaseWatcher::live(SysTime now) const {
  std::vector<std::string> out;
  cg::MutexLock lk(st_->mu);
  for (const auto& [name, e] : st_->entries)
    if (State::live(e, now)) out.push_back(name);
  return out;
}

std::map<std::string, LeaseRecord> LeaseWatcher::records() const {
  std::map<std::string, LeaseRecord> out;
  cg::MutexLock lk(st_->mu);
  for (const auto& [name, e] : st_->entries) out.emplace(name, e.rec);
  return out;
}

}  // namespace cg::kube
