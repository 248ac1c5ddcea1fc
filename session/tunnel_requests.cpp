#include "session/tunnel_requests.hpp"

#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"

namespace cg::session {
using namespace cg::net;

struct RequestTable::Pending {
  explicit Pending(asio::io_context& ioc) : strand(asio::make_strand(ioc)), timer(strand) {}
  uint64_t serial = 0;
  std::string connection_id;
  std::string plane_type, plane_id;
  std::function<void(TunnelReply)> done;
  asio::strand<asio::io_context::executor_type> strand;  // the request's own: its timeout runs here
  asio::steady_timer timer;  // the reply deadline, on `strand`; armed and cancelled under mu_
};

RequestTable::RequestTable(asio::io_context& ioc, SessionRegistry& registry, size_t max_per_session, AgentWarn warn)
    : ioc_(ioc), registry_(registry), max_per_session_(max_per_session), warn_(std::move(warn)) {}
RequestTable::~RequestTable() = default;

size_t RequestTable::size() const {
  cg::MutexLock lk(mu_);
  return pending_.size();
}

bool RequestTable::contains(const std::string& id) const {
  cg::MutexLock lk(mu_);
  return pending_.count(id) != 0;
}

std::string RequestTable::send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                               const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done) {
  PickMiss miss{};
  auto session = registry_.pick(plane_type, plane_id, cr_key, miss);
  if (!session) {
    TunnelReply r;
    // Moving (the agent got GOAWAY here, or is at another replica) is "no agent here", not 403.
    r.outcome = miss == PickMiss::not_authorized ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent;
    asio::post(ioc_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return {};
  }
  size_t load = 0;
  {
    cg::MutexLock lk(mu_);
    auto it = by_session_.find(session->serial());
    if (it != by_session_.end()) load = it->second.size();
  }
  if (load >= max_per_session_) {
    metrics::limit_refused("pending_per_session");
    log::warn("request refused: agent has too many pending requests", {{"planeType", plane_type},
                                                                       {"planeID", plane_id},
                                                                       {"connectionID", session->connection_id()},
                                                                       {"requestID", req.gateway_request_id},
                                                                       {"limit", max_per_session_}});
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::overloaded;
    r.connection_id = session->connection_id();
    r.agent_error =
        "agent connection has " + std::to_string(load) + " requests pending (limit " + std::to_string(max_per_session_) + ")";
    asio::post(ioc_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return {};
  }
  std::string id = uuid_v4();
  auto p = std::make_shared<Pending>(ioc_);
  p->serial = session->serial();
  p->connection_id = session->connection_id();
  p->plane_type = plane_type;
  p->plane_id = plane_id;
  p->done = std::move(done);
  {
    cg::MutexLock lk(mu_);
    pending_[id] = p;
    by_session_[p->serial].insert(id);
    p->timer.expires_after(timeout);
    metrics::tunnel_inflight(1);
    p->timer.async_wait([this, id](beast::error_code ec) {
      if (ec) return;
      TunnelReply r;
      r.outcome = TunnelReply::Outcome::timeout;
      complete(id, std::move(r), nullptr);
    });
  }
  auto frame = std::make_shared<const std::string>(encode_tunnel_request(id, req));
  if (!session->send_text(frame)) {
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::send_failed;
    complete(id, std::move(r), nullptr);
  }
  return id;
}

void RequestTable::cancel(const std::string& id) {
  TunnelReply r;
  r.outcome = TunnelReply::Outcome::cancelled;
  complete(id, std::move(r), nullptr);
}

void RequestTable::complete(const std::string& id, TunnelReply reply, const AgentHandle* from) {
  std::shared_ptr<Pending> p;
  {
    cg::MutexLock lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      if (from) {
        metrics::frames_dropped("unknown_request");
        warn_(*from, "received HTTP tunnel response for unknown request",
              {{"requestID", id},
               {"planeType", from->plane_type()},
               {"planeID", from->plane_id()},
               {"connectionID", from->connection_id()}});
      }
      return;
    }
    if (from && it->second->serial != from->serial()) {
      metrics::frames_dropped("wrong_session");
      warn_(*from, "reply from a session that was not asked; dropped",
            {{"requestID", id},
             {"planeType", from->plane_type()},
             {"planeID", from->plane_id()},
             {"connectionID", from->connection_id()},
             {"askedConnectionID", it->second->connection_id}});
      return;
    }
    p = it->second;
    pending_.erase(it);
    auto bs = by_session_.find(p->serial);
    if (bs != by_session_.end()) {
      bs->second.erase(id);
      if (bs->second.empty()) by_session_.erase(bs);
    }
    p->timer.cancel();
  }
  metrics::tunnel_inflight(-1);
  reply.request_id = id;
  reply.connection_id = p->connection_id;
  asio::post(ioc_, [done = std::move(p->done), reply = std::move(reply)]() mutable { done(std::move(reply)); });
}

bool RequestTable::expects_reply(const std::string& id, const AgentHandle& from) {
  cg::MutexLock lk(mu_);
  auto it = pending_.find(id);
  return it != pending_.end() && it->second->serial == from.serial();
}

void RequestTable::on_reply(AgentHandle& s, AgentFrame& f) {
  if (!expects_reply(f.request_id, s)) {
    TunnelReply ignored;
    complete(f.request_id, std::move(ignored), &s);  // counts and logs the drop (unknown or wrong session)
    return;
  }
  TunnelReply r;
  std::string err;
  if (!decode_tunnel_response(f, r, err)) {
    // A malformed answer still ends the request (502) rather than leaving the caller to time out.
    metrics::frames_dropped("malformed_response");
    warn_(s, "malformed HTTP tunnel response",
          {{"planeType", s.plane_type()},
           {"planeID", s.plane_id()},
           {"connectionID", s.connection_id()},
           {"requestID", f.request_id},
           {"reason", err}});
    r = TunnelReply{};
    r.outcome = TunnelReply::Outcome::send_failed;
    r.agent_error = "malformed response from agent: " + err;
  }
  complete(f.request_id, std::move(r), &s);
}

void RequestTable::session_lost(uint64_t serial) {
  std::set<std::string> ids;
  {
    cg::MutexLock lk(mu_);
    if (auto it = by_session_.find(serial); it != by_session_.end()) ids = it->second;
  }
  for (const auto& id : ids) {
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::connection_closed;
    complete(id, std::move(r), nullptr);
  }
}

}  // namespace cg::session
