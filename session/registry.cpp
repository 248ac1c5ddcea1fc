#include "session/registry.hpp"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "common/log.hpp"
#include "common/thread_annotations.hpp"

namespace cg::session {

namespace {
template <class T>
void take_min(std::optional<T>& a, const std::optional<T>& b) {
  if (b && (!a || *b < *a)) a = b;
}
template <class T>
void take_max(std::optional<T>& a, const std::optional<T>& b) {
  if (b && (!a || *b > *a)) a = b;
}
}  // namespace

std::string_view to_string(CloseCause c) {
  switch (c) {
    case CloseCause::agent_closed: return "agent_closed";
    case CloseCause::connection_lost: return "connection_lost";
    case CloseCause::heartbeat_timeout: return "heartbeat_timeout";
    case CloseCause::revoked: return "revoked";
    case CloseCause::certificate_expired: return "certificate_expired";
    case CloseCause::shutdown: return "shutdown";
    case CloseCause::message_too_big: return "message_too_big";
    case CloseCause::write_failed: return "write_failed";
    case CloseCause::gateway_closed: return "gateway_closed";
  }
  return "unknown";
}

std::string_view metric_label(CloseCause c) {
  switch (c) {
    case CloseCause::revoked:
    case CloseCause::certificate_expired:
    case CloseCause::shutdown:
    case CloseCause::gateway_closed: return "gateway_closed";
    default: return to_string(c);
  }
}

SessionReport& SessionReport::operator+=(const SessionReport& o) {
  connected_agents += o.connected_agents;
  take_max(last_seen, o.last_seen);
  take_min(earliest_connected, o.earliest_connected);
  take_max(last_rise, o.last_rise);
  take_max(last_zero, o.last_zero);
  take_max(moving_until, o.moving_until);
  return *this;
}

std::set<std::pair<std::string, std::string>> SessionRegistry::planes() const {
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& s : all()) out.insert({s.handle->plane_type(), s.handle->plane_id()});
  return out;
}

namespace {

class LocalRegistry final : public SessionRegistry {
 public:
  bool add(std::shared_ptr<AgentHandle> h, std::set<std::string> authorized) override {
    RegistryEvent ev{
        RegistryEvent::Type::connected, h->plane_type(), h->plane_id(), h->connection_id(), authorized, std::nullopt};
    size_t plane_count, total;
    {
      cg::MutexLock lk(mu_);
      if (admission_closed_) return false;
      auto now = std::chrono::system_clock::now();
      Entry e{h, authorized};
      for (const auto& k : authorized) join(*h, k, now);
      sessions_[h->serial()] = std::move(e);
      by_plane_[plane_key(h->plane_type(), h->plane_id())].insert(h->serial());
      ++live_;
      plane_count = count_plane(h->plane_type(), h->plane_id());
      total = live_;
    }
    log::info("agent registered", {{"planeType", h->plane_type()},
                                   {"planeID", h->plane_id()},
                                   {"connectionID", h->connection_id()},
                                   {"connectionsForPlane", plane_count},
                                   {"totalConnections", total}});
    notify(ev);
    return true;
  }

  void close_admission() override {
    cg::MutexLock lk(mu_);
    admission_closed_ = true;
  }

  bool begin_close(const AgentHandle& h, CloseCause cause) override {
    RegistryEvent ev{RegistryEvent::Type::disconnected, h.plane_type(), h.plane_id(), h.connection_id(), {}, cause};
    size_t plane_count, total;
    {
      cg::MutexLock lk(mu_);
      auto it = sessions_.find(h.serial());
      if (it == sessions_.end() || it->second.state != EntryState::live) return false;
      ev.crs = it->second.authorized;
      leave_locked(h, it->second);
      plane_count = count_plane(h.plane_type(), h.plane_id());
      total = live_;
    }
    log::info("agent unregistered", {{"planeType", h.plane_type()},
                                     {"planeID", h.plane_id()},
                                     {"connectionID", h.connection_id()},
                                     {"cause", std::string(to_string(cause))},
                                     {"connectionsForPlane", plane_count},
                                     {"totalConnections", total}});
    notify(ev);
    return true;
  }

  bool remove(const AgentHandle& h) override {
    {
      cg::MutexLock lk(mu_);
      auto it = sessions_.find(h.serial());
      if (it == sessions_.end()) return false;
      if (it->second.state == EntryState::closing) {
        sessions_.erase(it);
        return true;
      }
    }
    // Never told it was closing (a caller other than the session layer): leave now, then forget.
    begin_close(h, CloseCause::connection_lost);
    cg::MutexLock lk(mu_);
    return sessions_.erase(h.serial()) > 0;
  }

