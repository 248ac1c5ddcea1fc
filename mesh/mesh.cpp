#include "mesh/mesh.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/control_timer.hpp"
#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/thread_annotations.hpp"
#include "kube/client.hpp"
#include "kube/config.hpp"

namespace cg::mesh {

std::vector<PeerAddress> parse_peers(const std::string& list) {
  std::vector<PeerAddress> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? list.size() + 1 : comma + 1;
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    PeerAddress p;
    std::string port;
    if (item.front() == '[') {
      auto close = item.find(']');
      if (close == std::string::npos || close + 1 >= item.size() || item[close + 1] != ':')
        throw std::invalid_argument("peer " + item + " is not [address]:port");
      p.host = item.substr(1, close - 1);
      port = item.substr(close + 2);
    } else {
      auto colon = item.rfind(':');
      if (colon == std::string::npos || colon == 0 || item.find(':') != colon)
        throw std::invalid_argument("peer " + item + " is not host:port");
      p.host = item.substr(0, colon);
      port = item.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
        std::stoi(port) > 65535)
      throw std::invalid_argument("peer " + item + " has no port number (1 to 65535)");
    p.port = static_cast<uint16_t>(std::stoi(port));
    out.push_back(std::move(p));
  }
  return out;
}

namespace {
using steady = std::chrono::steady_clock;
using Key = std::pair<std::string, std::string>;

bool same(const session::SessionReport& a, const session::SessionReport& b) {
  return a.connected_agents == b.connected_agents && a.last_seen == b.last_seen && a.earliest_connected == b.earliest_connected &&
         a.last_rise == b.last_rise && a.last_zero == b.last_zero && a.moving_until == b.moving_until;
}

// A session the rebalancer will send GOAWAY to.
struct Shed {
  std::weak_ptr<session::AgentHandle> handle;
  std::string plane_type, plane_id;
  std::set<std::string> crs;
};

// Changes not yet sent to one peer (the last word on each session and report wins).
struct Pending {
  std::map<std::string, std::optional<SessionEntry>> sessions;  // nullopt: down
  std::map<std::pair<ReportScope, Key>, session::SessionReport> reports;
  bool draining_changed = false;
  bool empty() const { return sessions.empty() && reports.empty() && !draining_changed; }
  void merge(const Pending& o) {
    for (const auto& [k, v] : o.sessions) sessions[k] = v;
    for (const auto& [k, v] : o.reports) reports[k] = v;
    draining_changed = draining_changed || o.draining_changed;
  }
};

enum class LinkState : uint8_t { connecting, up, down };
// Startup sync of a replica (Impl::warmup): waiting for the peers' directories, then synced for good.
enum class Warmup : uint8_t { waiting, synced };

struct Peer {
  PeerAddress addr;
  // Under Impl::mu (replaced when the mesh certificate is reloaded); every request holds a copy, so a
  // replaced client ends when its last request has been answered.
  std::shared_ptr<kube::KubeClient> client;
  uint64_t client_gen = 0;  // Impl::creds_gen the client was made with; under Impl::mu
  std::string replica;  // from its answers (or Kubernetes); under Impl::mu
  LinkState state = LinkState::connecting;
  bool in_flight = false;
  bool need_snapshot = true;
  std::atomic<bool> removed{false};
  uint64_t seq = 0;  // the last update it applied
  std::string instance;  // the process that answered last (a restart under the same name changes it)
  Pending pending;
  steady::time_point last_sent{};
  steady::time_point retry_at{};
  std::shared_ptr<std::atomic<int>> forwarding = std::make_shared<std::atomic<int>>(0);
};
}  // namespace

struct Mesh::Impl : std::enable_shared_from_this<Impl> {
  Impl(boost::asio::io_context& io, const boost::asio::any_io_executor& control, session::SessionRegistry& l, MeshOptions o)
      : ioc(io),
        local(l),
        opts(std::move(o)),
        instance(random_hex(8)),
        summing(
            local, dir,
            [this](ReportScope scope, const std::string& type, const std::string& key) { return moving_until(scope, type, key); },
            opts.shed_close_after + opts.move_grace),
        timer(control) {}

  boost::asio::io_context& ioc;
  session::SessionRegistry& local;
  const MeshOptions opts;
  const std::string instance;
  Directory dir;
  SummingRegistry summing;
  ControlTimer timer;
  steady::time_point started = steady::now();

