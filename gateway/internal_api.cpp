#include "gateway/internal_api.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/no_throw.hpp"
#include "common/net.hpp"
#include "gateway/acceptor.hpp"
#include "gateway/caller_io.hpp"
#include "gateway/caller_response.hpp"
#include "gateway/exec_bridge.hpp"
#include "gateway/http_rules.hpp"
#include "gateway/internal_routes.hpp"
#include "gateway/mesh_hop.hpp"
#include "gateway/mesh_relay.hpp"
#include "gateway/plane_endpoints.hpp"
#include "gateway/proxy_rules.hpp"
#include "gateway/route_requests.hpp"
#include "gateway/stream_relay.hpp"

// One caller connection is one coroutine on its strand (as Boost.Beast's advanced_server_flex_awaitable):
// TLS handshake, then request after request until the connection closes, each written top to bottom:
// read the header → route → read the body → ask the agent (or the index) → answer. While the agent
// works, the caller watch (caller_io.*) reads the caller's side to notice a hang-up (and keeps any
// pipelined bytes for the next request); streams are relayed by StreamRelay (stream_relay.*). All
// reads and writes, with their timeouts, are CallerIo's.

namespace cg::gateway {
using namespace cg::net;

namespace {
// A notification is a small JSON object; a larger body is refused before it is parsed.
constexpr uint64_t kMaxNotifyBody = 64 * 1024;
// Several replicas: how long a request waits for an agent that is moving between replicas.
constexpr Duration kMoveWait = std::chrono::seconds(10);

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(tcp::socket s, std::shared_ptr<void> slot, std::shared_ptr<asio::ssl::context> ctx,
       std::shared_ptr<const InternalApiDeps> deps)
      : slot_(std::move(slot)),
        deps_(std::move(deps)),
        io_(std::move(s), std::move(ctx),
            {deps_->idle_timeout, deps_->read_timeout, deps_->write_timeout, deps_->handshake_timeout}),
        wake_(io_.executor()),
        hop_(io_.executor(), deps_->hop_links) {
    deps_->active->fetch_add(1);  // from the accept to its first answer: a shutdown waits for it
  }
  ~Conn() {
    if (counted_) deps_->active->fetch_sub(1);
  }

  void start() {
    if (deps_->mesh) io_.set_answer_headers(deps_->replica_id, deps_->replica_id);
    else if (deps_->mesh_receive) io_.set_answer_headers("", deps_->replica_id);
    spawn(run());
  }

 private:
  // Runs `a` on the connection's strand. An exception ends this connection only (logged, counted).
  void spawn(awaitable<void> a) {
    asio::co_spawn(io_.executor(), std::move(a), [self = shared_from_this()](const std::exception_ptr& e) {
      if (!e) return;
      const std::string why = exception_text(e);
      metrics::handler_exception("internal_api");
      log::error("internal API connection failed; closed", {{"remote", self->io_.remote()}, {"reason", why}});
      if (self->io_.owns_stream()) self->io_.close_now();
    });
  }
  CallerWatch::Spawn spawner() {
    return [self = shared_from_this()](awaitable<void> a) { self->spawn(std::move(a)); };
  }

  awaitable<void> run() {
    auto self = shared_from_this();
    if (!co_await io_.handshake()) co_return;
    Next next = Next::keep_alive;
    while (next == Next::keep_alive) next = co_await serve_one();
    if (next == Next::drain_close) co_await io_.drain_and_close();
    else if (next == Next::close) io_.close_now();
  }

  // ---- one request -----------------------------------------------------------------------------
  awaitable<Next> serve_one() {
    if (auto answered = co_await io_.read_header()) co_return *answered;
    resent_ = false;
    // Counted while it is served (a stream handed to a relay or bridge is not): shutdown waits for it.
    if (!counted_) deps_->active->fetch_add(1);
    counted_ = true;
    struct Done {
      Conn& c;
      ~Done() {
        c.deps_->active->fetch_sub(1);
        c.counted_ = false;
      }
    } done{*this};
    auto& req = io_.request();
    method_ = std::string(req.method_string());
    if (deps_->mesh_receive) {
      if (req.target().substr(0, req.target().find('?')) == mesh::kDirectoryPath) co_return co_await mesh_update();
      // A forwarded request: its answer names the replica the caller reached, and this one.
      auto entry = req[mesh::kEntryPodHeader];
      io_.set_answer_headers(entry.size() <= mesh::kMaxName ? std::string(entry) : std::string(), deps_->replica_id);
      if (deps_->draining && deps_->draining()) {
        // Shutting down: no new request starts on this replica's agents (they got GOAWAY); the entry
        // replica sends it elsewhere.
        auto res = make_text_error(503, "replica " + deps_->replica_id + " is draining");
        res->set(mesh::kDrainingHeader, "true");
        co_return co_await io_.write(res, false);
      }
    }
    auto routed = route_internal(method_, req.target());
    path_ = std::move(routed.path);
    query_ = std::move(routed.query);
    co_return co_await std::visit([this](auto& r) { return serve(r); }, routed.route);
  }

