#include "session/tunnel.hpp"

#include <algorithm>

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
  std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (!r.body.empty()) {
    // The body goes straight into the frame as base64 (no JSON copy of it): one buffer per request.
    out.pop_back();  // '}'
    out.reserve(out.size() + 11 + 4 * ((r.body.size() + 2) / 3));
    out += ",\"body\":\"";
    base64_append(out, r.body);
    out += "\"}";
  }
  return out;
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
    auto d = base64_decode(b->get_ref<const std::string&>());
    if (!d) {
      error = "body is not valid base64";
      return false;
    }
    out.body = std::move(*d);
  }
  if (auto e = j.find("error"); e != j.end() && e->is_object()) out.agent_error = e->value("message", "");
  return true;
}

struct Tunnel::Stream {
  uint64_t serial = 0;
  std::weak_ptr<AgentHandle> session;
  std::string connection_id, plane_type, plane_id, kind;
  StreamRequest::Mode mode = StreamRequest::Mode::http;
  bool flow_controlled = false;  // the agent announced kStreamCapability: it honours credit
  bool started = false;          // head (http) or first chunk (upgrade) seen
  bool ended = false;
  size_t window = 0, max_unconsumed = 0;
  uint64_t received = 0, consumed = 0, granted = 0, credit_pending = 0;
  std::function<void(StreamEvent)> on_event;
  std::unique_ptr<asio::steady_timer> timer;
};

namespace {
std::shared_ptr<const std::string> close_chunk(const std::string& id) {
  return std::make_shared<const std::string>(nlohmann::json({{"requestID", id}, {"data", nullptr}, {"isClose", true}}).dump());
}
}  // namespace

Tunnel::Tunnel(asio::io_context& ioc, SessionRegistry& registry, TunnelLimits limits)
    : ioc_(ioc), registry_(registry), limits_(limits) {}
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
  size_t load = 0;
  {
    std::lock_guard lk(mu_);
    auto it = by_session_.find(session->serial());
    if (it != by_session_.end()) load = it->second.size();
  }
  if (load >= limits_.max_pending_per_session) {
    metrics::limit_refused("pending_per_session");
    log::warn("request refused: agent has too many pending requests",
              {{"planeType", plane_type}, {"planeID", plane_id}, {"connectionID", session->connection_id()},
               {"requestID", req.gateway_request_id}, {"limit", limits_.max_pending_per_session}});
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::overloaded;
    r.connection_id = session->connection_id();
    r.agent_error = "agent connection has " + std::to_string(load) + " requests pending (limit " +
                    std::to_string(limits_.max_pending_per_session) + ")";
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
    if (on_stream_frame(s, f.request_id, f.body, true)) return;
    metrics::frames_dropped("unknown_stream");
    log::warn("stream chunk for an unknown stream dropped", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                               {"connectionID", s.connection_id()}, {"requestID", f.request_id}});
    return;
  }
  if (on_stream_frame(s, f.request_id, f.body, false)) return;
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
  std::set<std::string> ids, sids;
  {
    std::lock_guard lk(mu_);
    if (auto it = by_session_.find(s.serial()); it != by_session_.end()) ids = it->second;
    if (auto it = streams_by_session_.find(s.serial()); it != streams_by_session_.end()) sids = it->second;
  }
  for (const auto& id : ids) {
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::connection_closed;
    complete(id, std::move(r), nullptr);
  }
  for (const auto& id : sids) {
    StreamEvent ev;
    ev.outcome = TunnelReply::Outcome::connection_closed;
    ev.error = "agent connection closed";
    end_stream(id, std::move(ev), false, "connection_closed");
  }
}

// ---- streams -------------------------------------------------------------------------------

size_t Tunnel::streams() const {
  std::lock_guard lk(mu_);
  return streams_.size();
}

