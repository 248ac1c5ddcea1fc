#include "session/tunnel_streams.hpp"

#include <atomic>

#include "common/base64.hpp"
#include "common/ids.hpp"
#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"

namespace cg::session {
using namespace cg::net;

struct StreamTable::Stream {
  Stream(asio::io_context& ioc, StreamConfig c) : machine(std::move(c)), strand(asio::make_strand(ioc)), timer(strand) {}
  uint64_t serial = 0;
  std::weak_ptr<AgentHandle> session;
  std::string connection_id, plane_type, plane_id, kind;
  StreamMachine machine;  // guarded by mu_
  std::function<void(StreamEvent)> on_event;  // set before the stream is shared; runs on `strand` only
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;  // the first-answer deadline, on `strand`; armed and cancelled under mu_
  std::atomic<bool> muted{false};  // close() was called: no event starts any more
};

namespace {
std::shared_ptr<const std::string> close_chunk(const std::string& id) {
  return std::make_shared<const std::string>(
      to_json_text(nlohmann::json({{"requestID", id}, {"data", nullptr}, {"isClose", true}})));
}
}  // namespace

StreamTable::StreamTable(asio::io_context& ioc, SessionRegistry& registry, size_t max_per_session, AgentWarn warn,
                         std::function<bool(const std::string&)> id_in_use)
    : ioc_(ioc),
      registry_(registry),
      max_per_session_(max_per_session),
      warn_(std::move(warn)),
      id_in_use_(std::move(id_in_use)) {}
StreamTable::~StreamTable() = default;

size_t StreamTable::size() const {
  cg::MutexLock lk(mu_);
  return streams_.size();
}

// Posts a batch of a stream's events to its strand (nothing when empty); each runs unless close()
// muted the stream first.
void StreamTable::post_events(const std::shared_ptr<Stream>& st, std::vector<StreamEvent> events) {
  if (events.empty()) return;
  asio::post(st->strand, [st, events = std::move(events)]() mutable {
    for (auto& e : events) {
      if (st->muted.load()) return;
      st->on_event(std::move(e));
    }
  });
}

template <class Input>
void StreamTable::drive(const std::string& id, Input&& input) {
  cg::MutexLock lk(mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto st = it->second;
  StreamActions a = input(*st);
  apply_locked(id, st, a);
  lk.unlock();
  apply_unlocked(id, st, std::move(a));
}

void StreamTable::apply_locked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions& a) {
  if (a.started || a.ended) st->timer.cancel();
  if (a.ended) {
    if (auto it = streams_.find(id); it != streams_.end() && it->second == st) streams_.erase(it);
    if (auto sb = by_session_.find(st->serial); sb != by_session_.end()) {
      sb->second.erase(id);
      if (sb->second.empty()) by_session_.erase(sb);
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
  if (!a.ended) post_events(st, std::move(a.events));
}

void StreamTable::apply_unlocked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions a) {
  std::shared_ptr<AgentHandle> s = a.credit || a.close_chunk ? st->session.lock() : nullptr;
  if (s && a.credit)
    s->send_text(std::make_shared<const std::string>(to_json_text(nlohmann::json({{"requestID", id}, {"credit", a.credit}}))));
  if (!a.ended) return;
  if (*a.ended == StreamEnd::flow_control || *a.ended == StreamEnd::too_slow)
    log::warn("stream ended", {{"requestID", id},
                               {"planeType", st->plane_type},
                               {"planeID", st->plane_id},
                               {"connectionID", st->connection_id},
                               {"reason", a.events.back().error}});
  metrics::stream_ended(st->kind, to_string(*a.ended));
  if (s && a.close_chunk) s->send_text(close_chunk(id));
  post_events(st, std::move(a.events));
}

std::string StreamTable::open(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                              StreamRequest req, std::function<void(StreamEvent)> on_event) {
  const bool http_mode = req.mode == StreamRequest::Mode::http;
  PickMiss miss{};
  auto session = registry_.pick(plane_type, plane_id, cr_key, miss, http_mode ? kStreamCapability : "");
  auto fail = [&](TunnelReply::Outcome o, std::string why) {
    StreamEvent ev;
    ev.outcome = o;
    ev.error = std::move(why);
    if (session) ev.connection_id = session->connection_id();
    asio::post(ioc_, [cb = std::move(on_event), ev = std::move(ev)]() mutable { cb(std::move(ev)); });
    return std::string();
  };
  if (!session) {
    if (miss == PickMiss::not_capable) return fail(TunnelReply::Outcome::not_capable, "no connected agent supports streaming");
    return fail(miss == PickMiss::not_authorized ? TunnelReply::Outcome::not_authorized : TunnelReply::Outcome::no_agent, "");
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
    if (auto sb = by_session_.find(st->serial); sb != by_session_.end()) open_now = sb->second.size();
    if (open_now < max_per_session_) {
      while (streams_.count(id) || id_in_use_(id)) id = "gw-" + random_hex(8);
      st->on_event = std::move(on_event);
      streams_[id] = st;
      by_session_[st->serial].insert(id);
      st->timer.expires_at(st->machine.deadline());
      st->timer.async_wait([this, id](beast::error_code ec) {
        if (!ec) drive(id, [](Stream& s) { return s.machine.on_timer(std::chrono::steady_clock::now()); });
      });
    }
  }
  if (open_now >= max_per_session_) {
    metrics::limit_refused("streams_per_session");
    log::warn("stream refused: agent connection has too many open streams", {{"planeType", plane_type},
                                                                             {"planeID", plane_id},
                                                                             {"connectionID", st->connection_id},
                                                                             {"requestID", req.request.gateway_request_id},
                                                                             {"limit", max_per_session_}});
    return fail(TunnelReply::Outcome::overloaded, "agent connection has " + std::to_string(open_now) + " open streams (limit " +
                                                      std::to_string(max_per_session_) + ")");
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
bool StreamTable::on_frame(AgentHandle& s, AgentFrame& frame) {
  const std::string& id = frame.request_id;
  std::shared_ptr<Stream> st;
  {
    cg::MutexLock lk(mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return false;
    st = it->second;
  }
  auto fields = [&] {
    return nlohmann::json{
        {"requestID", id}, {"planeType", s.plane_type()}, {"planeID", s.plane_id()}, {"connectionID", s.connection_id()}};
  };
  if (st->serial != s.serial()) {
    metrics::frames_dropped("wrong_session");
    warn_(s, "stream frame from a session that does not carry the stream; dropped", fields());
    return true;
  }
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
    warn_(s, "unexpected response frame on a stream; dropped", fields());
    return true;
  }
  apply_unlocked(id, st, std::move(a));
  return true;
}

bool StreamTable::send(const std::string& id, const std::string& data, int stream_id) {
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

void StreamTable::consumed(const std::string& id, size_t n) {
  drive(id, [n](Stream& st) { return st.machine.on_consumed(n); });
}

void StreamTable::close(const std::string& id) {
  drive(id, [](Stream& st) {
    st.muted = true;  // the caller asked: no event starts any more, not even one already posted
    return st.machine.on_caller_gone();
  });
}

void StreamTable::session_lost(uint64_t serial) {
  std::set<std::string> ids;
  {
    cg::MutexLock lk(mu_);
    if (auto it = by_session_.find(serial); it != by_session_.end()) ids = it->second;
  }
  for (const auto& id : ids) drive(id, [](Stream& st) { return st.machine.on_session_lost(); });
}

}  // namespace cg::session