  awaitable<Next> serve(RouteError& e) {
    if (e.malformed_target) co_return co_await io_.reject(400, RequestFault::target, e.message);
    auto res = make_text_error(e.status, e.message);
    if (!e.allow.empty()) res->set(http::field::allow, e.allow);
    if (e.websocket_version) res->set(http::field::sec_websocket_version, "13");
    // A 404 leaves the connection usable (the body, if any, is small and read by now or never sent).
    co_return co_await io_.write(res, e.status == 404);
  }
  // /api/v1/planes (gateway/plane_endpoints.*)
  awaitable<Next> serve(NotifyRoute&) {
    if (auto answered = co_await io_.read_body(kMaxNotifyBody)) co_return *answered;
    auto a = notify_plane(deps_->index, deps_->registry, io_.request().body());
    if (a.status == 200) co_await everywhere(a);
    co_return co_await plane_answer(std::move(a));
  }
  awaitable<Next> serve(AllStatusRoute&) { return plane_answer(all_planes_status(deps_->registry)); }
  awaitable<Next> serve(PlaneStatusRoute& r) { return plane_answer(plane_status(deps_->registry, r)); }
  awaitable<Next> serve(ReconnectRoute& r) {
    auto a = reconnect_plane(deps_->registry, r);
    if (a.status == 200) co_await everywhere(a);
    co_return co_await plane_answer(std::move(a));
  }

  // Several replicas: notify and reconnect act on every replica. The entry replica sends the same
  // request to each peer's mesh listener (which acts on its own sessions only) and adds their counts
  // to its answer; a peer that does not answer is logged and left out.
  awaitable<void> everywhere(PlaneAnswer& a) {
    if (!deps_->mesh) co_return;
    auto peers = deps_->mesh->peer_replicas();
    if (peers.empty()) co_return;
    auto& req = io_.request();
    struct Pending {
      size_t left = 0;
      std::vector<mesh::ForwardReply> replies;
    };
    auto pending = std::make_shared<Pending>();
    pending->left = peers.size();
    for (const auto& replica : peers) {
      mesh::ForwardRequest fr;
      fr.method = method_;
      fr.target = std::string(req.target());
      fr.body = req.body();
      fr.headers.emplace_back("Content-Type", "application/json");
      fr.timeout = deps_->request_timeout;
      deps_->mesh->forward(replica, std::move(fr),
                           [self = shared_from_this(), ex = io_.executor(), pending](mesh::ForwardReply r) {
                             asio::post(ex, [self, pending, r = std::move(r)]() mutable {
                               pending->replies.push_back(std::move(r));
                               if (--pending->left == 0) self->wake_.notify();
                             });
                           });
    }
    while (pending->left > 0) co_await wake_.wait();
    for (const auto& r : pending->replies) {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      if (r.status != 200 || !j.is_object()) {
        log::warn("plane request not applied at a replica",
                  {{"replica", r.replica}, {"status", r.status}, {"reason", r.status ? r.body.substr(0, 200) : r.error}});
        continue;
      }
      for (const char* k : {"disconnectedAgents", "authorizationsGranted", "authorizationsRevoked"})
        if (a.json.contains(k) && a.json[k].is_number_unsigned() && j.contains(k) && j[k].is_number_unsigned())
          a.json[k] = a.json[k].get<uint64_t>() + j[k].get<uint64_t>();
    }
  }
  awaitable<Next> serve(ProxyRoute&) { return proxy(); }
  awaitable<Next> serve(ExecRoute& r) { return exec(r); }
  awaitable<Next> serve(WirelogsRoute& r) { return wirelogs(r); }