  mutable cg::Mutex mu;  // guards what is below; never held while calling the registry, the directory or a client
  std::vector<std::shared_ptr<Peer>> peers CG_GUARDED_BY(mu);
  // set_peers() was called once: the static list, or Kubernetes' first list of the Service's
  // EndpointSlices (until then no peer is known, so "heard from every peer" would be vacuous).
  bool peers_known CG_GUARDED_BY(mu) = false;
  std::map<std::string, Key> ev_up CG_GUARDED_BY(mu);  // connection id → plane
  std::set<std::string> ev_down CG_GUARDED_BY(mu);
  std::set<Key> dirty_crs CG_GUARDED_BY(mu), dirty_planes CG_GUARDED_BY(mu);
  std::set<Key> known_crs CG_GUARDED_BY(mu), known_planes CG_GUARDED_BY(mu);
  bool draining CG_GUARDED_BY(mu) = false;
  bool draining_sent CG_GUARDED_BY(mu) = false;
  bool leading CG_GUARDED_BY(mu) = false;
  bool lease_leading CG_GUARDED_BY(mu) = false;
  bool stopping CG_GUARDED_BY(mu) = false;
  // Startup sync, one way: a replica that just started writes status and reports ready only once it
  // has every peer's directory (or one lease duration has passed). Once synced it stays synced: a peer
  // that later leaves or restarts is in transit, not unknown (its agents are held as moving), and
  // turning every other replica not ready or silent meanwhile would be an outage.
  Warmup warmup CG_GUARDED_BY(mu) = Warmup::waiting;
  std::optional<std::set<std::string>> alive CG_GUARDED_BY(mu);
  std::map<std::pair<ReportScope, Key>, SysTime> moving CG_GUARDED_BY(mu);  // this replica's agents on their way elsewhere

  std::optional<SysTime> moving_until(ReportScope scope, const std::string& type, const std::string& key) const {
    cg::MutexLock lk(mu);
    auto it = moving.find({scope, {type, key}});
    if (it == moving.end() || it->second <= std::chrono::system_clock::now()) return std::nullopt;
    return it->second;
  }
  void mark_moving(const std::string& type, const std::string& plane_id, const std::set<std::string>& crs, SysTime until) {
    cg::MutexLock lk(mu);
    auto put = [&](ReportScope scope, const Key& k) CG_REQUIRES(mu) {
      auto& slot = moving[{scope, k}];
      slot = std::max(slot, until);
    };
    for (const auto& c : crs) {
      put(ReportScope::cr, {type, c});
      dirty_crs.insert({type, c});
      known_crs.insert({type, c});
    }
    put(ReportScope::plane, {type, plane_id});
    dirty_planes.insert({type, plane_id});
    known_planes.insert({type, plane_id});
    const auto now = std::chrono::system_clock::now();
    for (auto it = moving.begin(); it != moving.end();) it = it->second <= now ? moving.erase(it) : std::next(it);
  }
  session::SessionReport local_report(ReportScope scope, const Key& k) const {
    auto r = scope == ReportScope::cr ? local.report(k.first, k.second) : local.plane_report(k.first, k.second);
    r.moving_until = moving_until(scope, k.first, k.second);
    return r;
  }
  std::function<void(bool)> on_leader;  // set before start()
  // The mesh CA, this replica's certificate and key (opts' at start; replaced by set_credentials),
  // and the client TLS context made from them (client_tls(); made on first use).
  Credentials creds CG_GUARDED_BY(mu){opts.ca_pem, opts.cert_pem, opts.key_pem};
  std::shared_ptr<boost::asio::ssl::context> tls CG_GUARDED_BY(mu);
  uint64_t creds_gen CG_GUARDED_BY(mu) = 0;  // +1 per set_credentials

  std::shared_ptr<kube::KubeClient> client_of(const Peer& p) const CG_EXCLUDES(mu) {
    cg::MutexLock lk(mu);
    return p.client;
  }

  // Touched on the control strand only.
  std::map<std::pair<ReportScope, Key>, session::SessionReport> last_reports;
  steady::time_point last_report_scan{};
  steady::time_point last_rebalance = steady::now();
  std::deque<Shed> shed_queue;  // GOAWAY next, one per tick
  std::deque<std::pair<std::weak_ptr<session::AgentHandle>, steady::time_point>> shed_waiting;  // close if still open

  bool synced_now() {
    {
      cg::MutexLock lk(mu);
      if (warmup == Warmup::synced) return true;  // the common case: no copy of the directory's replicas
    }
    auto known = dir.replicas();
    cg::MutexLock lk(mu);
    if (steady::now() - started < opts.lease_duration) {
      if (!peers_known || peers.size() < opts.expected_peers) return false;
      for (const auto& p : peers)
        if (!p->removed && (p->replica.empty() || !known.count(p->replica))) return false;
    }
    warmup = Warmup::synced;
    return true;
  }

