#include "plane_index/kube_source.hpp"

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "common/log.hpp"
#include "common/net.hpp"
#include "plane_index/kube_client.hpp"
#include "plane_index/watch_event.hpp"

namespace cg::plane {
using namespace cg::net;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

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

double uniform(double a, double b) {
  thread_local std::mt19937 gen(std::random_device{}());
  return std::uniform_real_distribution<double>(a, b)(gen);
}

double jitter() { return uniform(0.8, 1.2); }  // +-20%

std::string status_message(int status, const std::string& body, const std::string& error) {
  kube::Response r;
  r.status = status;
  r.body = body;
  r.error = error;
  return r.message();
}

using SecretId = std::pair<std::string, std::string>;  // namespace, name

}  // namespace

class Informer;

struct KubePlaneSource::State : std::enable_shared_from_this<KubePlaneSource::State> {
  State(kube::KubeClient& c, PlaneIndex& i, KubeSourceOptions o) : client(c), index(i), opts(o) {}

  kube::KubeClient& client;
  PlaneIndex& index;
  KubeSourceOptions opts;

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  bool started = false;
  bool stopping = false;
  bool synced = false;
  bool dirty = false;
  std::array<std::map<std::string, PlaneCR>, 6> crs;  // by kind index, keyed "ns/name"
  std::array<bool, 6> listed{};
  std::array<std::shared_ptr<Informer>, 6> cr_informers;
  struct SecretEntry {
    std::shared_ptr<Informer> informer;
    std::optional<SecretObj> obj;
    bool listed = false;
    steady::time_point since;
  };
  std::map<SecretId, SecretEntry> secrets;
  int inflight = 0;
  steady::time_point last_replace{};
  KubeSourceStats stats;

  void begin_op() {
    std::lock_guard lk(mu);
    ++inflight;
  }
  void end_op() {
    std::lock_guard lk(mu);
    if (--inflight == 0) cv.notify_all();
  }
  void count(uint64_t KubeSourceStats::*field) {
    std::lock_guard lk(mu);
    ++(stats.*field);
  }

  void apply_cr_list(size_t kind, std::vector<json> items);
  void apply_cr_event(size_t kind, const std::string& type, const json& obj);
  void apply_secret_list(const SecretId& id, const Informer* inf, std::vector<json> items);
  void apply_secret_event(const SecretId& id, const Informer* inf, const std::string& type, const json& obj);
  // Recomputes the referenced secrets; informers to start/stop are returned to be acted on unlocked.
  void update_secret_refs_locked(std::vector<std::shared_ptr<Informer>>& start,
                                 std::vector<std::shared_ptr<Informer>>& stop);
  void start_stop(const std::vector<std::shared_ptr<Informer>>& start,
                  const std::vector<std::shared_ptr<Informer>>& stop);
  void run_applier();
  PlaneWorld world_locked() const;
};

// LIST + WATCH of one collection (optionally restricted by a selector), following client-go's reflector.
class Informer : public std::enable_shared_from_this<Informer> {
 public:
  struct Hooks {
    std::function<void(std::vector<json>)> on_list;                               // the complete current set
    std::function<void(const std::string& type, const json& obj)> on_event;      // ADDED, MODIFIED, DELETED
  };

  Informer(std::shared_ptr<KubePlaneSource::State> st, std::string what, std::string collection, std::string selector,
           std::string api_version, std::string kind, Hooks hooks)
      : st_(std::move(st)),
        what_(std::move(what)),
        collection_(std::move(collection)),
        selector_(std::move(selector)),
        api_version_(std::move(api_version)),
        kind_(std::move(kind)),
        hooks_(std::move(hooks)),
        backoff_(st_->opts.backoff_initial) {}

  void start() { list(); }

  void stop() {
    std::lock_guard lk(mu_);
    stopped_ = true;
    if (handle_) handle_->cancel();
    if (timer_) timer_->cancel();
    hooks_ = {};
  }

 private:
  bool stopped() {
    std::lock_guard lk(mu_);
    return stopped_;
  }

  void fill_type(json& obj) const {
    if (!obj.is_object()) return;
    if (!obj.contains("apiVersion")) obj["apiVersion"] = api_version_;
    if (!obj.contains("kind")) obj["kind"] = kind_;
  }

  void list() {
    if (stopped()) return;
    kube::Request req;
    req.path = collection_ + (selector_.empty() ? "" : "?" + selector_);
    req.timeout = st_->opts.list_timeout;
    st_->begin_op();
    st_->client.request(std::move(req), [self = shared_from_this()](kube::Response r) {
      self->on_list(r);
      self->st_->end_op();
    });
  }