  std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h,
                                                                         std::set<std::string> authorized) override {
    std::set<std::string> granted, revoked;
    {
      cg::MutexLock lk(mu_);
      auto it = sessions_.find(h.serial());
      if (it == sessions_.end() || it->second.state != EntryState::live) return {};
      auto now = std::chrono::system_clock::now();
      for (const auto& k : authorized)
        if (!it->second.authorized.count(k)) granted.insert(k);
      for (const auto& k : it->second.authorized)
        if (!authorized.count(k)) revoked.insert(k);
      for (const auto& k : granted) join(h, k, now);
      for (const auto& k : revoked) leave(h, k, now);
      it->second.authorized = std::move(authorized);
    }
    if (!granted.empty() || !revoked.empty()) {
      std::set<std::string> crs = granted;
      crs.insert(revoked.begin(), revoked.end());
      notify({RegistryEvent::Type::authorization_changed, h.plane_type(), h.plane_id(), h.connection_id(), crs, std::nullopt});
    }
    return {granted, revoked};
  }

  std::vector<SessionView> sessions_of(const std::string& t, const std::string& id) const override {
    cg::MutexLock lk(mu_);
    std::vector<SessionView> out;
    for_plane(t, id, [&](const Entry& e) { out.push_back({e.handle, e.authorized}); });
    return out;
  }

  size_t plane_session_count(const std::string& t, const std::string& id) const override {
    cg::MutexLock lk(mu_);
    return count_plane(t, id);
  }

  std::vector<SessionView> all() const override {
    cg::MutexLock lk(mu_);
    std::vector<SessionView> out;
    for (const auto& [_, e] : sessions_)
      if (e.state == EntryState::live) out.push_back({e.handle, e.authorized});
    return out;
  }

  size_t size() const override {
    cg::MutexLock lk(mu_);
    return sessions_.size();
  }

  SessionReport report(const std::string& t, const std::string& cr_key) const override {
    cg::MutexLock lk(mu_);
    SessionReport r;
    auto it = tracks_.find(track_key(t, cr_key));
    if (it == tracks_.end()) return r;
    const Track& tr = it->second;
    r.last_rise = tr.last_rise;
    r.last_zero = tr.last_zero;
    r.connected_agents = static_cast<int>(tr.members.size());
    if (!tr.members.empty()) {
      r.last_seen = tr.last_seen;
      r.earliest_connected = *tr.connected.begin();
    }
    return r;
  }

  void heard(const AgentHandle& h, SysTime at) override {
    cg::MutexLock lk(mu_);
    auto it = sessions_.find(h.serial());
    if (it == sessions_.end() || it->second.state != EntryState::live) return;
    for (const auto& k : it->second.authorized)
      if (auto tr = tracks_.find(track_key(h.plane_type(), k)); tr != tracks_.end())
        take_max(tr->second.last_seen, std::optional(at));
  }

  SessionReport plane_report(const std::string& t, const std::string& id) const override {
    cg::MutexLock lk(mu_);
    SessionReport r;
    for_plane(t, id, [&](const Entry& e) { add_session(r, *e.handle); });
    return r;
  }

  std::shared_ptr<AgentHandle> pick(const std::string& t, const std::string& id, const std::string& cr_key, PickMiss& miss,
                                    std::string_view capability) override {
    cg::MutexLock lk(mu_);
    miss = PickMiss::no_agent;
    if (admission_closed_) return nullptr;  // draining: in-flight requests finish, no new ones start
    std::vector<const Entry*> candidates;
    // The most telling reason seen so far (PickMiss lists them most telling first).
    auto saw = [&miss](PickMiss m) { miss = std::min(miss, m); };
    for_plane(t, id, [&](const Entry& e) {
      if (e.handle->closing() || e.authorized.empty()) return;  // on its way out: counts for nothing
      saw(PickMiss::not_authorized);
      if (!e.authorized.count(cr_key)) return;
      if (!capability.empty() && !e.handle->has_capability(capability)) return saw(PickMiss::not_capable);
      if (e.handle->draining()) return saw(PickMiss::moving);  // got GOAWAY: never picked for a new request
      candidates.push_back(&e);
    });
    if (candidates.empty()) return nullptr;
    miss = PickMiss::none;
    auto& counter = rr_[track_key(t, cr_key)];
    return candidates[counter++ % candidates.size()]->handle;
  }

  void subscribe(Listener l) override {
    cg::MutexLock lk(listeners_mu_);
    listeners_.push_back(std::move(l));
  }

