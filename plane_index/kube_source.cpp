#include "plane_index/kube_source.hpp"

#include <array>
#include <condition_variable>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "common/control_timer.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_annotations.hpp"
#include "kube/client.hpp"
#include "kube/informer.hpp"
#include "kube/watch_event.hpp"

namespace cg::plane {
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using kube::EventType;
using kube::Informer;
using kube::InformerSignal;
using kube::meta_string;

namespace {

// RFC 1123 label (namespaces) and subdomain (secret names): also keeps request paths clean.
bool valid_label(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-' && s.back() != '-';
}

bool valid_subdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    if (!valid_label(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start))) return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

std::string obj_key(const json& obj) { return meta_string(obj, "namespace") + "/" + meta_string(obj, "name"); }

using SecretId = std::pair<std::string, std::string>;  // namespace, name

kube::InformerOptions informer_options(const KubeSourceOptions& o) {
  kube::InformerOptions io;
  io.page_size = o.list_page_size;
  io.list_timeout = o.list_timeout;
  io.watch_timeout = o.watch_timeout;
  io.watch_idle_margin = o.watch_idle_margin;
  io.backoff_initial = o.backoff_initial;
  io.backoff_max = o.backoff_max;
  return io;
}

}  // namespace

struct KubePlaneSource::State : std::enable_shared_from_this<KubePlaneSource::State> {
  State(const boost::asio::any_io_executor& control, kube::KubeClient& c, PlaneIndex& i, KubeSourceOptions o)
      : client(c), index(i), opts(o), timer(control) {}

  kube::KubeClient& client;
  PlaneIndex& index;
  KubeSourceOptions opts;
  // The applier: apply_step runs on this timer's strand (the control thread), posted by every change
  // and timed for the coalescing window and the new-secret grace.
  ControlTimer timer;

  // Guards everything below but `inflight` (informer callbacks on the client's io threads, the
  // applier on the control thread, stats/synced readers anywhere). A leaf as far as the informers go:
  // they call back with their own lock released, and the State starts and stops them outside `mu`.
  // Under it: the ControlTimer's post/run_at (its own lock) and log lines.
  mutable cg::Mutex mu;
  mutable std::condition_variable_any cv;  // wait_synced(): synced or stopping; waits on a cg::MutexLock
  bool started CG_GUARDED_BY(mu) = false;
  bool stopping CG_GUARDED_BY(mu) = false;
  bool synced CG_GUARDED_BY(mu) = false;
  bool dirty CG_GUARDED_BY(mu) = false;
  std::array<std::map<std::string, PlaneCR>, 6> crs CG_GUARDED_BY(mu);  // by kind index, keyed "ns/name"
  std::array<bool, 6> listed CG_GUARDED_BY(mu){};
  std::array<std::shared_ptr<Informer>, 6> cr_informers CG_GUARDED_BY(mu);
  struct SecretEntry {
    std::shared_ptr<Informer> informer;
    std::optional<SecretObj> obj;
    bool listed = false;
    steady::time_point since;
  };
  std::map<SecretId, SecretEntry> secrets CG_GUARDED_BY(mu);
  // Every informer's requests, watches and timers whose callbacks have not finished (stop() waits).
  const std::shared_ptr<kube::Inflight> inflight = std::make_shared<kube::Inflight>();
  steady::time_point last_replace CG_GUARDED_BY(mu){};
  KubeSourceStats stats CG_GUARDED_BY(mu);

  // The informers' callbacks hold only a weak_ptr to the State (the State holds the informers).
  kube::InformerCallbacks callbacks_for_kind(size_t kind);
  kube::InformerCallbacks callbacks_for_secret(const SecretId& id, const std::shared_ptr<const Informer*>& holder);
  void on_signal(InformerSignal s) CG_EXCLUDES(mu);
  // A named helper, so that the analysis checks the lock: it does not follow `stats.*field`.
  void count_locked(uint64_t KubeSourceStats::*field) CG_REQUIRES(mu) { ++(stats.*field); }
  void apply_cr_list(size_t kind, const std::vector<json>& items) CG_EXCLUDES(mu);
  void apply_cr_event(size_t kind, EventType type, const json& obj) CG_EXCLUDES(mu);
  void apply_secret_list(const SecretId& id, const Informer* inf, const std::vector<json>& items) CG_EXCLUDES(mu);
  void apply_secret_event(const SecretId& id, const Informer* inf, EventType type, const json& obj) CG_EXCLUDES(mu);
  // Recomputes the referenced secrets; informers to start/stop are returned to be acted on unlocked.
  void update_secret_refs_locked(std::vector<std::shared_ptr<Informer>>& start, std::vector<std::shared_ptr<Informer>>& stop)
      CG_REQUIRES(mu);
  void start_stop(const std::vector<std::shared_ptr<Informer>>& start, const std::vector<std::shared_ptr<Informer>>& stop)
      CG_EXCLUDES(mu);
  void kick() {
    timer.post([this] { apply_step(); });
  }  // any thread, with or without mu
  void apply_step() CG_EXCLUDES(mu);
  PlaneWorld world_locked() const CG_REQUIRES(mu);
};

