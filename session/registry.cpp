#include "session/registry.hpp"

#include <map>
#include <unordered_map>
#include <mutex>

#include "common/log.hpp"

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

SessionReport& SessionReport::operator+=(const SessionReport& o) {
  connected_agents += o.connected_agents;
  take_max(last_seen, o.last_seen);
  take_min(earliest_connected, o.earliest_connected);
  take_max(last_rise, o.last_rise);
  take_max(last_zero, o.last_zero);
  return *this;
}

namespace {

class LocalRegistry final : public SessionRegistry {
 public:
  bool add(std::shared_ptr<AgentHandle> h, std::set<std::string> authorized) override {
    RegistryEvent ev{RegistryEvent::Type::connected, h->plane_type(), h->plane_id(), h->connection_id(), authorized};
    size_t plane_count, total;
    {
      std::lock_guard lk(mu_);
      if (admission_closed_) return false;
      auto now = std::chrono::system_clock::now();
      Entry e{h, authorized};
      for (const auto& k : authorized) join(h->plane_type(), k, h->serial(), now);
      sessions_[h->serial()] = std::move(e);
      by_plane_[plane_key(h->plane_type(), h->plane_id())].insert(h->serial());
      plane_count = count_plane(h->plane_type(), h->plane_id());
      total = sessions_.size();
    }
    log::info("agent registered", {{"planeType", h->plane_type()}, {"planeID", h->plane_id()},
                                   {"connectionID", h->connection_id()}, {"connectionsForPlane", plane_count},
                                   {"totalConnections", total}});
    notify(ev);
    return true;
  }

  void close_admission() override {
    std::lock_guard lk(mu_);
    admission_closed_ = true;
  }

  bool remove(const AgentHandle& h) override {
    RegistryEvent ev{RegistryEvent::Type::disconnected, h.plane_type(), h.plane_id(), h.connection_id(), {}};
    size_t plane_count, total;
    {
      std::lock_guard lk(mu_);
      auto it = sessions_.find(h.serial());
      if (it == sessions_.end()) return false;
      auto now = std::chrono::system_clock::now();
      ev.crs = it->second.authorized;
      for (const auto& k : it->second.authorized) leave(h.plane_type(), k, h.serial(), now);
      sessions_.erase(it);
      if (auto bp = by_plane_.find(plane_key(h.plane_type(), h.plane_id())); bp != by_plane_.end()) {
        bp->second.erase(h.serial());
        if (bp->second.empty()) by_plane_.erase(bp);
      }
      plane_count = count_plane(h.plane_type(), h.plane_id());
      total = sessions_.size();
    }
    log::info("agent unregistered", {{"planeType", h.plane_type()}, {"planeID", h.plane_id()},
                                     {"connectionID", h.connection_id()}, {"connectionsForPlane", plane_count},
                                     {"totalConnections", total}});
    notify(ev);
    return true;
  }

  std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h,
                                                                         std::set<std::string> authorized) override {
    std::set<std::string> granted, revoked;
    {
      std::lock_guard lk(mu_);
      auto it = sessions_.find(h.serial());
      if (it == sessions_.end()) return {};
      auto now = std::chrono::system_clock::now();
      for (const auto& k : authorized)
        if (!it->second.authorized.count(k)) granted.insert(k);
      for (const auto& k : it->second.authorized)
        if (!authorized.count(k)) revoked.insert(k);
      for (const auto& k : granted) join(h.plane_type(), k, h.serial(), now);
      for (const auto& k : revoked) leave(h.plane_type(), k, h.serial(), now);
      it->second.authorized = std::move(authorized);
    }
    if (!granted.empty() || !revoked.empty()) {
      std::set<std::string> crs = granted;
      crs.insert(revoked.begin(), revoked.end());
      notify({RegistryEvent::Type::authorization_changed, h.plane_type(), h.plane_id(), h.connection_id(), crs});
    }
    return {granted, revoked};
  }

  std::vector<SessionView> sessions_of(const std::string& t, const std::string& id) const override {
    std::lock_guard lk(mu_);
    std::vector<SessionView> out;
    for_plane(t, id, [&](const Entry& e) { out.push_back({e.handle, e.authorized}); });
    return out;
  }

  std::vector<SessionView> all() const override {
    std::lock_guard lk(mu_);
    std::vector<SessionView> out;
    for (const auto& [_, e] : sessions_) out.push_back({e.handle, e.authorized});
    return out;
  }

