#include "session/tunnel.hpp"
#include "common/json_text.hpp"

#include <algorithm>
#include <cctype>

#include "common/base64.hpp"
#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "session/frames.hpp"

namespace cg::session {
using namespace cg::net;

struct Tunnel::Pending {
  explicit Pending(asio::io_context& ioc) : strand(asio::make_strand(ioc)), timer(strand) {}
  uint64_t serial = 0;
  std::string connection_id;
  std::string plane_type, plane_id;
  std::function<void(TunnelReply)> done;
  asio::strand<asio::io_context::executor_type> strand;  // the request's own: its timeout runs here
  asio::steady_timer timer;  // the reply deadline, on `strand`; armed and cancelled under mu_
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
  std::string out = to_json_text(j);
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

namespace {
// RFC 9110 §5.6.2 tchar.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    switch (c) {
      case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-': case '.':
      case '^': case '_': case '`': case '|': case '~': continue;
      default: return false;
    }
  }
  return true;
}
// RFC 9110 §5.5 field-value: VCHAR, obs-text, SP and HTAB; no CR, LF, NUL or other controls.
bool is_field_value(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}
}  // namespace

bool decode_tunnel_response(AgentFrame& f, TunnelReply& out, std::string& error) {
  if (f.status_code != Member::value || f.status_code_value < 100 || f.status_code_value > 999) {
    error = "statusCode missing or not an HTTP status";
    return false;
  }
  out.status_code = static_cast<int>(f.status_code_value);
  if (f.headers == Member::wrong_type) {
    error = "headers is not an object";
    return false;
  }
  if (f.header_member_not_array) {
    error = "header values must be arrays of strings";
    return false;
  }
  if (f.headers_over_limit) {
    error = "response headers exceed " + std::to_string(kMaxAgentHeaderBytes) + " bytes, " +
            std::to_string(kMaxAgentHeaderCount) + " fields or a name of " + std::to_string(kMaxAgentHeaderName) + " bytes";
    return false;
  }
  for (const auto& [k, v] : f.header_list) {
    if (!is_token(k)) {
      error = "response header name is not an HTTP token";
      return false;
    }
    if (!is_field_value(v)) {
      error = "response header " + k + " has a control character (CR, LF, NUL) in its value";
      return false;
    }
  }
  if (f.body == Member::wrong_type) {
    error = "body is not a base64 string";
    return false;
  }
  std::string body;
  if (f.body == Member::value) {
    auto d = base64_decode(f.body_b64);
    if (!d) {
      error = "body is not valid base64";
      return false;
    }
    body = std::move(*d);
    std::string().swap(f.body_b64);
  }
  if (out.status_code < 200) {
    error = "status " + std::to_string(out.status_code) + " is informational, not a final response";
    return false;
  }
  if (!body.empty() && (out.status_code == 204 || out.status_code == 304)) {
    error = "status " + std::to_string(out.status_code) + " must not carry a body";
    return false;
  }
  out.headers = std::move(f.header_list);
  out.body = std::move(body);
  out.agent_error = std::move(f.error_message);
  return true;
}

struct Tunnel::Stream {
  Stream(asio::io_context& ioc, StreamConfig c) : machine(std::move(c)), strand(asio::make_strand(ioc)), timer(strand) {}
  uint64_t serial = 0;
  std::weak_ptr<AgentHandle> session;
  std::string connection_id, plane_type, plane_id, kind;
  StreamMachine machine;                      // guarded by mu_
  std::function<void(StreamEvent)> on_event;  // set before the stream is shared; runs on `strand` only
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;        // the first-answer deadline, on `strand`; armed and cancelled under mu_
  std::atomic<bool> muted{false};  // stream_close was called: no event starts any more
};

namespace {
std::shared_ptr<const std::string> close_chunk(const std::string& id) {
  return std::make_shared<const std::string>(to_json_text(nlohmann::json({{"requestID", id}, {"data", nullptr}, {"isClose", true}})));
}
}  // namespace