  // The rebalancer (MeshOptions::rebalance_margin), on the tick.
  void rebalance(steady::time_point now) {
    if (!shed_queue.empty()) {
      Shed s = std::move(shed_queue.front());
      shed_queue.pop_front();
      if (auto h = s.handle.lock(); h && !h->closing()) {
        static const auto goaway = std::make_shared<const std::string>(R"({"type":"goaway","reason":"rebalancing"})");
        mark_moving(s.plane_type, s.plane_id, s.crs,
                    std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(opts.shed_close_after + opts.move_grace));
        h->set_draining();  // never picked again, here or (with the next update) at the peers
        {
          cg::MutexLock lk(mu);
          ev_up[h->connection_id()] = {h->plane_type(), h->plane_id()};
        }
        h->send_text(goaway);
        shed_waiting.emplace_back(h, now + opts.shed_close_after);
      }
    }
    while (!shed_waiting.empty() && shed_waiting.front().second <= now) {
      if (auto h = shed_waiting.front().first.lock(); h && !h->closing())
        h->close(1001, "gateway rebalancing", session::CloseCause::gateway_closed);
      shed_waiting.pop_front();
    }
    if (opts.rebalance_margin < 0 || now - last_rebalance < opts.lease_duration || !shed_queue.empty() || !shed_waiting.empty())
      return;
    last_rebalance = now;
    {
      cg::MutexLock lk(mu);
      if (draining) return;
    }
    // Not while a peer drains: its agents are moving, and the shares are not known until they land.
    if (!synced_now() || dir.any_draining()) return;
    auto counts = dir.session_counts();
    auto mine = local.all();
    size_t total = mine.size();
    for (const auto& [_, n] : counts) total += n;
    const size_t replicas = counts.size() + 1;
    const double fair = static_cast<double>(total) / static_cast<double>(replicas);
    const auto keep = static_cast<size_t>(std::ceil(fair));
    if (replicas < 2 || static_cast<double>(mine.size()) <= fair * (1 + opts.rebalance_margin) || mine.size() <= keep) return;
    // The most recently connected go first: the long-lived sessions stay where they are.
    std::sort(mine.begin(), mine.end(),
              [](const auto& a, const auto& b) { return a.handle->connected_at() > b.handle->connected_at(); });
    const size_t shed = mine.size() - keep;
    for (size_t i = 0; i < shed; ++i)
      shed_queue.push_back({mine[i].handle, mine[i].handle->plane_type(), mine[i].handle->plane_id(), mine[i].authorized});
    log::info("rebalancing: sending GOAWAY to the agents above this replica's fair share", {{"replica", opts.replica_id},
                                                                                            {"sessions", mine.size()},
                                                                                            {"replicas", replicas},
                                                                                            {"agents", total},
                                                                                            {"fairShare", fair},
                                                                                            {"shed", shed}});
  }

  void on_local_event(const session::RegistryEvent& ev) {
    cg::MutexLock lk(mu);
    if (ev.type == session::RegistryEvent::Type::disconnected) {
      ev_up.erase(ev.connection_id);
      ev_down.insert(ev.connection_id);
    } else if (!ev.connection_id.empty()) {
      ev_down.erase(ev.connection_id);
      ev_up[ev.connection_id] = {ev.plane_type, ev.plane_id};
    }
    for (const auto& k : ev.crs) {
      dirty_crs.insert({ev.plane_type, k});
      known_crs.insert({ev.plane_type, k});
    }
    if (!ev.plane_id.empty()) {
      dirty_planes.insert({ev.plane_type, ev.plane_id});
      known_planes.insert({ev.plane_type, ev.plane_id});
    }
  }

  SessionEntry entry_of(const session::SessionView& v) const {
    SessionEntry e;
    e.connection_id = v.handle->connection_id();
    e.plane_type = v.handle->plane_type();
    e.plane_id = v.handle->plane_id();
    e.crs = v.authorized;
    e.capabilities = v.handle->capabilities();
    e.draining = v.handle->draining();
    return e;
  }

  // A client with the current credentials, and their generation.
  std::pair<std::shared_ptr<kube::KubeClient>, uint64_t> make_client(const PeerAddress& p) CG_EXCLUDES(mu) {
    Credentials c;
    uint64_t gen = 0;
    {
      cg::MutexLock lk(mu);
      c = creds;
      gen = creds_gen;
    }
    return {make_client(p, c), gen};
  }

  // Peers whose client was made with older credentials (a reload, or a peer added while one ran)
  // get a new one; requests already sent finish on the old one (each holds it), which then ends.
  void refresh_stale_clients() CG_EXCLUDES(mu) {
    for (;;) {
      std::vector<std::shared_ptr<Peer>> stale;
      Credentials c;
      uint64_t gen = 0;
      {
        cg::MutexLock lk(mu);
        if (stopping) return;
        for (const auto& p : peers)
          if (!p->removed && p->client && p->client_gen != creds_gen) stale.push_back(p);
        if (stale.empty()) return;
        c = creds;
        gen = creds_gen;
      }
      std::vector<std::pair<std::shared_ptr<Peer>, std::shared_ptr<kube::KubeClient>>> fresh;
      fresh.reserve(stale.size());
      for (const auto& p : stale) {
        try {
          fresh.emplace_back(p, make_client(p->addr, c));
        } catch (const std::exception& e) {
          log::error("mesh peer keeps its previous certificate: TLS setup failed",
                     {{"peer", p->addr.host + ":" + std::to_string(p->addr.port)}, {"reason", e.what()}});
          return;
        }
      }
      std::vector<std::shared_ptr<kube::KubeClient>> old;
      {
        cg::MutexLock lk(mu);
        for (auto& [p, client] : fresh) {
          if (p->removed || !p->client || p->client_gen >= gen) continue;
          old.push_back(std::move(p->client));
          p->client = std::move(client);
          p->client_gen = gen;
        }
      }
      // Dropped on the strand: each ends (closing its idle connections) after its last request.
      timer.post([old = std::move(old)] {});
    }
  }
  std::shared_ptr<kube::KubeClient> make_client(const PeerAddress& p, const Credentials& c) {
    kube::KubeConfig kc;
    kc.host = p.host;
    kc.port = std::to_string(p.port);
    kc.server = "https://" + kc.host_header();
    kc.tls_server_name = opts.server_name.empty() ? p.host : opts.server_name;
    kc.ca_pem = c.ca_pem;
    kc.client_cert_pem = c.cert_pem;
    kc.client_key_pem = c.key_pem;
    kc.source = "mesh peer " + kc.host_header();
    kube::ClientOptions co;
    co.qps = 0;
    co.max_connections = 256;
    co.max_idle = 32;
    co.user_agent = "cluster-gateway-mesh/" + opts.replica_id;
    return std::make_shared<kube::KubeClient>(ioc, std::move(kc), co);
  }

