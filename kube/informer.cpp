#include "kube/informer.hpp"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <random>

#include "common/log.hpp"
#include "kube/client.hpp"
#include "kube/watch_event.hpp"

namespace cg::kube {
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

double uniform(double a, double b) {
  thread_local std::mt19937 gen(std::random_device{}());
  return std::uniform_real_distribution<double>(a, b)(gen);
}

double jitter() { return uniform(0.8, 1.2); }  // +-20%

std::string status_message(int status, const std::string& body, const std::string& error) {
  Response r;
  r.status = status;
  r.body = body;
  r.error = error;
  return r.message();
}

// The selectors of a LIST or WATCH query: "fieldSelector=...&labelSelector=...", either one, or "".
std::string selector_query(const InformerResource& r) {
  std::string q;
  if (!r.field_selector.empty()) q = "fieldSelector=" + url_encode(r.field_selector);
  if (!r.label_selector.empty()) q += (q.empty() ? "" : "&") + std::string("labelSelector=") + url_encode(r.label_selector);
  return q;
}

std::optional<EventType> event_type(const std::string& type) {
  if (type == "ADDED") return EventType::Added;
  if (type == "MODIFIED") return EventType::Modified;
  if (type == "DELETED") return EventType::Deleted;
  return std::nullopt;
}

}  // namespace

const char* to_string(EventType t) {
  switch (t) {
    case EventType::Added: return "ADDED";
    case EventType::Modified: return "MODIFIED";
    case EventType::Deleted: return "DELETED";
  }
  return "?";
}

const char* to_string(InformerSignal s) {
  switch (s) {
    case InformerSignal::Listed: return "listed";
    case InformerSignal::ListPage: return "list_page";
    case InformerSignal::ContinueExpired: return "continue_expired";
    case InformerSignal::ListError: return "list_error";
    case InformerSignal::WatchStarted: return "watch_started";
    case InformerSignal::RelistGone: return "relist_gone";
    case InformerSignal::WatchIdle: return "watch_idle";
    case InformerSignal::WatchError: return "watch_error";
    case InformerSignal::Backoff: return "backoff";
  }
  return "?";
}

// --- Inflight ------------------------------------------------------------------------------------

bool Inflight::wait_zero(std::chrono::milliseconds timeout) {
  cg::MutexLock lk(mu_);
  return cv_.wait_for(lk, timeout, [&]() CG_REQUIRES(mu_) { return count_ == 0; });
}

int Inflight::count() const {
  cg::MutexLock lk(mu_);
  return count_;
}

void Inflight::begin() {
  cg::MutexLock lk(mu_);
  ++count_;
}

void Inflight::end() {
  cg::MutexLock lk(mu_);
  if (--count_ == 0) cv_.notify_all();
}

// --- Informer ------------------------------------------------------------------------------------

struct Informer::Timer {
  explicit Timer(boost::asio::io_context& ioc) : strand(boost::asio::make_strand(ioc)), t(strand) {}
  boost::asio::strand<boost::asio::io_context::executor_type> strand;
  boost::asio::steady_timer t;
};

std::shared_ptr<Informer> Informer::create(KubeClient& client, InformerResource resource, InformerOptions opts,
                                           InformerCallbacks callbacks, std::shared_ptr<Inflight> inflight) {
  return std::make_shared<Informer>(Private{}, client, std::move(resource), opts, std::move(callbacks), std::move(inflight));
}

Informer::Informer(Private, KubeClient& client, InformerResource resource, InformerOptions opts, InformerCallbacks callbacks,
                   std::shared_ptr<Inflight> inflight)
    : client_(client),
      res_(std::move(resource)),
      name_(res_.name.empty() ? res_.path : res_.name),
      selector_query_(selector_query(res_)),
      opts_(opts),
      inflight_(inflight ? std::move(inflight) : std::make_shared<Inflight>()),
      callbacks_(std::move(callbacks)),
      backoff_(opts.backoff_initial),
      timer_(std::make_shared<Timer>(client.io_context())) {}

void Informer::start() { list(); }

void Informer::stop() {
  cg::MutexLock lk(mu_);
  stopped_ = true;
  if (handle_) handle_->cancel();
  timer_->t.cancel();
  callbacks_ = {};
}

bool Informer::stopped() {
  cg::MutexLock lk(mu_);
  return stopped_;
}

void Informer::notify(InformerSignal s) {
  std::function<void(InformerSignal)> f;
  {
    cg::MutexLock lk(mu_);
    f = callbacks_.on_signal;
  }
  if (f) f(s);
}