  size_t size() const override {
    std::lock_guard lk(mu_);
    return sessions_.size();
  }

  SessionReport report(const std::string& t, const std::string& cr_key) const override {
    std::lock_guard lk(mu_);
    SessionReport r;
    auto it = tracks_.find(track_key(t, cr_key));
    if (it == tracks_.end()) return r;
    r.last_rise = it->second.last_rise;
    r.last_zero = it->second.last_zero;
    for (uint64_t serial : it->second.members) {
      auto s = sessions_.find(serial);
      if (s == sessions_.end()) continue;
      add_session(r, *s->second.handle);
    }
    return r;
  }

  SessionReport plane_report(const std::string& t, const std::string& id) const override {
    std::lock_guard lk(mu_);
    SessionReport r;
    for_plane(t, id, [&](const Entry& e) { add_session(r, *e.handle); });
    return r;
  }

  std::shared_ptr<AgentHandle> pick(const std::string& t, const std::string& id, const std::string& cr_key,
                                    bool& plane_has_sessions, std::string_view capability,
                                    bool* authorized_exists) override {
    std::lock_guard lk(mu_);
    plane_has_sessions = false;
    if (authorized_exists) *authorized_exists = false;
    if (admission_closed_) return nullptr;  // draining: in-flight requests finish, no new ones start
    std::vector<const Entry*> candidates;
    for_plane(t, id, [&](const Entry& e) {
      plane_has_sessions = true;
      if (!e.authorized.count(cr_key) || e.handle->closing()) return;
      if (authorized_exists) *authorized_exists = true;
      if (capability.empty() || e.handle->has_capability(capability)) candidates.push_back(&e);
    });
    if (candidates.empty()) return nullptr;
    auto& counter = rr_[track_key(t, cr_key)];
    return candidates[counter++ % candidates.size()]->handle;
  }

  void subscribe(Listener l) override {
    std::lock_guard lk(listeners_mu_);
    listeners_.push_back(std::move(l));
  }

 private:
  struct Entry {
    std::shared_ptr<AgentHandle> handle;
    std::set<std::string> authorized;
  };
  struct Track {
    std::set<uint64_t> members;
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

  void join(const std::string& t, const std::string& k, uint64_t serial, SysTime now) {
    auto& tr = tracks_[track_key(t, k)];
    if (tr.members.empty()) tr.last_rise = now;
    tr.members.insert(serial);
  }
  void leave(const std::string& t, const std::string& k, uint64_t serial, SysTime now) {
    auto it = tracks_.find(track_key(t, k));
    if (it == tracks_.end()) return;
    if (it->second.members.erase(serial) && it->second.members.empty()) {
      it->second.last_zero = now;
      rr_.erase(track_key(t, k));
    }
  }
  size_t count_plane(const std::string& t, const std::string& id) const {
    auto it = by_plane_.find(plane_key(t, id));
    return it == by_plane_.end() ? 0 : it->second.size();
  }
  static std::string plane_key(const std::string& t, const std::string& id) { return t + "\n" + id; }
  // Visits the plane's sessions in serial order (the order round-robin relies on). Under mu_.
  template <class F>
  void for_plane(const std::string& t, const std::string& id, F&& f) const {
    auto it = by_plane_.find(plane_key(t, id));
    if (it == by_plane_.end()) return;
    for (uint64_t serial : it->second)
      if (auto s = sessions_.find(serial); s != sessions_.end()) f(s->second);
  }
  void notify(const RegistryEvent& ev) {
    std::vector<Listener> ls;
    {
      std::lock_guard lk(listeners_mu_);
      ls = listeners_;
    }
    for (const auto& l : ls) l(ev);
  }

  mutable std::mutex mu_;
  bool admission_closed_ = false;
  std::map<uint64_t, Entry> sessions_;
  std::unordered_map<std::string, std::set<uint64_t>> by_plane_;  // "type\nid" → serials
  std::map<std::string, Track> tracks_;
  std::map<std::string, uint64_t> rr_;
  std::mutex listeners_mu_;
  std::vector<Listener> listeners_;
};
}  // namespace

std::unique_ptr<SessionRegistry> make_local_registry() { return std::make_unique<LocalRegistry>(); }

}  // namespace cg::session