  // ---- the tick: publish, expire, lead --------------------------------------------------------------
  void schedule() {
    timer.run_after(opts.publish_interval, [self = shared_from_this()] { self->tick(); });
  }

  void tick() {
    const auto now = steady::now();
    const auto wall = std::chrono::system_clock::now();
    Pending g;
    std::map<std::string, Key> up;
    std::set<std::string> down;
    std::set<Key> crs, planes;
    std::vector<std::shared_ptr<Peer>> ps;
    bool drain_now = false;
    // Once a second every report known is looked at again (lastSeen moves without events).
    const bool scan = now - last_report_scan >= opts.report_scan_interval;
    if (scan) last_report_scan = now;
    {
      cg::MutexLock lk(mu);
      if (stopping) return;
      up.swap(ev_up);
      down.swap(ev_down);
      crs.swap(dirty_crs);
      planes.swap(dirty_planes);
      ps = peers;
      if (draining && !draining_sent) {
        draining_sent = true;
        drain_now = true;
      }
      if (scan) {
        crs.insert(known_crs.begin(), known_crs.end());
        planes.insert(known_planes.begin(), known_planes.end());
      }
    }
    for (const auto& id : down) g.sessions[id] = std::nullopt;
    // Sessions up (or re-authorized): their current view, found through their plane.
    std::map<Key, std::vector<session::SessionView>> by_plane;
    for (const auto& [id, plane] : up) {
      auto it = by_plane.find(plane);
      if (it == by_plane.end()) it = by_plane.emplace(plane, local.sessions_of(plane.first, plane.second)).first;
      bool found = false;
      for (const auto& v : it->second)
        if (v.handle->connection_id() == id) {
          g.sessions[id] = entry_of(v);
          found = true;
          break;
        }
      if (!found) g.sessions[id] = std::nullopt;  // already closing
    }
    auto add_report = [&](ReportScope scope, const Key& k, const session::SessionReport& r) {
      auto key = std::make_pair(scope, k);
      auto it = last_reports.find(key);
      if (it != last_reports.end() && same(it->second, r)) return;
      last_reports[key] = r;
      g.reports[key] = r;
    };
    for (const auto& k : crs) add_report(ReportScope::cr, k, local_report(ReportScope::cr, k));
    for (const auto& k : planes) add_report(ReportScope::plane, k, local_report(ReportScope::plane, k));
    g.draining_changed = drain_now;

    std::optional<Update> snapshot;
    for (const auto& p : ps) {
      if (p->removed) continue;
      p->pending.merge(g);
      if (p->in_flight || now < p->retry_at) continue;
      if (p->need_snapshot) {
        if (!snapshot) snapshot = build_snapshot();
        p->pending = Pending{};
        send(p, *snapshot);
      } else if (!p->pending.empty()) {
        Update u = base(UpdateKind::delta, p->seq + 1);
        for (auto& [id, e] : p->pending.sessions) {
          if (e) u.up.push_back(std::move(*e));
          else u.down.push_back(id);
        }
        for (auto& [k, r] : p->pending.reports) u.reports.push_back({k.first, k.second.first, k.second.second, r});
        p->pending = Pending{};
        send(p, u);
      } else if (now - p->last_sent >= opts.heartbeat_interval) {
        send(p, base(UpdateKind::heartbeat, p->seq));
      }
    }
    expire(now, wall);
    lead(now);
    rebalance(now);
    schedule();
  }

  Update base(UpdateKind kind, uint64_t seq) {
    Update u;
    u.kind = kind;
    u.replica = opts.replica_id;
    u.instance = instance;
    u.seq = seq;
    cg::MutexLock lk(mu);
    u.draining = draining;
    return u;
  }