void Informer::fill_type(json& obj) const {
  if (!obj.is_object()) return;
  if (!obj.contains("apiVersion")) obj["apiVersion"] = res_.api_version;
  if (!obj.contains("kind")) obj["kind"] = res_.kind;
}

// A LIST from its first page.
void Informer::list() {
  pages_.clear();
  list_page({});
}

void Informer::list_page(const std::string& token) {
  if (stopped()) return;
  std::string q = selector_query_;
  auto add = [&q](const std::string& p) { q += (q.empty() ? "" : "&") + p; };
  if (opts_.page_size > 0 && list_mode_ == ListMode::Paged) add("limit=" + std::to_string(opts_.page_size));
  if (!token.empty()) add("continue=" + url_encode(token));
  Request req;
  req.path = res_.path + (q.empty() ? "" : "?" + q);
  req.timeout = opts_.list_timeout;
  inflight_->begin();
  client_.request(std::move(req), [self = shared_from_this(), token](const Response& r) {
    self->on_list(r, token);
    self->inflight_->end();
  });
}

void Informer::on_list(const Response& r, const std::string& token) {
  if (stopped()) return;
  if (r.status == 0 && r.error == kShutDownError) return;  // the client is gone: nothing to follow with
  if (!r.ok() && r.status == 410 && !token.empty()) {
    // The continue token expired (the server compacted the resourceVersion the first page was read
    // at): the pages so far cannot be completed consistently. List again from scratch, unpaged, so
    // that it cannot expire again (client-go's pager does the same).
    notify(InformerSignal::ContinueExpired);
    log::info("kubernetes list continue token expired (410); listing again from scratch, unpaged",
              {{"resource", name_}, {"reason", r.message()}});
    list_mode_ = ListMode::UnpagedOnce;
    return list();
  }
  if (!r.ok()) {
    notify(InformerSignal::ListError);
    log::warn("kubernetes list failed; will retry", {{"resource", name_}, {"status", r.status}, {"reason", r.message()}});
    return retry_later(true, r.retry_after);
  }
  ListAnswer ans = decode_list_answer(r.body);
  if (ans.error.empty() && !ans.continue_token.empty() && ans.continue_token == token)
    ans.error = "the server sent the continue token it was given";  // would page forever
  if (!ans.error.empty()) {
    notify(InformerSignal::ListError);
    log::warn("kubernetes list answer unreadable; will retry", {{"resource", name_}, {"reason", ans.error}});
    return retry_later(true, std::nullopt);
  }
  if (!ans.continue_token.empty()) {  // more pages: keep this one and ask for the next
    for (auto& item : ans.items) pages_.push_back(std::move(item));
    notify(InformerSignal::ListPage);
    return list_page(ans.continue_token);
  }
  std::vector<json> items = std::move(pages_);
  pages_.clear();
  list_mode_ = ListMode::Paged;
  for (auto& item : ans.items) items.push_back(std::move(item));
  for (auto& item : items) fill_type(item);
  std::string rv = std::move(ans.resource_version);
  InformerCallbacks cb;
  {
    cg::MutexLock lk(mu_);
    if (stopped_) return;
    cb = callbacks_;
    rv_ = rv;
    backoff_ = opts_.backoff_initial;
  }
  if (cb.on_signal) cb.on_signal(InformerSignal::Listed);
  log::debug("kubernetes list applied", {{"resource", name_}, {"items", items.size()}, {"resourceVersion", rv}});
  if (cb.on_list) cb.on_list(std::move(items), rv);
  watch();
}

void Informer::watch() {
  bool relist = false;
  {
    cg::MutexLock lk(mu_);
    if (stopped_) return;
    relist = rv_.empty();  // nothing to resume from
  }
  if (relist) return list();
  // Before the request: once it is out, the new watch's callbacks may start on another io thread.
  notify(InformerSignal::WatchStarted);
  {
    cg::MutexLock lk(mu_);
    if (stopped_) return;
    outcome_ = WatchOutcome::Running;
    watch_error_.clear();
    events_ = 0;
    watch_started_ = steady::now();
    // Like client-go: a server-side timeout in [watch_timeout, 2*watch_timeout) spreads the re-watches.
    auto timeout = std::chrono::seconds(static_cast<int64_t>(opts_.watch_timeout.count() * uniform(1.0, 2.0)));
    if (timeout.count() < 1) timeout = std::chrono::seconds(1);
    std::string path = res_.path + "?" + (selector_query_.empty() ? "" : selector_query_ + "&") +
                       "watch=true&resourceVersion=" + url_encode(rv_) +
                       "&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout.count());
    WatchOptions wo;
    wo.idle_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout + opts_.watch_idle_margin);
    inflight_->begin();
    auto self = shared_from_this();
    handle_ = client_.watch(
        path, [self](std::string_view line) { self->on_line(line); },
        [self](const WatchEnd& e) {
          self->on_watch_end(e);
          self->inflight_->end();
        },
        wo);
  }
}