  // ---- /api/proxy ------------------------------------------------------------------------------
  awaitable<Next> proxy() {
    auto& req = io_.request();
    bool upgrade = req.count(http::field::upgrade) > 0 || beast::iequals(req[http::field::connection], "upgrade");
    auto policy = deps_->proxy_policy ? deps_->proxy_policy() : nullptr;
    check_ =
        check_proxy_request(method_, path_, query_, io_.content_length(), upgrade, kMaxProxyBody, policy.get(), &io_.caller());
    gateway_request_id_ = gateway_request_id(req["X-Request-ID"]);
    if (check_.status) {
      record_proxy_refusal(check_, io_.caller(), method_, gateway_request_id_);  // log line and metric
      co_return co_await io_.error(check_.status, check_.message, false);
    }
    if (check_.streaming && check_.upgrade) {
      log::info("HTTP upgrade proxy request refused (not supported)", fields({{"path", check_.path}, {"query", query_}}));
      co_return co_await io_.error(501, kStreamingNotSupported, false);
    }
    if (auto answered = co_await io_.read_body(kMaxProxyBody)) co_return *answered;
    if (check_.streaming) {
      if (auto peer = co_await remote_only(check_.plane_type, check_.plane_id, check_.cr_key, session::kStreamCapability))
        co_return co_await forward_stream(std::move(*peer));
      session::StreamRequest sr;
      sr.mode = session::StreamRequest::Mode::http;
      sr.kind = "http";
      sr.request = tunnel_request();
      sr.first_timeout = deps_->request_timeout;
      log::info("HTTP stream request received", fields({{"path", check_.path}, {"query", query_}}));
      co_return co_await relay(std::move(sr), Surface::http_stream);
    }
    started_ = std::chrono::steady_clock::now();
    if (auto peer = co_await remote_only(check_.plane_type, check_.plane_id, check_.cr_key))
      co_return co_await forward(std::move(*peer));
    co_return co_await local_proxy();
  }

  // A plain /api/proxy request through a local agent session.
  awaitable<Next> local_proxy() {
    if (deps_->mesh_receive) {
      // Forwarded here, but the agent has just left this replica (GOAWAY, rebalancing): the request
      // was not acted on, and the entry replica sends it where the agent is now.
      session::PickMiss miss{};
      if (!deps_->registry.pick(check_.plane_type, check_.plane_id, check_.cr_key, miss)) {
        auto res = make_text_error(503, "replica " + deps_->replica_id + " holds no agent for CR " + check_.cr_key);
        res->set(mesh::kDrainingHeader, "true");
        co_return co_await io_.write(res, true);
      }
    }
    auto tr = tunnel_request();
    log::info("HTTP proxy request received", fields({{"path", check_.path}, {"method", method_}}));
    // The agent's reply, or the caller hanging up (which cancels the request: the reply is then
    // `cancelled`). The tunnel calls back exactly once, always posted: the reply is posted here.
    reply_.reset();
    hop_id_ = deps_->tunnel.send(check_.plane_type, check_.plane_id, check_.cr_key, tr, deps_->request_timeout,
                                 [self = shared_from_this(), ex = io_.executor()](session::TunnelReply r) {
                                   asio::post(ex, [self, r = std::move(r)]() mutable {
                                     self->reply_ = std::move(r);
                                     self->wake_.notify();
                                   });
                                 });
    io_.await_agent(spawner(), [this] {
      log::info("caller went away; request cancelled", {{"requestID", gateway_request_id_}, {"hopRequestID", hop_id_}});
      deps_->tunnel.cancel(hop_id_);  // the reply comes back `cancelled`
      wake_.notify();
    });
    while (!reply_) co_await wake_.wait();
    io_.agent_done();
    auto reply = std::move(*reply_);
    reply_.reset();
    if (deps_->mesh_receive && reply.outcome == session::TunnelReply::Outcome::no_agent) {
      // Forwarded here, and the agent was picked above but could no longer take the request (this
      // replica started shutting down and sent GOAWAY in between): it was not sent, so the entry
      // replica sends it where the agent is now, whatever its method.
      log::info("forwarded request not sent: the agent is leaving this replica", fields());
      auto res = make_text_error(503, "replica " + deps_->replica_id + " holds no agent for CR " + check_.cr_key);
      res->set(mesh::kDrainingHeader, "true");
      co_return co_await io_.write(res, true);
    }
    if (deps_->mesh && reply.outcome == session::TunnelReply::Outcome::no_agent && !resent_) {
      // The agent was picked above but could no longer take the request when it was sent: the
      // rebalancer's GOAWAY came in between (the agent is moving to another replica). Nothing was
      // sent, so the request goes where the agent is now, whatever its method, once.
      resent_ = true;
      log::info("request not sent: the agent is leaving this replica; sending it where the agent is now", fields());
      if (auto peer = co_await remote_only(check_.plane_type, check_.plane_id, check_.cr_key))
        co_return co_await forward(std::move(*peer));
      co_return co_await local_proxy();
    }
    if ((deps_->mesh || deps_->mesh_receive) && reply.outcome == session::TunnelReply::Outcome::connection_closed &&
        safe_method() && !resent_) {
      // Several replicas: the agent left (GOAWAY of a drain or of the rebalancer) with this request
      // unanswered. A safe method is sent again, once, wherever the agent is now.
      resent_ = true;
      log::info("agent connection closed before responding; sending the request again (safe method)", fields());
      if (deps_->mesh_receive) {
        auto res = make_text_error(503, "replica " + deps_->replica_id + ": the agent left before responding");
        res->set(mesh::kDrainingHeader, "true");  // the entry replica sends it where the agent is now
        co_return co_await io_.write(res, true);
      }
      if (auto peer = co_await remote_only(check_.plane_type, check_.plane_id, check_.cr_key))
        co_return co_await forward(std::move(*peer));
      co_return co_await local_proxy();
    }
    co_return co_await answer(std::move(reply));
  }