  Update build_snapshot() {
    Update u = base(UpdateKind::snapshot, 0);
    for (const auto& v : local.all()) u.up.push_back(entry_of(v));
    // Every report last computed (sent or not): a snapshot replaces all the receiver knew.
    for (const auto& [k, r] : last_reports) u.reports.push_back({k.first, k.second.first, k.second.second, r});
    return u;
  }

  void send(const std::shared_ptr<Peer>& p, const Update& u) {
    p->in_flight = true;
    p->last_sent = steady::now();
    kube::Request req;
    req.method = "POST";
    req.path = kDirectoryPath;
    req.body = encode(u);
    req.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<Duration>(opts.lease_duration / 2, std::chrono::seconds(5)));
    const UpdateKind kind = u.kind;
    const uint64_t seq = u.seq;
    auto c = client_of(*p);
    // The callback holds the mesh weakly: an update still pending when the process stops must not
    // keep the mesh (and its control-strand timer) alive into the I/O context's destruction.
    c->request(std::move(req), [w = weak_from_this(), p, kind, seq, c](kube::Response r) mutable {
      // The client copy is released on a strand, not inside its own callback.
      if (auto self = w.lock()) {
        self->timer.post([self, p, kind, seq, r = std::move(r), c = std::move(c)] { self->sent(p, kind, seq, r); });
      } else {
        auto& io = c->io_context();
        boost::asio::post(io, [c = std::move(c)] {});
      }
    });
  }

  void sent(const std::shared_ptr<Peer>& p, UpdateKind kind, uint64_t seq, const kube::Response& r) {
    p->in_flight = false;
    if (p->removed) return;
    std::string replica, instance;
    if (r.status > 0) {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      auto name = [&j](const char* k) {
        return j.is_object() && j.contains(k) && j[k].is_string() && j[k].get_ref<const std::string&>().size() <= kMaxName
                   ? j[k].get<std::string>()
                   : std::string();
      };
      replica = name("replica");
      instance = name("instance");
    }
    // A peer that restarted under the same name (a Pod recreated, a replica restarted in place) is a
    // new link: its answers come from another instance.
    const bool restarted = r.status == 200 && !instance.empty() && !p->instance.empty() && instance != p->instance;
    if (r.status == 200 && !instance.empty()) p->instance = instance;
    {
      cg::MutexLock lk(mu);
      if (r.status == 200 && !replica.empty()) p->replica = replica;
      replica = p->replica;
    }
    if (r.status == 200) {
      p->seq = kind == UpdateKind::snapshot ? 0 : seq;
      p->need_snapshot = false;
      if (p->state != LinkState::up || restarted)
        log::info("mesh peer link up", {{"peer", p->addr.host + ":" + std::to_string(p->addr.port)},
                                        {"peerReplica", replica},
                                        {"peerInstance", p->instance},
                                        {"replica", opts.replica_id}});
      p->state = LinkState::up;
      return;
    }
    p->need_snapshot = true;
    if (r.status == 409) return;  // it lost track: a snapshot goes next tick
    p->retry_at = steady::now() + std::chrono::seconds(1);
    if (p->state != LinkState::down)
      log::warn("mesh peer link down; retrying every second", {{"peer", p->addr.host + ":" + std::to_string(p->addr.port)},
                                                               {"peerReplica", replica},
                                                               {"replica", opts.replica_id},
                                                               {"status", r.status},
                                                               {"reason", r.status ? r.message() : r.error}});
    p->state = LinkState::down;
  }

  void expire(steady::time_point now, SysTime wall) {
    std::optional<std::set<std::string>> live;
    {
      cg::MutexLock lk(mu);
      live = alive;
    }
    DirectoryChange change;
    auto dropped = dir.expire(now, opts.lease_duration, wall, change, live ? &*live : nullptr);
    for (const auto& id : dropped)
      log::warn(
          "mesh replica dropped: not heard from within the lease duration (or its Lease expired); its agents leave "
          "routing and the status sum",
          {{"peerReplica", id}, {"replica", opts.replica_id}});
    if (!change.empty()) summing.remote_changed(change);
  }

  void lead(steady::time_point now) {
    bool next;
    // Holding the writer Lease is not enough: a replica that just started writes only once it knows
    // every peer's agents (else its first writes say "disconnected" for agents held elsewhere).
    const bool synced = opts.static_leadership || synced_now();
    {
      cg::MutexLock lk(mu);
      if (!opts.static_leadership) {
        next = lease_leading && synced;
      } else {
        auto reps = dir.replicas();
        if (reps.size() >= opts.expected_peers || now - started >= opts.lease_duration) warmup = Warmup::synced;
        const bool ready = warmup == Warmup::synced;
        // A draining replica keeps writing until it stops (its last write is the truth without its
        // agents); its `bye` then hands over to the next smallest id.
        next = ready && (reps.empty() || opts.replica_id < reps.begin()->first);
      }
      if (next == leading) return;
      leading = next;
    }
    log::info(next ? "this replica writes status now" : "this replica no longer writes status",
              {{"replica", opts.replica_id}, {"election", opts.static_leadership ? "smallest live replica id" : "Lease"}});
    if (on_leader) on_leader(next);
  }
};