// --- State -------------------------------------------------------------------------------------

kube::InformerCallbacks KubePlaneSource::State::callbacks_for_kind(size_t kind) {
  std::weak_ptr<State> weak = shared_from_this();
  kube::InformerCallbacks cb;
  cb.on_list = [weak, kind](const std::vector<json>& items, const std::string&) {
    if (auto s = weak.lock()) s->apply_cr_list(kind, items);
  };
  cb.on_event = [weak, kind](EventType type, const json& obj) {
    if (auto s = weak.lock()) s->apply_cr_event(kind, type, obj);
  };
  cb.on_signal = [weak](InformerSignal sig) {
    if (auto s = weak.lock()) s->on_signal(sig);
  };
  return cb;
}

// `holder` is filled in with the informer once it exists: its events count only while it is the one
// in `secrets` for that id (a secret dropped and referenced again gets a new informer).
kube::InformerCallbacks KubePlaneSource::State::callbacks_for_secret(const SecretId& id,
                                                                     const std::shared_ptr<const Informer*>& holder) {
  std::weak_ptr<State> weak = shared_from_this();
  kube::InformerCallbacks cb;
  cb.on_list = [weak, id, holder](const std::vector<json>& items, const std::string&) {
    if (auto s = weak.lock()) s->apply_secret_list(id, *holder, items);
  };
  cb.on_event = [weak, id, holder](EventType type, const json& obj) {
    if (auto s = weak.lock()) s->apply_secret_event(id, *holder, type, obj);
  };
  cb.on_signal = [weak](InformerSignal sig) {
    if (auto s = weak.lock()) s->on_signal(sig);
  };
  return cb;
}

// Stats, and cluster_gateway_plane_source_events_total{source="kubernetes"} for the events
// docs/operations.md lists (relist_gone, continue_expired, watch_idle, list_error, watch_error).
void KubePlaneSource::State::on_signal(InformerSignal sig) {
  uint64_t KubeSourceStats::*field = nullptr;
  bool metric = false;
  switch (sig) {
    case InformerSignal::Listed: field = &KubeSourceStats::lists; break;
    case InformerSignal::ListPage: field = &KubeSourceStats::list_pages; break;
    case InformerSignal::ContinueExpired:
      field = &KubeSourceStats::continue_expired;
      metric = true;
      break;
    case InformerSignal::ListError: metric = true; break;
    case InformerSignal::WatchStarted: field = &KubeSourceStats::watches; break;
    case InformerSignal::RelistGone:
      field = &KubeSourceStats::relists_gone;
      metric = true;
      break;
    case InformerSignal::WatchIdle:
      field = &KubeSourceStats::watch_idle_restarts;
      metric = true;
      break;
    case InformerSignal::WatchError: metric = true; break;
    case InformerSignal::Backoff: field = &KubeSourceStats::errors; break;
  }
  if (field) {
    cg::MutexLock lk(mu);
    count_locked(field);
  }
  if (metric) metrics::plane_source_event("kubernetes", kube::to_string(sig));
}

namespace {

std::optional<PlaneCR> parse_cr(const json& obj, size_t kind, std::string& error) {
  ParsedObject p = parse_object(obj);
  if (!p.cr) {
    error = p.error.empty() ? "not a " + std::string(all_kinds()[kind].name) : p.error;
    return std::nullopt;
  }
  if (p.cr->ref.kind != all_kinds()[kind].kind) {
    error = "unexpected kind";
    return std::nullopt;
  }
  p.cr->origin = "kubernetes";
  return std::move(p.cr);
}

}  // namespace

void KubePlaneSource::State::apply_cr_list(size_t kind, const std::vector<json>& items) {
  std::map<std::string, PlaneCR> next;
  std::vector<std::pair<std::string, std::string>> problems;
  for (const auto& obj : items) {
    std::string err;
    if (auto cr = parse_cr(obj, kind, err)) next[obj_key(obj)] = std::move(*cr);
    else problems.emplace_back(obj_key(obj), err);
  }
  std::vector<std::shared_ptr<Informer>> start, stop;
  {
    cg::MutexLock lk(mu);
    if (stopping) return;
    for (const auto& [key, err] : problems) {  // keep the last good version of an object that stopped parsing
      if (auto it = crs[kind].find(key); it != crs[kind].end()) next[key] = it->second;
    }
    crs[kind] = std::move(next);
    listed[kind] = true;
    dirty = true;
    update_secret_refs_locked(start, stop);
    kick();
  }
  for (const auto& [key, err] : problems) {
    metrics::plane_document_rejected();
    log::warn("plane CR rejected", {{"kind", std::string(all_kinds()[kind].name)}, {"cr", key}, {"reason", err}});
  }
  start_stop(start, stop);
}