  void on_list(const kube::Response& r) {
    if (stopped()) return;
    if (r.status == 0 && r.error == kube::kShutDownError) return;  // the client is gone: nothing to follow with
    if (!r.ok()) {
      log::warn("kubernetes list failed; will retry",
                {{"resource", what_}, {"status", r.status}, {"reason", r.message()}});
      return retry_later(true, r.retry_after);
    }
    ListAnswer ans = decode_list_answer(r.body);
    if (!ans.error.empty()) {
      log::warn("kubernetes list answer unreadable; will retry", {{"resource", what_}, {"reason", ans.error}});
      return retry_later(true, std::nullopt);
    }
    std::vector<json> items = std::move(ans.items);
    for (auto& item : items) fill_type(item);
    std::string rv = std::move(ans.resource_version);
    std::function<void(std::vector<json>)> on_list;
    {
      std::lock_guard lk(mu_);
      if (stopped_) return;
      on_list = hooks_.on_list;
      rv_ = rv;
      backoff_ = st_->opts.backoff_initial;
    }
    st_->count(&KubeSourceStats::lists);
    log::debug("kubernetes list applied", {{"resource", what_}, {"items", items.size()}, {"resourceVersion", rv}});
    if (on_list) on_list(std::move(items));
    watch();
  }

  void watch() {
    std::unique_lock lk(mu_);
    if (stopped_) return;
    if (rv_.empty()) {  // nothing to resume from
      lk.unlock();
      return list();
    }
    gone_ = false;
    watch_error_.clear();
    events_ = 0;
    watch_started_ = steady::now();
    // Like client-go: a server-side timeout in [watch_timeout, 2*watch_timeout) spreads the re-watches.
    auto timeout = std::chrono::seconds(static_cast<int64_t>(st_->opts.watch_timeout.count() * uniform(1.0, 2.0)));
    if (timeout.count() < 1) timeout = std::chrono::seconds(1);
    std::string path = collection_ + "?" + (selector_.empty() ? "" : selector_ + "&") +
                       "watch=true&resourceVersion=" + kube::url_encode(rv_) +
                       "&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout.count());
    st_->begin_op();
    st_->count(&KubeSourceStats::watches);
    auto self = shared_from_this();
    handle_ = st_->client.watch(
        path, [self](std::string_view line) { self->on_line(line); },
        [self](kube::WatchEnd e) {
          self->on_watch_end(e);
          self->st_->end_op();
        });
  }

  void cancel_watch() {
    std::lock_guard lk(mu_);
    if (handle_) handle_->cancel();
  }

  void on_line(std::string_view line) {
    WatchEvent ev = decode_watch_event(line);
    if (ev.gone || !ev.error.empty()) {  // 410 Gone relists; any other ERROR or bad line resumes after a backoff
      if (ev.gone) gone_ = true;
      else watch_error_ = std::move(ev.error);
      return cancel_watch();
    }
    const std::string& type = ev.type;
    json& obj = ev.object;
    ++events_;
    const std::string& rv = ev.resource_version;
    std::function<void(const std::string&, const json&)> on_event;
    {
      std::lock_guard lk(mu_);
      if (stopped_) return;
      if (!rv.empty()) rv_ = rv;
      on_event = hooks_.on_event;
    }
    if (type == "BOOKMARK") return;
    if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") {
      log::debug("kubernetes watch event of unknown type ignored", {{"resource", what_}, {"type", type}});
      return;
    }
    fill_type(obj);
    if (on_event) on_event(type, obj);
  }

  void on_watch_end(const kube::WatchEnd& e) {
    {
      std::lock_guard lk(mu_);
      handle_.reset();
      if (stopped_) return;
      if (events_ > 0) backoff_ = st_->opts.backoff_initial;  // the watch worked: start over from the shortest delay
    }
    if (gone_ || e.status == 410) {
      st_->count(&KubeSourceStats::relists_gone);
      log::info("kubernetes watch expired (410 Gone); relisting", {{"resource", what_}});
      return list();
    }
    if (!watch_error_.empty()) {
      log::warn("kubernetes watch failed; will resume", {{"resource", what_}, {"reason", watch_error_}});
      return retry_later(false, std::nullopt);
    }
    if (e.status != 200) {
      log::warn("kubernetes watch refused; will retry",
                {{"resource", what_}, {"status", e.status}, {"reason", status_message(e.status, e.body, e.error)}});
      return retry_later(false, e.retry_after);
    }
    if (!e.error.empty()) {
      log::warn("kubernetes watch interrupted; will resume", {{"resource", what_}, {"reason", e.error}});
      return retry_later(false, std::nullopt);
    }
    if (e.cancelled) return;  // not by us (that sets gone_/watch_error_) nor stop(): the client was shut down
    // A clean end (timeoutSeconds or the server closed the stream): resume at once, unless it ended
    // immediately without a single event, which must not turn into a tight loop.
    if (events_ == 0 && steady::now() - watch_started_ < std::chrono::seconds(1))
      return retry_later(false, std::nullopt);
    watch();
  }

  void retry_later(bool relist, std::optional<std::chrono::seconds> retry_after) {
    st_->count(&KubeSourceStats::errors);
    std::lock_guard lk(mu_);
    if (stopped_) return;
    auto delay = std::chrono::duration_cast<steady::duration>(backoff_ * jitter());
    backoff_ = std::min<steady::duration>(backoff_ * 2, st_->opts.backoff_max);
    if (retry_after && *retry_after > delay) delay = std::min<steady::duration>(*retry_after, st_->opts.backoff_max);
    if (rv_.empty()) relist = true;
    timer_ = std::make_unique<asio::steady_timer>(st_->client.io_context());
    timer_->expires_after(delay);
    st_->begin_op();
    timer_->async_wait([self = shared_from_this(), relist](beast::error_code ec) {
      if (!ec && !self->stopped()) {
        if (relist) self->list();
        else self->watch();
      }
      self->st_->end_op();
    });
  }

  std::shared_ptr<KubePlaneSource::State> st_;
  const std::string what_, collection_, selector_, api_version_, kind_;
  std::mutex mu_;
  Hooks hooks_;
  bool stopped_ = false;
  std::string rv_;
  steady::duration backoff_;
  std::shared_ptr<kube::WatchHandle> handle_;
  std::unique_ptr<asio::steady_timer> timer_;
  // Per watch; only touched by that watch's callbacks, which run one after the other.
  bool gone_ = false;
  std::string watch_error_;
  uint64_t events_ = 0;
  steady::time_point watch_started_;
};