Mesh::Mesh(boost::asio::io_context& ioc, const boost::asio::any_io_executor& control, session::SessionRegistry& local,
           MeshOptions opts)
    : impl_(std::make_shared<Impl>(ioc, control, local, std::move(opts))) {
  if (impl_->opts.replica_id.empty()) throw std::invalid_argument("the mesh needs a replica id");
  if (impl_->opts.replica_id.size() > kMaxName) throw std::invalid_argument("replica id too long");
}
Mesh::~Mesh() { stop(steady::now()); }

const std::string& Mesh::replica_id() const { return impl_->opts.replica_id; }
session::SessionRegistry& Mesh::registry() { return impl_->summing; }
const Directory& Mesh::directory() const { return impl_->dir; }

void Mesh::start() {
  std::weak_ptr<Impl> w = impl_;
  impl_->local.subscribe([w](const session::RegistryEvent& ev) {
    if (auto self = w.lock()) self->on_local_event(ev);
  });
  // Sessions registered before the subscription (none in the gateway; tests may) are in the snapshot.
  impl_->timer.post([self = impl_] { self->tick(); });
}

void Mesh::drain(Duration window) {
  auto& m = *impl_;
  // Every agent here gets GOAWAY within `window` and is expected back at another replica.
  const auto until = std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::system_clock::duration>(window + m.opts.move_grace);
  for (const auto& s : m.local.all()) m.mark_moving(s.handle->plane_type(), s.handle->plane_id(), s.authorized, until);
  cg::MutexLock lk(m.mu);
  m.draining = true;
}

void Mesh::stop(std::chrono::steady_clock::time_point deadline) {
  auto& m = *impl_;
  std::vector<std::shared_ptr<Peer>> ps;
  {
    cg::MutexLock lk(m.mu);
    if (m.stopping) return;
    m.stopping = true;
    ps = m.peers;
  }
  m.timer.stop();
  // A `bye` to every peer that applied our updates, so that they drop this replica at once.
  struct Wait {
    cg::Mutex mu;
    std::condition_variable_any cv;  // waits on a cg::MutexLock
    int left CG_GUARDED_BY(mu) = 0;
  };
  auto wait = std::make_shared<Wait>();
  for (const auto& p : ps) {
    if (p->removed || p->state != LinkState::up) continue;
    Update u;
    u.kind = UpdateKind::bye;
    u.replica = m.opts.replica_id;
    u.instance = m.instance;
    u.seq = p->seq;
    u.draining = true;
    kube::Request req;
    req.method = "POST";
    req.path = kDirectoryPath;
    req.body = encode(u);
    req.timeout = std::chrono::milliseconds(
        std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count()));
    auto c = m.client_of(*p);
    if (!c) continue;
    {
      cg::MutexLock lk(wait->mu);
      ++wait->left;
    }
    c->request(std::move(req), [wait](const kube::Response&) {
      cg::MutexLock lk(wait->mu);
      --wait->left;
      wait->cv.notify_all();
    });
  }
  {
    cg::MutexLock lk(wait->mu);
    wait->cv.wait_until(lk, deadline, [&]() CG_REQUIRES(wait->mu) { return wait->left == 0; });
  }
  for (const auto& p : ps)
    if (auto c = m.client_of(*p)) c->shutdown();
}