std::string Tunnel::open_stream(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                StreamRequest req, std::function<void(StreamEvent)> on_event) {
  const bool http_mode = req.mode == StreamRequest::Mode::http;
  bool plane_has = false, authorized = false;
  auto session = registry_.pick(plane_type, plane_id, cr_key, plane_has, http_mode ? kStreamCapability : "", &authorized);
  auto fail = [&](TunnelReply::Outcome o, std::string why) {
    StreamEvent ev;
    ev.outcome = o;
    ev.error = std::move(why);
    if (session) ev.connection_id = session->connection_id();
    on_event(std::move(ev));
    return std::string();
  };
  if (!session) {
    if (authorized) return fail(TunnelReply::Outcome::not_capable, "no connected agent supports streaming");
    return fail(plane_has ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent, "");
  }
  auto st = std::make_shared<Stream>();
  st->serial = session->serial();
  st->session = session;
  st->connection_id = session->connection_id();
  st->plane_type = plane_type;
  st->plane_id = plane_id;
  st->kind = req.kind;
  st->mode = req.mode;
  st->flow_controlled = session->has_capability(kStreamCapability);
  st->window = req.window;
  st->granted = req.window;
  st->max_unconsumed = std::max(req.max_unconsumed, req.window);
  st->timer = std::make_unique<asio::steady_timer>(ioc_);
  // Upstream uses the gateway request ID as the stream's requestID; one that is already in use (a
  // caller-chosen X-Request-ID) is replaced by a fresh one.
  std::string id = http_mode || req.request.gateway_request_id.empty() ? uuid_v4() : req.request.gateway_request_id;
  size_t open_now = 0;
  {
    std::lock_guard lk(mu_);
    if (auto sb = streams_by_session_.find(st->serial); sb != streams_by_session_.end()) open_now = sb->second.size();
    if (open_now < limits_.max_streams_per_session) {
      while (streams_.count(id) || pending_.count(id)) id = "gw-" + random_hex(8);
      st->on_event = std::move(on_event);
      streams_[id] = st;
      streams_by_session_[st->serial].insert(id);
      st->timer->expires_after(req.first_timeout);
      st->timer->async_wait([this, id](beast::error_code ec) {
        if (ec) return;
        StreamEvent ev;
        ev.outcome = TunnelReply::Outcome::timeout;
        ev.error = "no answer from the agent in time";
        end_stream(id, std::move(ev), true, "timeout");
      });
    }
  }
  if (open_now >= limits_.max_streams_per_session) {
    metrics::limit_refused("streams_per_session");
    log::warn("stream refused: agent connection has too many open streams",
              {{"planeType", plane_type}, {"planeID", plane_id}, {"connectionID", st->connection_id},
               {"requestID", req.request.gateway_request_id}, {"limit", limits_.max_streams_per_session}});
    return fail(TunnelReply::Outcome::overloaded, "agent connection has " + std::to_string(open_now) +
                                                      " open streams (limit " +
                                                      std::to_string(limits_.max_streams_per_session) + ")");
  }
  metrics::stream_opened(st->kind);
  nlohmann::json j;
  if (http_mode) {
    j = nlohmann::json::parse(encode_tunnel_request(id, req.request));
    j["stream"] = true;
    j["window"] = req.window;
  } else {
    const auto& r = req.request;
    j = {{"requestID", id}, {"target", r.target}, {"method", r.method}, {"path", r.path}, {"isUpgrade", true}};
    if (!r.query.empty()) j["query"] = r.query;
    if (!req.upgrade_proto.empty()) j["upgradeProto"] = req.upgrade_proto;
    if (!r.gateway_request_id.empty() && r.gateway_request_id != id) j["gatewayRequestID"] = r.gateway_request_id;
    if (st->flow_controlled) j["window"] = req.window;
  }
  auto frame = std::make_shared<const std::string>(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (!session->send_text(frame)) {
    StreamEvent ev;
    ev.outcome = TunnelReply::Outcome::send_failed;
    ev.error = "failed to send stream request: agent connection is closing";
    end_stream(id, std::move(ev), false, "send_failed");
    return {};
  }
  return id;
}

bool Tunnel::on_stream_frame(AgentHandle& s, const std::string& id, const nlohmann::json& body, bool is_chunk) {
  std::shared_ptr<Stream> st;
  {
    std::lock_guard lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return false;
    st = it->second;
  }
  auto fields = [&] {
    return nlohmann::json{{"requestID", id}, {"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                          {"connectionID", s.connection_id()}};
  };
  if (st->serial != s.serial()) {
    metrics::frames_dropped("wrong_session");
    log::warn("stream frame from a session that does not carry the stream; dropped", fields());
    return true;
  }
  std::vector<StreamEvent> events;
  bool end = false, abort_agent = false;
  std::string end_reason = "completed";
  StreamEvent end_ev;
  if (!is_chunk) {
    // A head (http mode), or a complete answer instead of a stream.
    TunnelReply r;
    std::string err;
    if (st->mode != StreamRequest::Mode::http || st->started) {
      metrics::frames_dropped("invalid");
      log::warn("unexpected response frame on a stream; dropped", fields());
      return true;
    }
    if (!decode_tunnel_response(body, r, err)) {
      end = true;
      abort_agent = true;
      end_ev.outcome = TunnelReply::Outcome::send_failed;
      end_ev.error = "malformed response from agent: " + err;
      end_reason = "agent_error";
    } else {
      StreamEvent head;
      head.kind = StreamEvent::Kind::head;
      head.status_code = r.status_code;
      head.headers = std::move(r.headers);
      head.connection_id = st->connection_id;
      events.push_back(std::move(head));
      const bool streamed = body.value("stream", false);
      if (!r.body.empty()) {
        StreamEvent d;
        d.kind = StreamEvent::Kind::data;
        d.data = std::move(r.body);
        d.stream_id = -1;  // marks a complete answer's body: not sent under credit, not counted against it
        events.push_back(std::move(d));
      }
      if (!streamed) {
        end = true;
        end_ev.error.clear();
      }
    }
  } else {
    const auto dit = body.find("data");
    std::string data;
    if (dit != body.end() && dit->is_string()) {
      auto d = base64_decode(dit->get_ref<const std::string&>());
      if (!d) {
        end = true;
        abort_agent = true;
        end_ev.outcome = TunnelReply::Outcome::send_failed;
        end_ev.error = "stream chunk data is not valid base64";
        end_reason = "agent_error";
      } else {
        data = std::move(*d);
      }
    } else if (dit != body.end() && !dit->is_null()) {
      end = true;
      abort_agent = true;
      end_ev.outcome = TunnelReply::Outcome::send_failed;
      end_ev.error = "stream chunk data is not a base64 string";
      end_reason = "agent_error";
    }
    const bool is_close = body.value("isClose", false);
    if (!end && st->mode == StreamRequest::Mode::http && !st->started && !is_close) {
      end = true;
      abort_agent = true;
      end_ev.outcome = TunnelReply::Outcome::send_failed;
      end_ev.error = "agent sent stream data before the response head";
      end_reason = "agent_error";
    }
    if (!end && is_close) {
      end = true;
      end_ev.error = data;  // a close chunk's data is the agent's error text (empty: normal end)
      if (!data.empty()) end_reason = "agent_error";
      if (!data.empty() && st->mode == StreamRequest::Mode::http && !st->started)
        end_ev.outcome = TunnelReply::Outcome::send_failed;
    } else if (!end) {
      StreamEvent d;
      d.kind = StreamEvent::Kind::data;
      d.data = std::move(data);
      d.stream_id = body.contains("streamId") && body["streamId"].is_number_integer() ? body["streamId"].get<int>() : 0;
      events.push_back(std::move(d));
    }
  }
  // Accounting and delivery under the stream's bookkeeping; callbacks outside the lock.
  std::function<void(StreamEvent)> cb;
  {
    std::lock_guard lk(mu_);
    if (st->ended) return true;
    if (!st->started && (!events.empty() || end)) {
      st->started = true;
      st->timer->cancel();
    }
    for (auto& e : events) {
      if (e.kind != StreamEvent::Kind::data) continue;
      if (e.stream_id == -1) {
        // A complete answer's body: the caller still consumes it, so it is credited like stream data.
        e.stream_id = 0;
        st->received += e.data.size();
        st->granted += e.data.size();
        continue;
      }
      st->received += e.data.size();
      const uint64_t unconsumed = st->received - st->consumed;
      if (st->flow_controlled && st->received > st->granted) {
        end = true;
        abort_agent = true;
        end_ev = StreamEvent{};
        end_ev.outcome = TunnelReply::Outcome::send_failed;
        end_ev.error = "agent exceeded the stream's flow-control window";
        end_reason = "flow_control";
      } else if (!st->flow_controlled && unconsumed > st->max_unconsumed) {
        end = true;
        abort_agent = true;
        end_ev = StreamEvent{};
        end_ev.outcome = TunnelReply::Outcome::overloaded;
        end_ev.error = "caller too slow: " + std::to_string(unconsumed) + " bytes not yet consumed";
        end_reason = "too_slow";
      }
    }
    cb = st->on_event;
  }
  if (end && (end_reason == "flow_control" || end_reason == "too_slow")) {
    events.erase(std::remove_if(events.begin(), events.end(), [](const StreamEvent& e) { return e.kind == StreamEvent::Kind::data; }),
                 events.end());
    log::warn("stream ended", [&] { auto f = fields(); f["reason"] = end_ev.error; return f; }());
  }
  for (auto& e : events) {
    if (e.kind == StreamEvent::Kind::data) metrics::stream_bytes("to_caller", e.data.size());
    cb(std::move(e));
  }
  if (end) end_stream(id, std::move(end_ev), abort_agent, end_reason);
  return true;
}

void Tunnel::end_stream(const std::string& id, StreamEvent ev, bool tell_agent, const std::string& reason) {
  std::shared_ptr<Stream> st;
  {
    std::lock_guard lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    st = it->second;
    streams_.erase(it);
    if (auto sb = streams_by_session_.find(st->serial); sb != streams_by_session_.end()) {
      sb->second.erase(id);
      if (sb->second.empty()) streams_by_session_.erase(sb);
    }
    st->ended = true;
    st->timer->cancel();
  }
  metrics::stream_ended(st->kind, reason);
  if (tell_agent)
    if (auto s = st->session.lock()) s->send_text(close_chunk(id));
  ev.kind = StreamEvent::Kind::end;
  ev.connection_id = st->connection_id;
  if (st->on_event) st->on_event(std::move(ev));
}

bool Tunnel::stream_send(const std::string& id, const std::string& data, int stream_id) {
  std::shared_ptr<Stream> st;
  {
    std::lock_guard lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return false;
    st = it->second;
  }
  auto s = st->session.lock();
  if (!s) return false;
  nlohmann::json j = {{"requestID", id}, {"data", base64_encode(data)}};
  if (stream_id) j["streamId"] = stream_id;
  metrics::stream_bytes("to_agent", data.size());
  return s->send_text(std::make_shared<const std::string>(j.dump()));
}

void Tunnel::stream_consumed(const std::string& id, size_t n) {
  std::shared_ptr<AgentHandle> s;
  uint64_t credit = 0;
  {
    std::lock_guard lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    auto& st = *it->second;
    st.consumed += n;
    if (!st.flow_controlled) return;
    st.credit_pending += n;
    // Credit goes back in batches of a quarter window, so that small chunks do not cost a frame each.
    if (st.credit_pending < std::max<size_t>(1, st.window / 4)) return;
    credit = st.credit_pending;
    st.credit_pending = 0;
    st.granted += credit;
    s = st.session.lock();
  }
  if (s) s->send_text(std::make_shared<const std::string>(nlohmann::json({{"requestID", id}, {"credit", credit}}).dump()));
}

void Tunnel::stream_close(const std::string& id) {
  std::shared_ptr<Stream> st;
  {
    std::lock_guard lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    st = it->second;
    st->on_event = nullptr;  // the caller asked: it wants no end event
  }
  end_stream(id, StreamEvent{}, true, "caller_gone");
}

}  // namespace cg::session