  awaitable<Next> answer(session::TunnelReply r) {
    using O = session::TunnelReply::Outcome;
    nlohmann::json f =
        fields({{"hopRequestID", r.request_id}, {"durationMs", static_cast<int64_t>(seconds_since(started_) * 1000)}});
    if (!r.connection_id.empty()) f["connectionID"] = r.connection_id;
    if (r.outcome == O::response) {
      metrics::tunnel_request(check_.plane_type, r.status_code, check_.target, seconds_since(started_));
      f["statusCode"] = r.status_code;
      log::info("HTTP proxy request completed", f);
      co_return co_await io_.write(make_proxy_response(std::move(r), method_ == "HEAD"), true);
    }
    if (r.outcome == O::cancelled) {
      metrics::tunnel_request(check_.plane_type, 499, check_.target, seconds_since(started_));  // nginx's convention
      co_return Next::close;
    }
    auto a = failure_answer(Surface::proxy, r.outcome, r.agent_error, check_.plane_type + "/" + check_.plane_id, check_.cr_key);
    if (a.status == 0) co_return Next::close;  // not produced for plain requests
    metrics::tunnel_request(check_.plane_type, static_cast<int>(a.status), check_.target, seconds_since(started_));
    f["reason"] = a.reason;
    log::warn(a.log_msg, f);
    co_return co_await io_.error(a.status, a.message, true);
  }