void Informer::cancel_watch() {
  cg::MutexLock lk(mu_);
  if (handle_) handle_->cancel();
}

void Informer::on_line(std::string_view line) {
  WatchEvent ev = decode_watch_event(line);
  if (ev.gone || !ev.error.empty()) {  // 410 Gone relists; any other ERROR or bad line resumes after a backoff
    if (ev.gone) {
      outcome_ = WatchOutcome::Gone;
    } else if (outcome_ != WatchOutcome::Gone) {
      outcome_ = WatchOutcome::Error;
      watch_error_ = std::move(ev.error);
    }
    return cancel_watch();
  }
  ++events_;
  std::function<void(EventType, const json&)> on_event;
  {
    cg::MutexLock lk(mu_);
    if (stopped_) return;
    if (!ev.resource_version.empty()) rv_ = ev.resource_version;
    on_event = callbacks_.on_event;
  }
  if (ev.type == "BOOKMARK") return;
  const auto type = event_type(ev.type);
  if (!type) {
    log::debug("kubernetes watch event of unknown type ignored", {{"resource", name_}, {"type", ev.type}});
    return;
  }
  fill_type(ev.object);
  if (on_event) on_event(*type, ev.object);
}

void Informer::on_watch_end(const WatchEnd& e) {
  {
    cg::MutexLock lk(mu_);
    handle_.reset();
    if (stopped_) return;
    if (events_ > 0) backoff_ = opts_.backoff_initial;  // the watch worked: start over from the shortest delay
  }
  if (outcome_ == WatchOutcome::Gone || e.status == 410) {
    notify(InformerSignal::RelistGone);
    log::info("kubernetes watch expired (410 Gone); relisting", {{"resource", name_}});
    return list();
  }
  if (outcome_ == WatchOutcome::Error) {
    notify(InformerSignal::WatchError);
    log::warn("kubernetes watch failed; will resume", {{"resource", name_}, {"reason", watch_error_}});
    return retry_later(false, std::nullopt);
  }
  if (e.reason == WatchEndReason::Idle) {
    // Open but silent past timeoutSeconds + margin: the server (or a proxy) is hung. The client closed
    // the connection; resume at once from the last resourceVersion (changes since are replayed).
    notify(InformerSignal::WatchIdle);
    std::string rv;
    {
      cg::MutexLock lk(mu_);
      rv = rv_;
    }
    log::warn("kubernetes watch silent past its timeout; restarting it from the last resourceVersion",
              {{"resource", name_}, {"resourceVersion", rv}, {"reason", e.error}});
    return watch();
  }
  if (e.status != 200) {
    notify(InformerSignal::WatchError);
    log::warn("kubernetes watch refused; will retry",
              {{"resource", name_}, {"status", e.status}, {"reason", status_message(e.status, e.body, e.error)}});
    return retry_later(false, e.retry_after);
  }
  if (!e.error.empty()) {
    notify(InformerSignal::WatchError);
    log::warn("kubernetes watch interrupted; will resume", {{"resource", name_}, {"reason", e.error}});
    return retry_later(false, std::nullopt);
  }
  // Cancelled, not by us (that sets outcome_) nor stop(): the client was shut down.
  if (e.reason == WatchEndReason::Cancelled) return;
  // A clean end (timeoutSeconds or the server closed the stream): resume at once, unless it ended
  // immediately without a single event, which must not turn into a tight loop.
  if (events_ == 0 && steady::now() - watch_started_ < std::chrono::seconds(1)) return retry_later(false, std::nullopt);
  watch();
}

void Informer::retry_later(bool relist, std::optional<std::chrono::seconds> retry_after) {
  notify(InformerSignal::Backoff);
  cg::MutexLock lk(mu_);
  if (stopped_) return;
  auto delay = std::chrono::duration_cast<steady::duration>(backoff_ * jitter());
  backoff_ = std::min<steady::duration>(backoff_ * 2, opts_.backoff_max);
  if (retry_after && *retry_after > delay) delay = std::min<steady::duration>(*retry_after, opts_.backoff_max);
  if (rv_.empty()) relist = true;
  timer_->t.expires_after(delay);
  inflight_->begin();
  timer_->t.async_wait([self = shared_from_this(), relist](boost::system::error_code ec) {
    if (!ec && !self->stopped()) {
      if (relist) self->list();
      else self->watch();
    }
    self->inflight_->end();
  });
}

}  // namespace cg::kube