// Posts a batch of a stream's events to its strand (nothing when empty); each runs unless
// stream_close() muted the stream first.
void Tunnel::post_stream_events(const std::shared_ptr<Stream>& st, std::vector<StreamEvent> events) {
  if (events.empty()) return;
  asio::post(st->strand, [st, events = std::move(events)]() mutable {
    for (auto& e : events) {
      if (st->muted.load()) return;
      st->on_event(std::move(e));
    }
  });
}

template <class Input>
void Tunnel::drive(const std::string& id, Input&& input) {
  cg::MutexLock lk(mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto st = it->second;
  StreamActions a = input(*st);
  apply_locked(id, st, a);
  lk.unlock();
  apply_unlocked(id, st, std::move(a));
}

void Tunnel::apply_locked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions& a) {
  if (a.started || a.ended) st->timer.cancel();
  if (a.ended) {
    if (auto it = streams_.find(id); it != streams_.end() && it->second == st) streams_.erase(it);
    if (auto sb = streams_by_session_.find(st->serial); sb != streams_by_session_.end()) {
      sb->second.erase(id);
      if (sb->second.empty()) streams_by_session_.erase(sb);
    }
  }
  size_t to_caller = 0;
  for (const auto& e : a.events)
    if (e.kind == StreamEvent::Kind::data) to_caller += e.data.size();
  if (to_caller) metrics::stream_bytes("to_caller", to_caller);
  // Events are posted in the order the machine decided them: under mu_ while the stream lives. Once
  // it ended no later input yields an event, so the last ones may wait until the agent's close chunk
  // is queued and the end is counted (the caller learns of the end after the agent was told):
  // apply_unlocked() posts them.
  if (!a.ended) post_stream_events(st, std::move(a.events));
}

void Tunnel::apply_unlocked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions a) {
  std::shared_ptr<AgentHandle> s = a.credit || a.close_chunk ? st->session.lock() : nullptr;
  if (s && a.credit)
    s->send_text(std::make_shared<const std::string>(to_json_text(nlohmann::json({{"requestID", id}, {"credit", a.credit}}))));
  if (!a.ended) return;
  if (*a.ended == StreamEnd::flow_control || *a.ended == StreamEnd::too_slow)
    log::warn("stream ended", {{"requestID", id}, {"planeType", st->plane_type}, {"planeID", st->plane_id},
                               {"connectionID", st->connection_id}, {"reason", a.events.back().error}});
  metrics::stream_ended(st->kind, to_string(*a.ended));
  if (s && a.close_chunk) s->send_text(close_chunk(id));
  post_stream_events(st, std::move(a.events));
}

Tunnel::Tunnel(asio::io_context& ioc, SessionRegistry& registry, TunnelLimits limits)
    : ioc_(ioc), registry_(registry), limits_(limits) {}
Tunnel::~Tunnel() = default;

size_t Tunnel::pending() const {
  cg::MutexLock lk(mu_);
  return pending_.size();
}