void KubePlaneSource::State::apply_cr_event(size_t kind, EventType type, const json& obj) {
  const std::string key = obj_key(obj);
  std::string err;
  std::optional<PlaneCR> cr;
  if (type != EventType::Deleted) {
    cr = parse_cr(obj, kind, err);
    if (!cr) {
      metrics::plane_document_rejected();
      log::warn("plane CR rejected; its last good version stays in force",
                {{"kind", std::string(all_kinds()[kind].name)}, {"cr", key}, {"reason", err}});
      return;
    }
  }
  std::vector<std::shared_ptr<Informer>> start, stop;
  {
    cg::MutexLock lk(mu);
    if (stopping) return;
    if (cr) crs[kind][key] = std::move(*cr);
    else crs[kind].erase(key);
    dirty = true;
    update_secret_refs_locked(start, stop);
    kick();
  }
  start_stop(start, stop);
}

void KubePlaneSource::State::apply_secret_list(const SecretId& id, const Informer* inf, const std::vector<json>& items) {
  std::optional<SecretObj> obj;
  for (const auto& item : items) {
    if (meta_string(item, "name") != id.second) continue;  // the field selector should make this moot
    auto p = parse_object(item);
    if (p.secret) obj = std::move(p.secret);
    else log::warn("secret unreadable", {{"secret", id.first + "/" + id.second}, {"reason", p.error}});
  }
  cg::MutexLock lk(mu);
  auto it = secrets.find(id);
  if (stopping || it == secrets.end() || it->second.informer.get() != inf) return;
  it->second.obj = std::move(obj);
  it->second.listed = true;
  dirty = true;
  kick();
}

void KubePlaneSource::State::apply_secret_event(const SecretId& id, const Informer* inf, EventType type, const json& obj) {
  if (meta_string(obj, "name") != id.second) return;
  std::optional<SecretObj> s;
  if (type != EventType::Deleted) {
    auto p = parse_object(obj);
    if (!p.secret) {
      log::warn("secret unreadable", {{"secret", id.first + "/" + id.second}, {"reason", p.error}});
      return;
    }
    s = std::move(p.secret);
  }
  cg::MutexLock lk(mu);
  auto it = secrets.find(id);
  if (stopping || it == secrets.end() || it->second.informer.get() != inf) return;
  it->second.obj = std::move(s);
  dirty = true;
  kick();
}

void KubePlaneSource::State::update_secret_refs_locked(std::vector<std::shared_ptr<Informer>>& start,
                                                       std::vector<std::shared_ptr<Informer>>& stop) {
  std::set<SecretId> wanted;
  for (const auto& by_key : crs) {
    for (const auto& [key, cr] : by_key) {
      // The index only looks at the secret when there is no inline value: so do we.
      if (!cr.has_client_ca || cr.ca_value || !cr.ca_secret) continue;
      const auto& r = *cr.ca_secret;
      std::string ns = r.ns.empty() ? cr.ref.ns : r.ns;
      if (r.key.empty() || !valid_label(ns) || !valid_subdomain(r.name)) continue;
      wanted.insert({ns, r.name});
    }
  }
  for (auto it = secrets.begin(); it != secrets.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    log::debug("CA secret no longer referenced; forgetting it", {{"secret", it->first.first + "/" + it->first.second}});
    stop.push_back(it->second.informer);
    it = secrets.erase(it);
    dirty = true;
  }
  for (const auto& id : wanted) {
    if (secrets.count(id)) continue;
    auto holder = std::make_shared<const Informer*>(nullptr);
    kube::InformerResource res;
    res.path = "/api/v1/namespaces/" + id.first + "/secrets";
    res.field_selector = "metadata.name=" + id.second;
    res.api_version = "v1";
    res.kind = "Secret";
    res.name = "secret " + id.first + "/" + id.second;
    auto inf = Informer::create(client, std::move(res), informer_options(opts), callbacks_for_secret(id, holder), inflight);
    *holder = inf.get();
    SecretEntry e;
    e.informer = inf;
    e.since = steady::now();
    secrets.emplace(id, std::move(e));
    start.push_back(inf);
  }
  stats.secrets_tracked = secrets.size();
}

void KubePlaneSource::State::start_stop(const std::vector<std::shared_ptr<Informer>>& start,
                                        const std::vector<std::shared_ptr<Informer>>& stop) {
  for (const auto& i : stop) i->stop();
  for (const auto& i : start) i->start();
}

