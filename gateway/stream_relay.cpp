#include "gateway/stream_relay.hpp"

#include <boost/asio/post.hpp>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "gateway/caller_io.hpp"

namespace cg::gateway {

std::string sse_event(std::string_view p) {
  std::string out;
  if (!p.empty() && p.back() == '\n') p.remove_suffix(1);
  size_t pos = 0;
  while (true) {
    size_t n = p.find('\n', pos);
    std::string_view line = p.substr(pos, n == std::string_view::npos ? std::string_view::npos : n - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out += "data: ";
    out += line;
    out += '\n';
    if (n == std::string_view::npos) break;
    pos = n + 1;
  }
  out += '\n';
  return out;
}

StreamRelay::StreamRelay(CallerIo& io, session::Tunnel& tunnel, StreamTarget target)
    : io_(io), tunnel_(tunnel), target_(std::move(target)), wake_(std::make_unique<Wakeup>(io.executor())) {}

StreamRelay::~StreamRelay() = default;

double StreamRelay::seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count(); }

nlohmann::json StreamRelay::fields(nlohmann::json extra) const {
  for (const auto& [k, v] : target_.log_fields.items()) extra[k] = v;
  if (!hop_id_.empty()) extra["hopRequestID"] = hop_id_;
  return extra;
}

awaitable<Next> StreamRelay::run(session::StreamRequest sr, Surface surface, const Spawn& spawn) {
  started_ = std::chrono::steady_clock::now();
  // Events arrive on any thread; they are queued on the connection's strand. The relay outlives
  // this coroutine while the tunnel still holds the callback.
  hop_id_ = tunnel_.open_stream(target_.plane_type, target_.plane_id, target_.cr_key, std::move(sr),
                                [self = shared_from_this(), ex = io_.executor()](session::StreamEvent ev) {
                                  boost::asio::post(ex, [self, ev = std::move(ev)]() mutable {
                                    self->events_.push_back(std::move(ev));
                                    self->wake_->notify();
                                  });
                                });
  io_.await_agent(spawn, [w = weak_from_this()] {
    if (auto self = w.lock()) self->wake_->notify();
  });
  for (;;) {
    while (events_.empty() && !io_.hung_up()) co_await wake_->wait();
    if (io_.hung_up()) co_return caller_gone("the caller went away");
    session::StreamEvent ev = std::move(events_.front());
    events_.pop_front();
    using K = session::StreamEvent::Kind;
    if (ev.kind == K::head) {
      if (surface == Surface::sse) continue;  // not sent on upgrade streams
      if (ev.status_code == 204 || ev.status_code == 304) {
        // A complete bodiless answer (the tunnel refuses these as stream heads): no chunked framing.
        io_.agent_done();
        metrics::tunnel_request(target_.plane_type, ev.status_code, target_.target, seconds());
        session::TunnelReply r;
        r.status_code = ev.status_code;
        r.headers = std::move(ev.headers);
        co_return co_await io_.write(make_proxy_response(std::move(r), true), false);
      }
      bool ok = co_await io_.write_stream_head(make_stream_head(ev.status_code, ev.headers));
      if (!head_written(ok, ev.status_code)) co_return caller_gone("writing the response head failed");
      continue;
    }
    if (ev.kind == K::data) {
      if (surface == Surface::sse && head_ == Head::not_sent) {
        auto res = std::make_shared<StreamHead>(net::http::status::ok, 11);
        res->set(net::http::field::content_type, "text/event-stream");
        res->set(net::http::field::cache_control, "no-cache, no-transform");
        res->set("X-Accel-Buffering", "no");
        bool ok = co_await io_.write_stream_head(res);
        if (!head_written(ok, 200)) co_return caller_gone("writing the response head failed");
      }
      if (ev.data.empty()) continue;  // the wirelogs sentinel, or an empty chunk
      const size_t agent_bytes = ev.data.size();  // credit accounting is on the agent's bytes
      std::string chunk = surface == Surface::sse ? sse_event(ev.data) : std::move(ev.data);
      if (auto ec = co_await io_.write_chunk(chunk)) co_return caller_gone("write to caller failed: " + ec.message());
      tunnel_.stream_consumed(hop_id_, agent_bytes);
      continue;
    }
    co_return co_await ended(std::move(ev), surface);
  }
}

bool StreamRelay::head_written(bool ok, int status) {
  if (!ok) return false;
  head_ = Head::sent;
  head_status_ = status;
  log::info("stream started", fields({{"statusCode", status}}));
  return true;
}

awaitable<Next> StreamRelay::ended(session::StreamEvent ev, Surface surface) {
  io_.agent_done();
  auto f = fields({{"durationMs", static_cast<int64_t>(seconds() * 1000)}});
  if (!ev.connection_id.empty()) f["connectionID"] = ev.connection_id;
  if (head_ == Head::not_sent) {
    auto a = failure_answer(surface, ev.outcome, ev.error, target_.plane_type + "/" + target_.plane_id, target_.cr_key);
    if (a.status == 0) co_return Next::close;  // the caller is gone
    metrics::tunnel_request(target_.plane_type, static_cast<int>(a.status), target_.target, seconds());
    f["statusCode"] = a.status;
    f["reason"] = a.message;
    log::warn(a.log_msg, f);
    co_return co_await io_.error(a.status, a.message, true);
  }
  metrics::tunnel_request(target_.plane_type, head_status_, target_.target, seconds());
  if (!ev.error.empty()) {
    // The head is out: the only way to say "broken" is to end the connection without the last chunk.
    f["reason"] = ev.error;
    log::warn("stream aborted", f);
    co_return Next::close;
  }
  log::info("stream completed", f);
  if (!co_await io_.write_last_chunk()) co_return Next::close;
  // Connection: close was announced. The caller closes; a read still watching for that ends by
  // itself, or by the drain's deadline.
  co_return Next::drain_close;
}

Next StreamRelay::caller_gone(const std::string& why) {
  io_.agent_done();
  log::info("stream caller went away; stream closed", fields({{"reason", why}}));
  tunnel_.stream_close(hop_id_);  // the agent gets a close chunk (nothing if the stream already ended)
  return Next::close;
}

}  // namespace cg::gateway