// --- State -------------------------------------------------------------------------------------

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

void KubePlaneSource::State::apply_cr_list(size_t kind, std::vector<json> items) {
  std::map<std::string, PlaneCR> next;
  std::vector<std::pair<std::string, std::string>> problems;
  for (const auto& obj : items) {
    std::string err;
    if (auto cr = parse_cr(obj, kind, err)) next[obj_key(obj)] = std::move(*cr);
    else problems.emplace_back(obj_key(obj), err);
  }
  std::vector<std::shared_ptr<Informer>> start, stop;
  {
    std::lock_guard lk(mu);
    if (stopping) return;
    for (const auto& [key, err] : problems) {  // keep the last good version of an object that stopped parsing
      if (auto it = crs[kind].find(key); it != crs[kind].end()) next[key] = it->second;
    }
    crs[kind] = std::move(next);
    listed[kind] = true;
    dirty = true;
    update_secret_refs_locked(start, stop);
    cv.notify_all();
  }
  for (const auto& [key, err] : problems)
    log::warn("plane CR rejected", {{"kind", std::string(all_kinds()[kind].name)}, {"cr", key}, {"reason", err}});
  start_stop(start, stop);
}

void KubePlaneSource::State::apply_cr_event(size_t kind, const std::string& type, const json& obj) {
  const std::string key = obj_key(obj);
  std::string err;
  std::optional<PlaneCR> cr;
  if (type != "DELETED") {
    cr = parse_cr(obj, kind, err);
    if (!cr) {
      log::warn("plane CR rejected; its last good version stays in force",
                {{"kind", std::string(all_kinds()[kind].name)}, {"cr", key}, {"reason", err}});
      return;
    }
  }
  std::vector<std::shared_ptr<Informer>> start, stop;
  {
    std::lock_guard lk(mu);
    if (stopping) return;
    if (cr) crs[kind][key] = std::move(*cr);
    else crs[kind].erase(key);
    dirty = true;
    update_secret_refs_locked(start, stop);
    cv.notify_all();
  }
  start_stop(start, stop);
}

void KubePlaneSource::State::apply_secret_list(const SecretId& id, const Informer* inf, std::vector<json> items) {
  std::optional<SecretObj> obj;
  for (const auto& item : items) {
    if (meta_string(item, "name") != id.second) continue;  // the field selector should make this moot
    auto p = parse_object(item);
    if (p.secret) obj = std::move(p.secret);
    else log::warn("secret unreadable", {{"secret", id.first + "/" + id.second}, {"reason", p.error}});
  }
  std::lock_guard lk(mu);
  auto it = secrets.find(id);
  if (stopping || it == secrets.end() || it->second.informer.get() != inf) return;
  it->second.obj = std::move(obj);
  it->second.listed = true;
  dirty = true;
  cv.notify_all();
}