void Mesh::set_peers(const std::vector<PeerAddress>& peers) {
  auto& m = *impl_;
  // Clients for new addresses are made first (outside the lock), so that a peer is never seen
  // without one.
  std::map<std::pair<std::string, uint16_t>, std::pair<std::shared_ptr<kube::KubeClient>, uint64_t>> clients;
  {
    std::set<std::pair<std::string, uint16_t>> have;
    {
      cg::MutexLock lk(m.mu);
      if (m.stopping) return;
      for (const auto& p : m.peers) have.insert({p->addr.host, p->addr.port});
    }
    for (const auto& a : peers) {
      if (have.count({a.host, a.port}) || clients.count({a.host, a.port})) continue;
      try {
        clients[{a.host, a.port}] = m.make_client(a);
      } catch (const std::exception& e) {
        log::error("mesh peer cannot be reached: TLS setup failed",
                   {{"peer", a.host + ":" + std::to_string(a.port)}, {"reason", e.what()}});
      }
    }
  }
  std::vector<std::shared_ptr<Peer>> removed;
  bool stale = false;  // a client made before a concurrent set_credentials
  std::vector<std::shared_ptr<Peer>> added;
  std::map<const Peer*, std::string> names;  // for the logs below
  {
    cg::MutexLock lk(m.mu);
    if (m.stopping) return;
    std::vector<std::shared_ptr<Peer>> next;
    for (const auto& a : peers) {
      std::shared_ptr<Peer> found;
      for (const auto& p : m.peers)
        if (p->addr.host == a.host && p->addr.port == a.port) found = p;
      for (const auto& p : next)
        if (p->addr.host == a.host && p->addr.port == a.port) found = p;
      if (found) {
        if (!a.replica.empty()) found->replica = a.replica;
        if (std::find(next.begin(), next.end(), found) == next.end()) next.push_back(found);
        continue;
      }
      auto c = clients.find({a.host, a.port});
      if (c == clients.end() || !c->second.first) continue;
      found = std::make_shared<Peer>();
      found->addr = a;
      found->replica = a.replica;
      found->client = std::move(c->second.first);
      found->client_gen = c->second.second;
      stale = stale || found->client_gen != m.creds_gen;
      added.push_back(found);
      next.push_back(found);
    }
    for (const auto& p : m.peers)
      if (std::find(next.begin(), next.end(), p) == next.end()) removed.push_back(p);
    m.peers_known = true;
    for (const auto& p : added) names[p.get()] = p->replica;
    for (const auto& p : removed) names[p.get()] = p->replica;
    m.peers = std::move(next);
  }
  for (auto& [_, c] : clients)
    if (c.first) c.first->shutdown();  // made for an address another call added meanwhile
  if (stale) m.refresh_stale_clients();
  for (const auto& p : added)
    log::info("mesh peer added", {{"peer", p->addr.host + ":" + std::to_string(p->addr.port)},
                                  {"peerReplica", names[p.get()]},
                                  {"replica", m.opts.replica_id}});
  for (const auto& p : removed) {
    // Marked on the strand (the tick reads it there); the client ends after what is in flight.
    // Requests already forwarded to it finish (each holds the client; a replica that left the
    // Service's ready endpoints is draining and still answers them); the client ends after the last.
    m.timer.post([p, w = m.weak_from_this()] {
      p->removed = true;
      auto self = w.lock();
      if (!self) return;
      std::shared_ptr<kube::KubeClient> c;
      {
        cg::MutexLock lk(self->mu);
        c = std::move(p->client);
      }
    });
    log::info("mesh peer removed", {{"peer", p->addr.host + ":" + std::to_string(p->addr.port)},
                                    {"peerReplica", names[p.get()]},
                                    {"replica", m.opts.replica_id}});
  }
}

void Mesh::set_alive(std::optional<std::set<std::string>> alive) {
  cg::MutexLock lk(impl_->mu);
  impl_->alive = std::move(alive);
}

void Mesh::set_leader(bool leading) {
  cg::MutexLock lk(impl_->mu);
  impl_->lease_leading = leading;
}

Mesh::Answer Mesh::receive(std::string_view body) {
  auto& m = *impl_;
  nlohmann::json me{{"replica", m.opts.replica_id}, {"instance", m.instance}};
  std::string error;
  auto u = decode(body, error);
  if (!u) {
    log::warn("mesh update refused: malformed", {{"replica", m.opts.replica_id}, {"reason", error}});
    me["error"] = error;
    return {400, me.dump()};
  }
  if (u->replica == m.opts.replica_id) {
    log::error("mesh update refused: a peer uses this replica's own id (two replicas with one --replica-id?)",
               {{"replica", m.opts.replica_id}, {"peerInstance", u->instance}});
    me["error"] = "replica id in use";
    return {409, me.dump()};
  }
  {
    cg::MutexLock lk(m.mu);
    if (m.alive && !m.alive->count(u->replica) && u->kind != UpdateKind::bye) {
      me["error"] = "no live Lease for replica " + u->replica;
      return {403, me.dump()};
    }
  }
  DirectoryChange change;
  auto r = m.dir.apply(*u, steady::now(), std::chrono::system_clock::now(), change);
  if (!change.empty()) m.summing.remote_changed(change);
  if (u->kind == UpdateKind::bye)
    log::info("mesh replica left (bye)", {{"peerReplica", u->replica}, {"replica", m.opts.replica_id}});
  if (r == ApplyResult::resync) {
    me["resync"] = true;
    return {409, me.dump()};
  }
  if (r == ApplyResult::departed) {
    log::info("mesh update dropped: its replica already said bye", {{"peerReplica", u->replica}, {"replica", m.opts.replica_id}});
    me["error"] = "this instance of replica " + u->replica + " already left";
    return {410, me.dump()};
  }
  return {200, me.dump()};
}

std::optional<std::string> Mesh::pick_peer(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                           std::string_view capability, const std::set<std::string>& exclude) {
  auto& m = *impl_;
  auto cands = m.dir.candidates(plane_type, plane_id, cr_key, capability);
  if (cands.empty()) return std::nullopt;
  // A replica heard from recently beats a silent one (cut link, frozen process); among them, the one
  // with the fewest forwarded requests in flight.
  std::vector<bool> heard;
  heard.reserve(cands.size());
  for (const auto& c : cands) heard.push_back(responsive(c.replica));
  cg::MutexLock lk(m.mu);
  std::optional<std::string> best;
  std::pair<bool, int> best_rank{};  // (silent, load): smaller is better
  for (size_t i = 0; i < cands.size(); ++i) {
    const auto& c = cands[i];
    if (exclude.count(c.replica)) continue;
    for (const auto& p : m.peers) {
      if (p->removed || p->replica != c.replica || !p->client) continue;
      const std::pair<bool, int> rank{!heard[i], p->forwarding->load()};
      if (!best || rank < best_rank) {
        best = c.replica;
        best_rank = rank;
      }
    }
  }
  return best;
}