 private:
  // A registered session is live until it starts closing; a closing one is only waiting for its
  // socket to close (remove()), and is in neither the plane index, the tracks nor the reports.
  enum class EntryState { live, closing };
  struct Entry {
    std::shared_ptr<AgentHandle> handle;
    std::set<std::string> authorized;
    EntryState state = EntryState::live;
  };
  // One CR's sessions, kept incrementally (report() is O(1)).
  struct Track {
    std::set<uint64_t> members;
    std::multiset<SysTime> connected;  // the members' connected_at()
    std::optional<SysTime> last_seen;  // latest frame heard from a member while it was one
    std::optional<SysTime> last_rise, last_zero;
  };

  static std::string track_key(const std::string& t, const std::string& k) { return t + "\n" + k; }

  static void add_session(SessionReport& r, const AgentHandle& h) {
    ++r.connected_agents;
    SessionReport one;
    one.last_seen = h.last_seen();
    one.earliest_connected = h.connected_at();
    take_max(r.last_seen, one.last_seen);
    take_min(r.earliest_connected, one.earliest_connected);
  }

  // live → closing: out of the tracks (last_zero) and the plane index. Under mu_.
  void leave_locked(const AgentHandle& h, Entry& e) CG_REQUIRES(mu_) {
    auto now = std::chrono::system_clock::now();
    for (const auto& k : e.authorized) leave(h, k, now);
    e.state = EntryState::closing;
    --live_;
    if (auto bp = by_plane_.find(plane_key(h.plane_type(), h.plane_id())); bp != by_plane_.end()) {
      bp->second.erase(h.serial());
      if (bp->second.empty()) by_plane_.erase(bp);
    }
  }
  void join(const AgentHandle& h, const std::string& k, SysTime now) CG_REQUIRES(mu_) {
    auto& tr = tracks_[track_key(h.plane_type(), k)];
    if (!tr.members.insert(h.serial()).second) return;
    if (tr.members.size() == 1) tr.last_rise = now;
    tr.connected.insert(h.connected_at());
    take_max(tr.last_seen, std::optional(h.last_seen()));
  }
  void leave(const AgentHandle& h, const std::string& k, SysTime now) CG_REQUIRES(mu_) {
    auto it = tracks_.find(track_key(h.plane_type(), k));
    if (it == tracks_.end()) return;
    Track& tr = it->second;
    if (!tr.members.erase(h.serial())) return;
    if (auto c = tr.connected.find(h.connected_at()); c != tr.connected.end()) tr.connected.erase(c);
    take_max(tr.last_seen, std::optional(h.last_seen()));  // its last frame was heard while it was a member
    if (tr.members.empty()) {
      tr.last_zero = now;
      rr_.erase(it->first);  // the track's key is the round-robin key
    }
  }
  size_t count_plane(const std::string& t, const std::string& id) const CG_REQUIRES(mu_) {
    auto it = by_plane_.find(plane_key(t, id));
    return it == by_plane_.end() ? 0 : it->second.size();
  }
  static std::string plane_key(const std::string& t, const std::string& id) { return t + "\n" + id; }
  // Visits the plane's sessions in serial order (the order round-robin relies on). Under mu_.
  template <class F>
  void for_plane(const std::string& t, const std::string& id, F&& f) const CG_REQUIRES(mu_) {
    auto it = by_plane_.find(plane_key(t, id));
    if (it == by_plane_.end()) return;
    for (uint64_t serial : it->second)
      if (auto s = sessions_.find(serial); s != sessions_.end()) f(s->second);
  }
  void notify(const RegistryEvent& ev) CG_EXCLUDES(mu_, listeners_mu_) {
    std::vector<Listener> ls;
    {
      cg::MutexLock lk(listeners_mu_);
      ls = listeners_;
    }
    for (const auto& l : ls) l(ev);
  }

  // Callers may hold StatusWriter::mu_ (report(): order StatusWriter::mu_ → mu_); nothing is
  // called with mu_ or listeners_mu_ held, and the two are never held together.
  mutable cg::Mutex mu_;
  bool admission_closed_ CG_GUARDED_BY(mu_) = false;
  std::map<uint64_t, Entry> sessions_ CG_GUARDED_BY(mu_);  // live and closing
  size_t live_ CG_GUARDED_BY(mu_) = 0;
  std::unordered_map<std::string, std::set<uint64_t>> by_plane_ CG_GUARDED_BY(mu_);  // "type\nid" → serials
  std::map<std::string, Track> tracks_ CG_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> rr_ CG_GUARDED_BY(mu_);
  cg::Mutex listeners_mu_;
  std::vector<Listener> listeners_ CG_GUARDED_BY(listeners_mu_);
};
}  // namespace

std::unique_ptr<SessionRegistry> make_local_registry() { return std::make_unique<LocalRegistry>(); }

}  // namespace cg::session