std::string Tunnel::send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                         const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done) {
  bool plane_has = false;
  auto session = registry_.pick(plane_type, plane_id, cr_key, plane_has);
  if (!session) {
    TunnelReply r;
    r.outcome = plane_has ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent;
    asio::post(ioc_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return {};
  }
  size_t load = 0;
  {
    cg::MutexLock lk(mu_);
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
    asio::post(ioc_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return {};
  }
  const std::string id = uuid_v4();
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

void Tunnel::cancel(const std::string& id) {
  TunnelReply r;
  r.outcome = TunnelReply::Outcome::cancelled;
  complete(id, std::move(r), nullptr);
}

void Tunnel::complete(const std::string& id, TunnelReply reply, const AgentHandle* from) {
  std::shared_ptr<Pending> p;
  {
    cg::MutexLock lk(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      if (from) metrics::frames_dropped("unknown_request");
      if (from)
        agent_warn(*from, "received HTTP tunnel response for unknown request",
                  {{"requestID", id}, {"planeType", from->plane_type()}, {"planeID", from->plane_id()},
                   {"connectionID", from->connection_id()}});
      return;
    }
    if (from && it->second->serial != from->serial()) {
      metrics::frames_dropped("wrong_session");
      agent_warn(*from, "reply from a session that was not asked; dropped",
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
    p->timer.cancel();
  }
  metrics::tunnel_inflight(-1);
  reply.request_id = id;
  reply.connection_id = p->connection_id;
  asio::post(ioc_, [done = std::move(p->done), reply = std::move(reply)]() mutable { done(std::move(reply)); });
}

bool Tunnel::expects_reply(const std::string& id, const AgentHandle& from) {
  cg::MutexLock lk(mu_);
  auto it = pending_.find(id);
  return it != pending_.end() && it->second->serial == from.serial();
}

void Tunnel::on_text(AgentHandle& s, std::string_view text) {
  try {
    handle_text(s, text);
  } catch (const std::exception& e) {
    // Nothing an agent sends may take more than its own connection down.
    metrics::handler_exception("agent_frame");
    log::error("agent frame handling failed; closing the agent connection",
               {{"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()},
                {"reason", e.what()}});
    s.close(1011, "internal error handling a frame");
  }
}

void Tunnel::handle_text(AgentHandle& s, std::string_view text) {
  auto f = classify_agent_frame(text);
  if (f.kind == FrameKind::invalid) {
    metrics::frames_dropped("invalid");
    agent_warn(s, "invalid frame from agent dropped", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                    {"connectionID", s.connection_id()}, {"reason", f.error}});
    return;
  }
  if (f.kind == FrameKind::stream_chunk) {
    if (on_stream_frame(s, f)) return;
    metrics::frames_dropped("unknown_stream");
    agent_warn(s, "stream chunk for an unknown stream dropped", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                               {"connectionID", s.connection_id()}, {"requestID", f.request_id}});
    return;
  }
  if (on_stream_frame(s, f)) return;
  // The request is looked up before its body is decoded: a reply nobody waits for costs no decoding.
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
    agent_warn(s, "malformed HTTP tunnel response", {{"planeType", s.plane_type()}, {"planeID", s.plane_id()},
                                                 {"connectionID", s.connection_id()}, {"requestID", f.request_id}, {"reason", err}});
    r = TunnelReply{};
    r.outcome = TunnelReply::Outcome::send_failed;
    r.agent_error = "malformed response from agent: " + err;
  }
  complete(f.request_id, std::move(r), &s);
}

// Warnings an agent's frames cause are limited per connection and message (a flood of bad frames
// costs a summary line with the count, not a line each).
void Tunnel::agent_warn(const AgentHandle& s, std::string_view msg, const nlohmann::json& fields) {
  warn_limit_.warn(s.connection_id() + "|" + std::string(msg), msg, fields,
                   {{"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()}});
}

void Tunnel::on_closed(AgentHandle& s) {
  warn_limit_.flush(s.connection_id() + "|");
  std::set<std::string> ids, sids;
  {
    cg::MutexLock lk(mu_);
    if (auto it = by_session_.find(s.serial()); it != by_session_.end()) ids = it->second;
    if (auto it = streams_by_session_.find(s.serial()); it != streams_by_session_.end()) sids = it->second;
  }
  for (const auto& id : ids) {
    TunnelReply r;
    r.outcome = TunnelReply::Outcome::connection_closed;
    complete(id, std::move(r), nullptr);
  }
  for (const auto& id : sids) drive(id, [](Stream& st) { return st.machine.on_session_lost(); });
}

// ---- streams -------------------------------------------------------------------------------

size_t Tunnel::streams() const {
  cg::MutexLock lk(mu_);
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
    asio::post(ioc_, [cb = std::move(on_event), ev = std::move(ev)]() mutable { cb(std::move(ev)); });
    return std::string();
  };
  if (!session) {
    if (authorized) return fail(TunnelReply::Outcome::not_capable, "no connected agent supports streaming");
    return fail(plane_has ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent, "");
  }
  StreamConfig cfg;
  cfg.mode = req.mode;
  cfg.flow_controlled = session->has_capability(kStreamCapability);
  cfg.window = req.window;
  cfg.max_unconsumed = req.max_unconsumed;
  cfg.deadline = std::chrono::steady_clock::now() + req.first_timeout;
  cfg.connection_id = session->connection_id();
  auto st = std::make_shared<Stream>(ioc_, std::move(cfg));
  st->serial = session->serial();
  st->session = session;
  st->connection_id = session->connection_id();
  st->plane_type = plane_type;
  st->plane_id = plane_id;
  st->kind = req.kind;
  // Upstream uses the gateway request ID as the stream's requestID; one that is already in use (a
  // caller-chosen X-Request-ID) is replaced by a fresh one.
  std::string id = http_mode || req.request.gateway_request_id.empty() ? uuid_v4() : req.request.gateway_request_id;
  size_t open_now = 0;
  {
    cg::MutexLock lk(mu_);
    if (auto sb = streams_by_session_.find(st->serial); sb != streams_by_session_.end()) open_now = sb->second.size();
    if (open_now < limits_.max_streams_per_session) {
      while (streams_.count(id) || pending_.count(id)) id = "gw-" + random_hex(8);
      st->on_event = std::move(on_event);
      streams_[id] = st;
      streams_by_session_[st->serial].insert(id);
      st->timer.expires_at(st->machine.deadline());
      st->timer.async_wait([this, id](beast::error_code ec) {
        if (!ec) drive(id, [](Stream& s) { return s.machine.on_timer(std::chrono::steady_clock::now()); });
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
    if (session->has_capability(kStreamCapability)) j["window"] = req.window;
  }
  auto frame = std::make_shared<const std::string>(to_json_text(j));
  if (!session->send_text(frame)) {
    drive(id, [](Stream& s) { return s.machine.on_send_failed(); });
    return {};
  }
  return id;
}

// The agent's head, answer or chunk for a stream: decoded here, unlocked; decided by the stream's
// machine under mu_; applied by apply_locked() and apply_unlocked().
bool Tunnel::on_stream_frame(AgentHandle& s, AgentFrame& frame) {
  const std::string& id = frame.request_id;
  std::shared_ptr<Stream> st;
  {
    cg::MutexLock lk(mu_);
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
    agent_warn(s, "stream frame from a session that does not carry the stream; dropped", fields());
    return true;
  }
  // Decoded unlocked, then decided under mu_.
  StreamChunk chunk;
  TunnelReply r;
  std::string err;
  const bool is_chunk = frame.kind == FrameKind::stream_chunk;
  bool ok = true;
  if (is_chunk) chunk = decode_stream_chunk(frame);
  else ok = decode_tunnel_response(frame, r, err);
  StreamActions a;
  {
    cg::MutexLock lk(mu_);
    if (is_chunk) a = st->machine.on_chunk(std::move(chunk));
    else a = ok ? st->machine.on_response(std::move(r), frame.stream) : st->machine.on_malformed_response(err);
    if (!a.dropped) apply_locked(id, st, a);
  }
  if (a.dropped) {
    metrics::frames_dropped("invalid");
    agent_warn(s, "unexpected response frame on a stream; dropped", fields());
    return true;
  }
  apply_unlocked(id, st, std::move(a));
  return true;
}

bool Tunnel::stream_send(const std::string& id, const std::string& data, int stream_id) {
  std::shared_ptr<Stream> st;
  {
    cg::MutexLock lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return false;
    st = it->second;
  }
  auto s = st->session.lock();
  if (!s) return false;
  nlohmann::json j = {{"requestID", id}, {"data", base64_encode(data)}};
  if (stream_id) j["streamId"] = stream_id;
  metrics::stream_bytes("to_agent", data.size());
  return s->send_text(std::make_shared<const std::string>(to_json_text(j)));
}

void Tunnel::stream_consumed(const std::string& id, size_t n) {
  drive(id, [n](Stream& st) { return st.machine.on_consumed(n); });
}

void Tunnel::stream_close(const std::string& id) {
  drive(id, [](Stream& st) {
    st.muted = true;  // the caller asked: no event starts any more, not even one already posted
    return st.machine.on_caller_gone();
  });
}

}  // namespace cg::session
