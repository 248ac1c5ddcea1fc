#include "session/tunnel.hpp"

#include "common/base64.hpp"
#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "session/frames.hpp"

namespace cg::session {
using namespace cg::net;

struct Tunnel::Pending {
  uint64_t serial = 0;
  std::string connection_id;
  std::string plane_type, plane_id;
  std::function<void(TunnelReply)> done;
  std::unique_ptr<asio::steady_timer> timer;
};

std::string encode_tunnel_request(const std::string& id, const TunnelRequest& r) {
  nlohmann::json j = {{"requestID", id}, {"target", r.target}, {"method", r.method}, {"path", r.path}};
  if (!r.gateway_request_id.empty()) j["gatewayRequestID"] = r.gateway_request_id;
  if (!r.query.empty()) j["query"] = r.query;
  if (!r.headers.empty()) {
    nlohmann::json h = nlohmann::json::object();
    for (const auto& [k, v] : r.headers) h[k].push_back(v);
    j["headers"] = std::move(h);
  }
  if (!r.body.empty()) j["body"] = base64_encode(r.body);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool decode_tunnel_response(const nlohmann::json& j, TunnelReply& out, std::string& error) {
  auto sc = j.find("statusCode");
  if (sc == j.end() || !sc->is_number_integer() || sc->get<int64_t>() < 100 || sc->get<int64_t>() > 999) {
    error = "statusCode missing or not an HTTP status";
    return false;
  }
  out.status_code = static_cast<int>(sc->get<int64_t>());
  if (auto h = j.find("headers"); h != j.end() && !h->is_null()) {
    if (!h->is_object()) {
      error = "headers is not an object";
      return false;
    }
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (!it->is_array()) {
        error = "header values must be arrays of strings";
        return false;
      }
      for (const auto& v : *it)
        if (v.is_string()) out.headers.emplace_back(it.key(), v.get<std::string>());
    }
  }
  if (auto b = j.find("body"); b != j.end() && !b->is_null()) {
    if (!b->is_string()) {
      error = "body is not a base64 string";
      return false;
    }
    auto d = base64_decode(b->get<std::string>());
    if (!d) {
      error = "body is not valid base64";
      return false;
    }
    out.body = std::move(*d);
  }
  if (auto e = j.find("error"); e != j.end() && e->is_object()) out.agent_error = e->value("message", "");
  return true;
}

Tunnel::Tunnel(asio::io_context& ioc, SessionRegistry& registry) : ioc_(ioc), registry_(registry) {}
Tunnel::~Tunnel() = default;

size_t Tunnel::pending() const {
  std::lock_guard lk(mu_);
  return pending_.size();
}

std::string Tunnel::send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                         const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done) {
  bool plane_has = false;
  auto session = registry_.pick(plane_type, plane_id, cr_key, plane_has);
  if (!session) {
    TunnelReply r;
    r.outcome = plane_has ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent;
    done(std::move(r));
    return {};
  }
  const std::string id = uuid_v4();
  auto p = std::make_shared<Pending>();
  p->serial = session->serial();
  p->connection_id = session->connection_id();
  p->plane_type = plane_type;
  p->plane_id = plane_id;
  p->done = std::move(done);
  p->timer = std::make_unique<asio::steady_timer>(ioc_);
  {
    std::lock_guard lk(mu_);
    pending_[id] = p;
    by_session_[p->serial].insert(id);
    p->timer->expires_after(timeout);
    metrics::tunnel_inflight(1);
    p->timer->async_wait([this, id](beast::error_code ec) {
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

void Tunnel::cancel(const std::string& id) {
  TunnelReply r;
  r.outcome = TunnelReply::Outcome::cancelled;
  complete(id, std::move(r), nullptr);
}

void Tunnel::complete(const std::string& id, TunnelReply reply, const AgentHandle* from) {
  std::shared_ptr<Pending> p;
  {
    std::lock_guard lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      if (from) metrics::frames_dropped("unknown_request");
      if (from)
        log::warn("received HTTP tunnel response for unknown request",
                  {{"requestID", id}, {"planeType", from->plane_type()}, {"planeID", from->plane_id()},
                   {"connectionID", from->connection_id()}});
      return;
    }
    if (from && it->second->serial != from->serial()) {
      metrics::frames_dropped("wrong_session");
      log::warn("reply from a session that was not asked; dropped",
                {{"requestID", id}, {"planeType", from->plane_type()}, {"planeID", from->plane_id()},
                 {"connectionID", from->connection_id()}, {"askedConnectionID", it->second->connection_id}});
      return;
    }
    p = it->second;
    pending_.erase(it);
    auto bs = by_session_.find(p->serial);
    if (bs != by_session_.end()) {
      bs->second.erase(id);
      if (bs->second.empty()) by_session_.erase(bs);
    }
    p->timer->cancel();
  }
  metrics::tunnel_inflight(-1);
  reply.request_id = id;
  reply.connection_id = p->connection_id;
  p->done(std::move(reply));
}

void Tunnel::on_text(AgentHandle& s, std::string_view text) {
  auto f = classify_agent_frame(text);
  if (f.kind == FrameKind::invalid) {
    metrics::frames_dropped("invalid");
    log::warn("invalid frame from agent dropped", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                    {"connectionID", s.connection_id()}, {"reason", f.error}});
    return;
  }
  if (f.kind == FrameKind::stream_chunk) {
    metrics::frames_dropped("unknown_stream");
    log::warn("stream chunk for an unknown stream dropped", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                               {"connectionID", s.connection_id()}, {"requestID", f.request_id}});
    return;
  }
  TunnelReply r;
  std::string err;
  if (!decode_tunnel_response(f.body, r, err)) {
    // A malformed answer still ends the request (502) rather than leaving the caller to time out.
    log::warn("malformed HTTP tunnel response", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                 {"connectionID", s.connection_id()}, {"requestID", f.request_id}, {"reason", err}});
    r = TunnelReply{};
    r.outcome = TunnelReply::Outcome::send_failed;
    r.agent_error = "malformed response from agent: " + err;
  }
  complete(f.request_id, std::move(r), &s);
}

void Tunnel::on_closed(AgentHandle& s) {
  std::set<std::string> ids;
  {
    std::lock_guard lk(mu_);
    auto it = by_session_.find(s.serial());
    if (it == by_session_.end()) return;
    ids = it->second;
  }
  for (const auto& id : ids) {
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::connection_closed;
    complete(id, std::move(r), nullptr);
  }
}

}  // namespace cg::session