void Mesh::forward(const std::string& replica, ForwardRequest req, std::function<void(ForwardReply)> done) {
  auto& m = *impl_;
  std::shared_ptr<Peer> peer;
  std::shared_ptr<kube::KubeClient> client;
  {
    cg::MutexLock lk(m.mu);
    for (const auto& p : m.peers)
      if (!p->removed && p->replica == replica && p->client) {
        peer = p;
        client = p->client;
      }
  }
  if (!peer) {
    ForwardReply r;
    r.replica = replica;
    r.error = "no link to replica " + replica;
    boost::asio::post(m.ioc, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return;
  }
  kube::Request kr;
  kr.method = req.method;
  kr.path = req.target;
  kr.body = std::move(req.body);
  kr.headers = std::move(req.headers);
  kr.headers.emplace_back(kEntryPodHeader, m.opts.replica_id);
  kr.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(req.timeout);
  peer->forwarding->fetch_add(1);
  client->request(std::move(kr),
                  [counter = peer->forwarding, replica, done = std::move(done), keep = client](kube::Response r) mutable {
                    counter->fetch_sub(1);
                    // A client replaced by a certificate reload ends with its last request; not inside its callback.
                    auto& io = keep->io_context();
                    boost::asio::post(io, [keep = std::move(keep)] {});
                    ForwardReply out;
                    out.status = r.status;
                    out.headers = std::move(r.headers);
                    out.body = std::move(r.body);
                    out.error = std::move(r.error);
                    out.replica = replica;
                    done(std::move(out));
                  });
}

std::shared_ptr<void> Mesh::count_forward(const std::string& replica) {
  auto& m = *impl_;
  std::shared_ptr<std::atomic<int>> counter;
  {
    cg::MutexLock lk(m.mu);
    for (const auto& p : m.peers)
      if (!p->removed && p->replica == replica) counter = p->forwarding;
  }
  if (!counter) return nullptr;
  struct Token {
    std::shared_ptr<std::atomic<int>> c;
    ~Token() { c->fetch_sub(1); }
  };
  counter->fetch_add(1);
  return std::make_shared<Token>(Token{std::move(counter)});
}

std::optional<Mesh::Route> Mesh::route_to(const std::string& replica) const {
  auto& m = *impl_;
  cg::MutexLock lk(m.mu);
  for (const auto& p : m.peers)
    if (!p->removed && p->replica == replica)
      return Route{p->addr.host, p->addr.port, m.opts.server_name.empty() ? p->addr.host : m.opts.server_name};
  return std::nullopt;
}

namespace {
std::shared_ptr<boost::asio::ssl::context> make_client_tls(const Credentials& c) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx->add_certificate_authority(boost::asio::buffer(c.ca_pem));
  ctx->use_certificate_chain(boost::asio::buffer(c.cert_pem));
  ctx->use_private_key(boost::asio::buffer(c.key_pem), ssl::context::pem);
  return ctx;
}
}  // namespace

std::shared_ptr<boost::asio::ssl::context> Mesh::client_tls() const {
  auto& m = *impl_;
  cg::MutexLock lk(m.mu);
  if (!m.tls) m.tls = make_client_tls(m.creds);
  return m.tls;
}

void Mesh::set_credentials(Credentials c) {
  auto& m = *impl_;
  auto ctx = make_client_tls(c);  // throws on bad material: nothing changes
  {
    cg::MutexLock lk(m.mu);
    if (m.stopping) return;
    m.creds = std::move(c);
    m.tls = ctx;
    ++m.creds_gen;
  }
  m.refresh_stale_clients();
}

bool Mesh::responsive(const std::string& replica, std::chrono::steady_clock::time_point since) const {
  auto& m = *impl_;
  auto h = m.dir.heard(replica);
  return h && steady::now() - std::max(*h, since) <= m.opts.silent_after;
}

bool Mesh::synced() const { return impl_->synced_now(); }

bool Mesh::just_started() const { return steady::now() - impl_->started < impl_->opts.shed_close_after + impl_->opts.move_grace; }

std::vector<std::string> Mesh::peer_replicas() const {
  auto& m = *impl_;
  cg::MutexLock lk(m.mu);
  std::vector<std::string> out;
  for (const auto& p : m.peers)
    if (!p->removed && !p->replica.empty()) out.push_back(p->replica);
  return out;
}

bool Mesh::leader() const {
  cg::MutexLock lk(impl_->mu);
  return impl_->leading;
}

void Mesh::on_leadership(std::function<void(bool)> fn) { impl_->on_leader = std::move(fn); }

}  // namespace cg::mesh