PlaneWorld KubePlaneSource::State::world_locked() const {
  PlaneWorld w;
  for (const auto& by_key : crs)
    for (const auto& [key, cr] : by_key) w.crs.push_back(cr);
  for (const auto& [id, e] : secrets)
    if (e.obj) w.secrets.push_back(*e.obj);
  return w;
}

void KubePlaneSource::State::apply_step() {
  cg::MutexLock lk(mu);
  if (stopping) return;
  bool all_listed = true;
  for (bool l : listed) all_listed = all_listed && l;
  if (!dirty || !all_listed) return;  // the next change posts again
  const auto now = steady::now();
  std::optional<steady::time_point> hold;
  for (const auto& [id, e] : secrets) {
    if (e.listed) continue;
    if (!synced) {  // the first snapshot waits for every referenced secret
      hold = steady::time_point::max();
      break;
    }
    auto until = e.since + opts.new_secret_grace;
    if (now < until && (!hold || until > *hold)) hold = until;
  }
  if (synced && now < last_replace + opts.coalesce) {
    auto until = last_replace + opts.coalesce;
    if (!hold || until > *hold) hold = until;
  }
  if (hold) {
    // max: until the secret's list arrives (it posts); otherwise look again at `hold`.
    if (*hold != steady::time_point::max()) timer.run_at(*hold, [this] { apply_step(); });
    return;
  }
  PlaneWorld w = world_locked();
  dirty = false;
  const bool first = !synced;
  lk.unlock();
  index.replace(w);
  lk.lock();
  last_replace = steady::now();
  ++stats.replaces;
  if (first) {
    synced = true;
    cv.notify_all();
    lk.unlock();
    log::info("kubernetes plane source synced", {{"crs", w.crs.size()}, {"secrets", w.secrets.size()}});
  }
}

// --- KubePlaneSource ---------------------------------------------------------------------------

KubePlaneSource::KubePlaneSource(const boost::asio::any_io_executor& control, kube::KubeClient& client, PlaneIndex& index,
                                 KubeSourceOptions opts)
    : st_(std::make_shared<State>(control, client, index, opts)) {}

KubePlaneSource::~KubePlaneSource() { stop(); }

void KubePlaneSource::start() {
  std::array<std::shared_ptr<Informer>, 6> infs;
  {
    cg::MutexLock lk(st_->mu);
    if (st_->started || st_->stopping) return;
    st_->started = true;
    for (size_t k = 0; k < all_kinds().size(); ++k) {
      const auto& ki = all_kinds()[k];
      kube::InformerResource res;
      res.path = "/apis/" + std::string(kApiGroup) + "/v1alpha1/" + std::string(ki.plural);
      res.api_version = std::string(kApiVersion);
      res.kind = std::string(ki.name);
      res.name = std::string(ki.plural);
      st_->cr_informers[k] =
          Informer::create(st_->client, std::move(res), informer_options(st_->opts), st_->callbacks_for_kind(k), st_->inflight);
    }
    infs = st_->cr_informers;
  }
  log::info("kubernetes plane source starting",
            {{"server", st_->client.config().server}, {"source", st_->client.config().source}});
  for (auto& inf : infs) inf->start();
  if (st_->opts.start_wait.count() > 0) wait_synced(st_->opts.start_wait);
}

void KubePlaneSource::stop() {
  std::vector<std::shared_ptr<Informer>> infs;
  {
    cg::MutexLock lk(st_->mu);
    if (st_->stopping) return;
    st_->stopping = true;
    for (auto& i : st_->cr_informers)
      if (i) infs.push_back(std::move(i));
    for (auto& [id, e] : st_->secrets) infs.push_back(std::move(e.informer));
    st_->secrets.clear();
    st_->cv.notify_all();
  }
  for (auto& i : infs) i->stop();
  infs.clear();
  st_->timer.stop();  // an apply_step in progress (PlaneIndex::replace) has finished
  if (!st_->inflight->wait_zero(st_->opts.stop_wait))
    log::warn("kubernetes plane source stopped with callbacks still in flight", {{"inflight", st_->inflight->count()}});
}

bool KubePlaneSource::synced() const {
  cg::MutexLock lk(st_->mu);
  return st_->synced;
}

bool KubePlaneSource::wait_synced(std::chrono::milliseconds timeout) const {
  cg::MutexLock lk(st_->mu);
  return st_->cv.wait_for(lk, timeout, [&]() CG_REQUIRES(st_->mu) { return st_->synced || st_->stopping; }) && st_->synced;
}

KubeSourceStats KubePlaneSource::stats() const {
  cg::MutexLock lk(st_->mu);
  return st_->stats;
}

}  // namespace cg::plane