void KubePlaneSource::State::apply_secret_event(const SecretId& id, const Informer* inf, const std::string& type,
                                                const json& obj) {
  if (meta_string(obj, "name") != id.second) return;
  std::optional<SecretObj> s;
  if (type != "DELETED") {
    auto p = parse_object(obj);
    if (!p.secret) {
      log::warn("secret unreadable", {{"secret", id.first + "/" + id.second}, {"reason", p.error}});
      return;
    }
    s = std::move(p.secret);
  }
  std::lock_guard lk(mu);
  auto it = secrets.find(id);
  if (stopping || it == secrets.end() || it->second.informer.get() != inf) return;
  it->second.obj = std::move(s);
  dirty = true;
  cv.notify_all();
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
  std::weak_ptr<State> weak = shared_from_this();
  for (const auto& id : wanted) {
    if (secrets.count(id)) continue;
    auto holder = std::make_shared<const Informer*>(nullptr);
    Informer::Hooks hooks;
    hooks.on_list = [weak, id, holder](std::vector<json> items) {
      if (auto s = weak.lock()) s->apply_secret_list(id, *holder, std::move(items));
    };
    hooks.on_event = [weak, id, holder](const std::string& type, const json& obj) {
      if (auto s = weak.lock()) s->apply_secret_event(id, *holder, type, obj);
    };
    auto inf = std::make_shared<Informer>(
        shared_from_this(), "secret " + id.first + "/" + id.second, "/api/v1/namespaces/" + id.first + "/secrets",
        "fieldSelector=" + kube::url_encode("metadata.name=" + id.second), "v1", "Secret", std::move(hooks));
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

void KubePlaneSource::State::run_applier() {
  std::unique_lock lk(mu);
  while (!stopping) {
    bool all_listed = true;
    for (bool l : listed) all_listed = all_listed && l;
    if (!dirty || !all_listed) {
      cv.wait(lk);
      continue;
    }
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
      if (*hold == steady::time_point::max()) cv.wait(lk);
      else cv.wait_until(lk, *hold);
      continue;
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
      lk.lock();
    }
  }
}

// --- KubePlaneSource ---------------------------------------------------------------------------

KubePlaneSource::KubePlaneSource(kube::KubeClient& client, PlaneIndex& index, KubeSourceOptions opts)
    : st_(std::make_shared<State>(client, index, opts)) {}

KubePlaneSource::~KubePlaneSource() { stop(); }

void KubePlaneSource::start() {
  {
    std::lock_guard lk(st_->mu);
    if (st_->started || st_->stopping) return;
    st_->started = true;
    for (size_t k = 0; k < all_kinds().size(); ++k) {
      const auto& ki = all_kinds()[k];
      Informer::Hooks hooks;
      std::weak_ptr<State> weak = st_;
      hooks.on_list = [weak, k](std::vector<json> items) {
        if (auto s = weak.lock()) s->apply_cr_list(k, std::move(items));
      };
      hooks.on_event = [weak, k](const std::string& type, const json& obj) {
        if (auto s = weak.lock()) s->apply_cr_event(k, type, obj);
      };
      st_->cr_informers[k] = std::make_shared<Informer>(
          st_, std::string(ki.plural), "/apis/" + std::string(kApiGroup) + "/v1alpha1/" + std::string(ki.plural), "",
          std::string(kApiVersion), std::string(ki.name), std::move(hooks));
    }
  }
  applier_ = std::thread([st = st_] { st->run_applier(); });
  log::info("kubernetes plane source starting", {{"server", st_->client.config().server},
                                                 {"source", st_->client.config().source}});
  for (auto& inf : st_->cr_informers) inf->start();
  if (st_->opts.start_wait.count() > 0) wait_synced(st_->opts.start_wait);
}

void KubePlaneSource::stop() {
  std::vector<std::shared_ptr<Informer>> infs;
  {
    std::lock_guard lk(st_->mu);
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
  if (applier_.joinable()) applier_.join();
  std::unique_lock lk(st_->mu);
  if (!st_->cv.wait_for(lk, st_->opts.stop_wait, [&] { return st_->inflight == 0; }))
    log::warn("kubernetes plane source stopped with callbacks still in flight", {{"inflight", st_->inflight}});
}

bool KubePlaneSource::synced() const {
  std::lock_guard lk(st_->mu);
  return st_->synced;
}

bool KubePlaneSource::wait_synced(std::chrono::milliseconds timeout) const {
  std::unique_lock lk(st_->mu);
  return st_->cv.wait_for(lk, timeout, [&] { return st_->synced || st_->stopping; }) && st_->synced;
}

KubeSourceStats KubePlaneSource::stats() const {
  std::lock_guard lk(st_->mu);
  return st_->stats;
}

}  // namespace cg::plane