  // ---- several replicas -------------------------------------------------------------------------
  // A replica to forward to: none here holds a session for the CR, another one does.
  // With no agent for the CR anywhere, but one counted for it moments ago (its replica is draining or
  // was restarted, and the agent is reconnecting to another replica), the request waits for it to
  // come back, up to kMoveWait (within the request timeout) instead of failing at once.
  awaitable<std::optional<std::string>> remote_only(const std::string& type, const std::string& id, const std::string& cr,
                                                    std::string_view capability = {}) {
    if (!deps_->mesh) co_return std::nullopt;
    const auto until = std::chrono::steady_clock::now() + std::min<Duration>(kMoveWait, deps_->request_timeout);
    bool waited = false;
    for (;;) {
      session::PickMiss miss{};
      if (deps_->registry.pick(type, id, cr, miss)) co_return std::nullopt;
      if (auto peer = deps_->mesh->pick_peer(type, id, cr, capability)) {
        if (waited) log::info("agent came back after a move; request goes on", fields({{"servedBy", *peer}}));
        co_return peer;
      }
      auto rep = deps_->registry.report(type, cr);
      const auto now = std::chrono::system_clock::now();
      const bool moving = rep.connected_agents > 0 || (rep.last_zero && now - *rep.last_zero < kMoveWait) ||
                          !deps_->mesh->synced() ||  // just started: the peers' directories are on their way
                          deps_->mesh->just_started();  // and agents drained before this start may be too
      const bool give_up = deps_->stop_waiting && deps_->stop_waiting();
      if (!moving || give_up || std::chrono::steady_clock::now() >= until || io_.hung_up()) {
        if (give_up && waited) log::info("gateway shutting down: no longer waiting for the agent", fields());
        co_return std::nullopt;
      }
      if (!waited) log::info("no agent for the CR right now, one was a moment ago: waiting for it", fields());
      waited = true;
      asio::steady_timer t(io_.executor());
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  // A stream (watch, logs -f, exec, wirelogs) for an agent of another replica: the connection is
  // handed to a relay (gateway/mesh_relay.*) that carries it to that replica's mesh listener.
  awaitable<Next> forward_stream(std::string replica) {
    auto target = relay_target(replica);
    if (!target) co_return co_await io_.error(502, "proxy request failed: no link to replica " + replica, true);
    MeshRelayTarget t = std::move(*target);
    t.log_fields = fields();
    auto [stream, request] = io_.hand_over();
    start_mesh_relay(std::move(stream), std::move(request), std::move(t));
    co_return Next::handed_off;
  }

  // Where `replica`'s mesh listener is and how to reach it; nullopt: no link to it.
  std::optional<MeshRelayTarget> relay_target(const std::string& replica) const {
    auto route = deps_->mesh->route_to(replica);
    if (!route) return std::nullopt;
    MeshRelayTarget t;
    t.replica = replica;
    t.host = route->host;
    t.port = route->port;
    t.server_name = route->server_name;
    t.tls = deps_->mesh->client_tls();
    t.entry = deps_->replica_id;
    t.connect_timeout = deps_->handshake_timeout;
    return t;
  }

  // One hop to `replica`, whose mesh listener serves the request from its own sessions. A request that
  // got no answer is tried on another replica when its method is safe to repeat (GET, HEAD, OPTIONS).
  awaitable<Next> forward(std::string replica) {
    auto& req = io_.request();
    mesh::ForwardRequest fr;
    fr.method = method_;
    fr.target = std::string(req.target());
    for (const auto& f : req) {
      if (f.name() == http::field::host) continue;
      fr.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    fr.body = req.body();
    fr.timeout = deps_->request_timeout + std::chrono::seconds(5);  // the serving replica answers 504 first
    const bool repeatable = safe_method();
    std::set<std::string> tried;
    for (;;) {
      tried.insert(replica);
      std::optional<mesh::ForwardReply> reply;
      bool gone = false;
      if (auto target = relay_target(replica)) {
        // Every 100 ms: is the replica still heard from? A cut link or a frozen replica is given up
        // within a second (its updates are due every 250 ms; silent after 800 ms), not after the
        // request timeout: hop_watchdog() ends the wait.
        hop_wait_ = HopWait::waiting;
        hop_replica_ = replica;
        hop_sent_at_ = std::chrono::steady_clock::now();
        ++hop_exchanges_;
        if (hop_watch_ == HopWatch::off) {
          hop_watch_ = HopWatch::ticking;
          spawn(hop_watchdog());
        }
        io_.await_agent(spawner(), [this, &gone] {
          gone = true;
          hop_.abort("the caller went away");
          wake_.notify();
        });
        if (forward_path_ == ForwardPath::own_link) {
          // A kept-alive caller connection that forwards again: over its own link to the replica
          // (gateway/mesh_hop.*), in this coroutine, without handing the request to another strand.
          auto counted = deps_->mesh->count_forward(replica);  // pick_peer prefers the least busy replica
          reply = co_await hop_.exchange(*target, fr);
        }
        if (!reply || (!reply->sent && hop_wait_ == HopWait::waiting && !gone)) {
          // The connection's first forwarded request (it may be its only one), or no link of its own
          // could be had: over the mesh's shared pool of connections, which are already open.
          fwd_reply_.reset();
          const uint64_t attempt = ++fwd_attempt_;  // a reply to an attempt given up is dropped
          deps_->mesh->forward(replica, fr, [self = shared_from_this(), ex = io_.executor(), attempt](mesh::ForwardReply r) {
            asio::post(ex, [self, attempt, r = std::move(r)]() mutable {
              if (attempt != self->fwd_attempt_) return;
              self->fwd_reply_ = std::move(r);
              self->wake_.notify();
            });
          });
          while (!fwd_reply_ && !gone && hop_wait_ != HopWait::silent) co_await wake_.wait();
          ++fwd_attempt_;
          reply = std::move(fwd_reply_);
          fwd_reply_.reset();
          if (!reply) reply.emplace();
        }
        io_.agent_done();
        if (io_.request().keep_alive()) forward_path_ = ForwardPath::own_link;
      } else {
        reply.emplace();
        reply->replica = replica;
        reply->error = "no link to replica " + replica;
      }
      const bool silent = hop_wait_ == HopWait::silent;
      hop_wait_ = HopWait::none;
      if (silent && !gone) {
        metrics::mesh_forward("silent");
        log::warn("forwarded request given up: the replica stopped sending updates (cut link or frozen process)",
                  fields({{"servedBy", replica}}));
        std::optional<std::string> next;
        if (repeatable) next = deps_->mesh->pick_peer(check_.plane_type, check_.plane_id, check_.cr_key, {}, tried);
        if (!next) {
          metrics::tunnel_request(check_.plane_type, 502, check_.target, seconds_since(started_));
          co_return co_await io_.error(502, "proxy request failed: replica " + replica + " holding the agent stopped answering",
                                       true);
        }
        replica = std::move(*next);
        continue;
      }
      if (gone) {
        log::info("caller went away during a forwarded request", fields({{"servedBy", replica}}));
        metrics::tunnel_request(check_.plane_type, 499, check_.target, seconds_since(started_));
        co_return Next::close;
      }
      auto r = std::move(*reply);
      if (r.status == 503 && draining_answer(r)) {
        // The replica started draining, or its agent left it, before its update said so: it did not
        // act on the request. Another replica (or this one) gets it, once the agent has moved.
        metrics::mesh_forward("draining");
        log::info("forwarded request refused by a draining replica; trying again", fields({{"servedBy", replica}}));
        auto next = co_await remote_only(check_.plane_type, check_.plane_id, check_.cr_key);
        if (!next) co_return co_await local_proxy();
        if (!tried.count(*next)) {
          replica = std::move(*next);
          continue;
        }
        asio::steady_timer t(io_.executor());  // the same replica, still shown as holding the agent
        t.expires_after(std::chrono::milliseconds(100));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        if (std::chrono::steady_clock::now() - started_ > deps_->request_timeout)
          co_return co_await io_.error(504, "proxy request failed: no replica took the request in time", true);
        replica = std::move(*next);
        continue;
      }
      if (r.status > 0) {
        metrics::mesh_forward("answered");
        metrics::tunnel_request(check_.plane_type, r.status, check_.target, seconds_since(started_));
        log::info("HTTP proxy request forwarded", fields({{"servedBy", replica},
                                                          {"statusCode", r.status},
                                                          {"durationMs", static_cast<int64_t>(seconds_since(started_) * 1000)}}));
        session::TunnelReply tr;
        tr.outcome = session::TunnelReply::Outcome::response;
        tr.status_code = r.status;
        tr.headers = std::move(r.headers);
        tr.body = std::move(r.body);
        co_return co_await io_.write(make_proxy_response(std::move(tr), method_ == "HEAD"), true);
      }
      metrics::mesh_forward("unreachable");
      log::warn("forwarded request got no answer from the replica", fields({{"servedBy", replica}, {"reason", r.error}}));
      std::optional<std::string> next;
      if (repeatable) next = deps_->mesh->pick_peer(check_.plane_type, check_.plane_id, check_.cr_key, {}, tried);
      if (!next) {
        metrics::tunnel_request(check_.plane_type, 502, check_.target, seconds_since(started_));
        co_return co_await io_.error(
            502, "proxy request failed: replica " + replica + " holding the agent did not answer: " + r.error, true);
      }
      replica = std::move(*next);
    }
  }

  // While this connection forwards requests: every 100 ms, the exchange under way is given up when
  // its replica stopped sending updates. Runs until a tick finds that nothing was forwarded since the
  // last one, so a busy connection keeps one timer instead of starting one per request.
  awaitable<void> hop_watchdog() {
    auto self = shared_from_this();
    asio::steady_timer t(io_.executor());
    uint64_t seen = hop_exchanges_;
    for (;;) {
      t.expires_after(std::chrono::milliseconds(100));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      if (hop_wait_ == HopWait::waiting && !deps_->mesh->responsive(hop_replica_, hop_sent_at_)) {
        hop_wait_ = HopWait::silent;
        hop_.abort("the replica stopped sending updates");
        wake_.notify();
      }
      if (hop_wait_ != HopWait::waiting && hop_exchanges_ == seen) break;
      seen = hop_exchanges_;
    }
    hop_watch_ = HopWatch::off;
  }

  static bool draining_answer(const mesh::ForwardReply& r) {
    for (const auto& [k, v] : r.headers)
      if (beast::iequals(k, mesh::kDrainingHeader)) return true;
    return false;
  }

  // POST /mesh/v1/directory (mesh listener only): a peer's session directory update.
  awaitable<Next> mesh_update() {
    if (method_ != "POST") {
      RouteError e{405, "method not allowed", "POST"};
      co_return co_await serve(e);
    }
    if (auto answered = co_await io_.read_body(mesh::kMaxUpdateBytes)) co_return *answered;
    auto a = deps_->mesh_receive(io_.request().body());
    metrics::mesh_update(a.status);
    auto res = std::make_shared<ProxyResponse>(static_cast<http::status>(a.status), 11);
    res->set(http::field::content_type, "application/json");
    res->body() = std::move(a.body);
    co_return co_await io_.write(res, true);
  }

  session::TunnelRequest tunnel_request() {
    auto& req = io_.request();
    session::TunnelRequest tr;
    tr.target = check_.target;
    tr.method = method_;
    tr.path = check_.path;
    tr.query = query_;
    tr.gateway_request_id = gateway_request_id_;
    for (const auto& f : req) {
      if (f.name() == http::field::host) continue;
      tr.headers.emplace_back(canonical_header_key(f.name_string()), std::string(f.value()));
    }
    tr.body = std::move(req.body());
    return tr;
  }

  nlohmann::json fields(nlohmann::json extra = nlohmann::json::object()) const {
    extra["requestID"] = gateway_request_id_;
    extra["planeType"] = check_.plane_type;
    extra["planeID"] = check_.plane_id;
    extra["cr"] = check_.cr_key;
    extra["target"] = check_.target;
    if (!hop_id_.empty()) extra["hopRequestID"] = hop_id_;
    return extra;
  }

  // ---- streams: watch / logs follow (chunked HTTP) and wirelogs (SSE) ---------------------------
  awaitable<Next> wirelogs(const WirelogsRoute& r) {
    gateway_request_id_ = gateway_request_id(io_.request()["X-Request-ID"]);
    check_ = ProxyCheck{};
    check_.plane_type = r.plane_type;
    check_.plane_id = r.plane_id;
    check_.cr_key = r.cr_key;
    check_.target = "hubble";
    check_.path = "/wirelogs";
    if (auto peer = co_await remote_only(r.plane_type, r.plane_id, r.cr_key)) co_return co_await forward_stream(std::move(*peer));
    auto sr = wirelogs_stream_request(r, gateway_request_id_, deps_->request_timeout);
    log::info("wirelogs stream requested", fields());
    co_return co_await relay(std::move(sr), Surface::sse);
  }

  awaitable<Next> relay(session::StreamRequest sr, Surface surface) {
    StreamTarget t{check_.plane_type, check_.plane_id, check_.cr_key, check_.target, {}};
    t.log_fields = {{"requestID", gateway_request_id_},
                    {"planeType", check_.plane_type},
                    {"planeID", check_.plane_id},
                    {"cr", check_.cr_key},
                    {"target", check_.target}};
    auto relay = std::make_shared<StreamRelay>(io_, deps_->tunnel, std::move(t));
    co_return co_await relay->run(std::move(sr), surface, spawner());
  }

  // ---- exec -------------------------------------------------------------------------------------
  awaitable<Next> exec(const ExecRoute& r) {
    auto& req = io_.request();
    gateway_request_id_ = gateway_request_id(req["X-Request-ID"]);
    check_ = ProxyCheck{};
    check_.plane_type = r.plane_type;
    check_.plane_id = r.plane_id;
    check_.cr_key = r.cr_key;
    check_.target = "exec";
    if (auto peer = co_await remote_only(r.plane_type, r.plane_id, r.cr_key)) co_return co_await forward_stream(std::move(*peer));
    session::PickMiss miss{};
    if (!deps_->registry.pick(r.plane_type, r.plane_id, r.cr_key, miss)) {
      std::string why = miss == session::PickMiss::not_authorized
                            ? "no agents authorized for CR " + r.cr_key
                            : "no agents found for plane " + r.plane_type + "/" + r.plane_id;
      log::warn("exec refused: no agent", {{"requestID", gateway_request_id_},
                                           {"planeType", r.plane_type},
                                           {"planeID", r.plane_id},
                                           {"cr", r.cr_key},
                                           {"reason", why}});
      co_return co_await io_.error(503, "no agent available: " + why, false);
    }
    if (auto refusal = websocket_upgrade_refusal(req)) {
      log::warn("exec refused: not a WebSocket upgrade", {{"requestID", gateway_request_id_},
                                                          {"planeType", r.plane_type},
                                                          {"planeID", r.plane_id},
                                                          {"cr", r.cr_key},
                                                          {"status", refusal->status}});
      RouteError e{refusal->status, refusal->text, {}, true};
      co_return co_await serve(e);
    }
    ExecTarget t;
    t.plane_type = r.plane_type;
    t.plane_id = r.plane_id;
    t.cr_key = r.cr_key;
    t.gateway_request_id = gateway_request_id_;
    t.path = exec_path(r);
    t.query = exec_query(r);
    t.first_timeout = deps_->request_timeout;
    t.write_timeout = deps_->write_timeout;
    t.handshake_timeout = deps_->handshake_timeout;
    auto [stream, request] = io_.hand_over();
    start_exec_bridge(std::move(stream), std::move(request), deps_, deps_->tunnel, std::move(t));
    co_return Next::handed_off;
  }

  // ---- answers -----------------------------------------------------------------------------------
  // A coroutine, so that `a` lives in its frame until the answer is written (io_.error keeps a
  // reference to the text; a plain function returning that awaitable would let it dangle).
  awaitable<Next> plane_answer(PlaneAnswer a) {
    if (a.status != 200) co_return co_await io_.error(a.status, a.text, true);
    auto res = std::make_shared<ProxyResponse>(http::status::ok, 11);
    res->set(http::field::content_type, "application/json");
    res->body() = to_json_text(a.json) + "\n";
    co_return co_await io_.write(res, true);
  }

  std::shared_ptr<void> slot_;  // counts this connection against the listener's connection cap
  std::shared_ptr<const InternalApiDeps> deps_;
  CallerIo io_;
  Wakeup wake_;  // the agent's reply arrived, or the caller left (proxy)
  std::string path_, query_, method_, gateway_request_id_, hop_id_;
  ProxyCheck check_;
  std::optional<session::TunnelReply> reply_;  // the agent's reply (proxy)
  std::optional<mesh::ForwardReply> fwd_reply_;  // another replica's answer (forwarded over the shared pool)
  uint64_t fwd_attempt_ = 0;  // the forwarding attempt whose answer is awaited
  MeshHop hop_;  // this connection's own link to the replica it forwards to (forwarded proxy)
  // How this connection forwards: its first request over the mesh's shared pool; once a kept-alive
  // connection has forwarded, over its own link (hop_).
  enum class ForwardPath { shared_pool, own_link };
  ForwardPath forward_path_ = ForwardPath::shared_pool;
  // The forwarded exchange under way: none, waiting for its answer, or given up because the replica
  // fell silent (hop_watchdog).
  enum class HopWait { none, waiting, silent };
  HopWait hop_wait_ = HopWait::none;
  enum class HopWatch { off, ticking };  // whether hop_watchdog runs
  HopWatch hop_watch_ = HopWatch::off;
  std::string hop_replica_;  // the replica of the exchange under way
  std::chrono::steady_clock::time_point hop_sent_at_{};
  uint64_t hop_exchanges_ = 0;  // exchanges started (the watchdog stops when a tick saw none)
  bool counted_ = true;  // counted in deps_->active (accepted, or a request being served)
  bool resent_ = false;  // this request was sent again: its agent left, or could not take it (local_proxy)
  // GET, HEAD and OPTIONS change nothing: such a request may be sent again (to another replica, or
  // after its agent left before answering).
  bool safe_method() const { return method_ == "GET" || method_ == "HEAD" || method_ == "OPTIONS"; }
  std::chrono::steady_clock::time_point started_{};
};

}  // namespace

struct InternalApi::Impl {
  Impl(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl_ctx, const std::string& bind, uint16_t port,
       InternalApiDeps d)
      : ssl(std::move(ssl_ctx)),
        deps(std::make_shared<const InternalApiDeps>(std::move(d))),
        acceptor(ioc, bind, port, "internal", AcceptLimits{deps->max_connections, deps->handshake_timeout},
                 [this](tcp::socket s, std::shared_ptr<void> slot) {
                   std::make_shared<Conn>(std::move(s), std::move(slot), ssl.get(), deps)->start();
                 }) {}
  TlsContextSlot ssl;
  std::shared_ptr<const InternalApiDeps> deps;
  Acceptor acceptor;
};

InternalApi::InternalApi(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl, const std::string& bind, uint16_t port,
                         InternalApiDeps deps)
    : impl_(std::make_shared<Impl>(ioc, std::move(ssl), bind, port, std::move(deps))) {}
InternalApi::~InternalApi() { stop(); }
uint16_t InternalApi::port() const { return impl_->acceptor.port(); }
void InternalApi::start() { impl_->acceptor.start(); }
void InternalApi::stop() { impl_->acceptor.stop(); }
void InternalApi::set_ssl_context(std::shared_ptr<asio::ssl::context> ctx) { impl_->ssl.set(std::move(ctx)); }
int64_t InternalApi::active() const { return impl_->deps->active->load(); }

}  // namespace cg::gateway
