#include "session/agent_session.hpp"

#include <boost/asio/post.hpp>

#include <atomic>
#include <deque>
#include <optional>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/thread_annotations.hpp"
#include "session/lean_tls.hpp"
#include "session/upgrade_handoff.hpp"

namespace cg::session {

void UpgradeHandoffDeleter::operator()(UpgradeHandoff* p) const { delete p; }

namespace {
using namespace cg::net;
using steady = std::chrono::steady_clock;
std::atomic<uint64_t> g_serial{0};

int64_t to_ns(SysTime t) { return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count(); }

// Capability tokens: split on commas and whitespace; unknown tokens are kept and ignored.
std::set<std::string> parse_capabilities(std::string_view v) {
  std::set<std::string> caps;
  std::string tok;
  for (char c : std::string(v) + ",") {
    if (c == ',' || c == ' ' || c == '\t') {
      if (!tok.empty() && caps.size() < 16 && tok.size() <= 64) caps.insert(tok);
      tok.clear();
    } else {
      tok += c;
    }
  }
  return caps;
}

// Every event goes through next() (session_machine.hpp), which decides the phase and the actions;
// perform() runs them. The socket, its timers and the write queue are touched on the connection's
// strand only (the socket's executor: the acceptor gives each connection its own strand, and the
// timers and Beast's handshake timer take that executor). close() is the one event from other
// threads: its actions (leave routing, post the close frame to the strand) are thread-safe.
class AgentSession final : public AgentHandle, public std::enable_shared_from_this<AgentSession> {
 public:
  AgentSession(UpgradeHandoff& h, AgentIdentity id, const AgentSessionOptions& opts, SessionRegistry& registry,
               std::shared_ptr<FrameHandler> handler)
      : ws_(std::move(h.stream)),
        req_(std::move(h.request)),
        id_(std::move(id)),
        caps_(parse_capabilities(req_[kCapabilitiesHeader])),
        opts_(opts),
        registry_(registry),
        handler_(std::move(handler)),
        serial_(++g_serial),
        connected_at_(std::chrono::system_clock::now()),
        last_seen_ns_(to_ns(connected_at_)),
        ping_timer_(ws_.get_executor()),
        deadline_timer_(ws_.get_executor()),
        expiry_timer_(ws_.get_executor()),
        close_timer_(ws_.get_executor()) {}

  void start() {
    if (!ws_.next_layer().setup_error().empty()) return dispatch(ev::UpgradeFailed{ws_.next_layer().setup_error()});
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::max<std::chrono::seconds>(
        std::chrono::duration_cast<std::chrono::seconds>(opts_.handshake_timeout), std::chrono::seconds(1));
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    // The message limit is counted by the session itself (Received), not by Beast: when Beast hits its
    // own limit it sends 1009 and tears the TLS stream down at once, while the agent may still be
    // sending the rest of its message; the teardown's error then replaces message_too_big (so the
    // close was reported as a lost connection) and the reset can reach the agent before the close frame
    // does (1006). Here the session stops one byte past the limit and closes with 1009 gracefully.
    ws_.read_message_max(0);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "cluster-gateway"); }));
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      // The agent's close frame (or its answer to ours): Beast answers it and tears the stream down
      // before the read completes; the session leaves routing and status now.
      if (kind == websocket::frame_type::pong) dispatch(ev::Pong{steady::now(), ping_sent_});
      else if (kind == websocket::frame_type::close)
        dispatch(ev::AgentCloseFrame{ws_.reason().code, ws_.reason().reason.c_str()});
    });
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) {
      self->req_ = UpgradeRequest{};  // not needed after the handshake (capabilities are parsed)
      if (ec) return self->dispatch(ev::UpgradeFailed{ec.message()});
      self->dispatch(ev::Upgraded{steady::now()});
    });
  }

  // AgentHandle
  uint64_t serial() const override { return serial_; }
  const std::string& connection_id() const override { return id_.connection_id; }
  const std::string& plane_type() const override { return id_.plane_type; }
  const std::string& plane_id() const override { return id_.plane_id; }
  SysTime connected_at() const override { return connected_at_; }
  SysTime last_seen() const override {
    return SysTime(std::chrono::duration_cast<SysTime::duration>(std::chrono::nanoseconds(last_seen_ns_.load())));
  }
  const tls::PeerChain& peer() const override { return id_.peer; }
  bool closing() const override { return life_.phase() >= SessionPhase::closing; }
  bool has_capability(std::string_view c) const override { return caps_.count(std::string(c)) > 0; }
  std::set<std::string> capabilities() const override { return caps_; }
  void set_draining() override { draining_ = true; }
  bool draining() const override { return draining_; }

  using AgentHandle::close;
  void close(uint16_t code, std::string reason, CloseCause cause) override {
    dispatch(ev::GatewayClose{code, std::move(reason), cause});
  }

  bool send_text(std::shared_ptr<const std::string> frame) override {
    if (closing()) return false;
    size_t n = frame->size();
    if (queued_bytes_.fetch_add(n) + n > opts_.max_write_queue_bytes) {
      queued_bytes_.fetch_sub(n);
      log::warn("agent write queue full; frame refused", fields({{"queuedBytes", queued_bytes_.load()}}));
      return false;
    }
    enqueue(std::move(frame));
    return true;
  }

 private:
  nlohmann::json fields(nlohmann::json extra = nlohmann::json::object()) const {
    extra["planeType"] = id_.plane_type;
    extra["planeID"] = id_.plane_id;
    extra["connectionID"] = id_.connection_id;
    return extra;
  }

  void dispatch(const SessionEvent& e) {
    for (const SessionAction& a : life_.apply(e, opts_).actions) perform(a);
  }

  void perform(const SessionAction& a) {
    switch (a.what) {
      case Do::note: return note(a);
      case Do::register_session: return register_session();
      case Do::count_opened: metrics::handshake("accepted", "ok"); return metrics::session_opened(id_.plane_type, id_.plane_id);
      case Do::read: return do_read();
      case Do::deliver: {
        // The handler sees the message where it was read (flat_buffer is contiguous): no copy.
        auto d = buffer_.data();
        if (handler_) handler_->on_text(*this, std::string_view(static_cast<const char*>(d.data()), d.size()));
        return discard_input();
      }
      case Do::discard_input: return discard_input();
      case Do::arm_ping:
        return arm(ping_timer_, heartbeat_align(steady::now() + opts_.heartbeat_interval, opts_.heartbeat_interval),
                   [](AgentSession& s) { s.dispatch(ev::PingDue{steady::now()}); });
      case Do::arm_deadline:
        return arm(deadline_timer_, heartbeat_align(last_pong_ + opts_.heartbeat_timeout, opts_.heartbeat_interval),
                   [](AgentSession& s) {
                     s.dispatch(ev::DeadlineDue{steady::now(), s.last_pong_});
                   });
      case Do::arm_expiry: {
        // Timers take at most ~292 years; certificates far in the future are capped at 10 years.
        auto left = std::clamp<Duration>(id_.peer.not_after() - std::chrono::system_clock::now(), Duration(0),
                                         std::chrono::hours(24 * 3650));
        return arm(expiry_timer_, steady::now() + left, [](AgentSession& s) {
          s.dispatch(ev::ExpiryDue{std::chrono::system_clock::now(), s.id_.peer.not_after()});
        });
      }
      case Do::arm_close_timer:
        return arm(close_timer_, steady::now() + opts_.close_timeout, [](AgentSession& s) { s.dispatch(ev::CloseTimeout{}); });
      case Do::stop_timers:
        for (auto* t : {&ping_timer_, &deadline_timer_, &expiry_timer_, &close_timer_}) t->cancel();
        return;
      case Do::send_ping:
        ping_sent_ = a.at;
        return ws_.async_ping({}, [self = shared_from_this()](beast::error_code ec) {
          self->dispatch(ev::PingWritten{ec ? ec.message() : std::string()});
        });
      case Do::record_pong: last_pong_ = a.at; return touch();
      case Do::record_rtt: ping_sent_.reset(); return metrics::heartbeat_rtt(std::chrono::duration<double>(a.span).count());
      case Do::send_goaway: {
        auto f = std::make_shared<const std::string>(R"({"type":"goaway","reason":"gateway draining"})");
        queued_bytes_ += f->size();
        return enqueue(std::move(f));
      }
      case Do::leave_routing: return leave_routing(a.cause, a.text);
      case Do::post_close_frame:
        return asio::post(ws_.get_executor(), [self = shared_from_this(), code = a.code, reason = a.text]() {
          self->dispatch(ev::CloseFrameDue{code, reason});
        });
      case Do::send_close_frame:
      case Do::close_and_wait:
        return ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(a.code), a.text),
                               [self = shared_from_this(), wait = a.what == Do::close_and_wait](beast::error_code ec) {
                                 if (wait) return self->dispatch(ev::SocketDone{});
                                 self->dispatch(ev::CloseFrameSent{ec ? ec.message() : std::string()});
                               });
      case Do::teardown: return teardown();
      case Do::done: return dispatch(ev::SocketDone{});
      case Do::forget: return forget(a.cause);
    }
  }

  void note(const SessionAction& a) {
    switch (a.note) {
      case Note::none: return;
      case Note::upgrade_failed:
        return log::warn("websocket upgrade failed", fields({{"reason", a.text}, {"remote", id_.remote}}));
      case Note::draining: return log::info("agent upgraded during shutdown; closing", fields());
      case Note::too_big:
        return log::warn("agent message larger than the limit; closing 1009",
                         fields({{"limit", opts_.max_message_size}, {"received", buffer_.size()}}));
      case Note::heartbeat_timeout:
        return log::warn("agent heartbeat timeout", fields({{"timeout", format_go_duration(opts_.heartbeat_timeout)}}));
      case Note::certificate_expired: return log::warn("agent client certificate expired; closing", fields());
      case Note::close_timeout:
        return log::debug("agent did not complete the close in time; closing the socket",
                          fields({{"closeTimeout", format_go_duration(opts_.close_timeout)}}));
      case Note::ping_failed: return log::debug("ping failed", fields({{"reason", a.text}}));
    }
  }

  void register_session() {
    nlohmann::json crs = nlohmann::json::array(), caps = nlohmann::json::array();
    for (const auto& k : id_.authorized) crs.push_back(k);
    for (const auto& c : caps_) caps.push_back(c);
    log::info("agent connected successfully", fields({{"validCRs", crs},
                                                      {"remote", id_.remote},
                                                      {"tlsResumed", id_.tls_start == TlsStart::resumed},
                                                      {"capabilities", caps},
                                                      {"certificateSubject", id_.peer.subject()},
                                                      {"certificateIssuer", id_.peer.issuer()},
                                                      {"certificateNotAfter", format_rfc3339(id_.peer.not_after())}}));
    if (registry_.add(shared_from_this(), id_.authorized)) dispatch(ev::Registered{});
    else dispatch(ev::AdmissionRefused{});
  }

  // The close starts (on whichever thread decided it). The session leaves routing and status before
  // this returns (registry begin_close: its disconnected event makes the status writer write the
  // CRs), and what was pending on it fails now rather than after the teardown. A session the
  // registry refused (admission closed) was never counted.
  void leave_routing(CloseCause cause, const std::string& text) {
    closing_since_ = steady::now();
    {
      cg::MutexLock lk(close_mu_);
      close_reason_ = text;
    }
    if (registry_.begin_close(*this, cause)) {
      metrics::session_closed(id_.plane_type, id_.plane_id, metric_label(cause));
      if (handler_) handler_->on_closed(*this);
    }
  }

  // A frame or pong arrived. The registry hears of it once per second of the clock (status times
  // have that resolution; the first frame of a second truncates to the same time as the last).
  void touch() {
    const auto now = std::chrono::system_clock::now();
    const int64_t ns = to_ns(now);
    last_seen_ns_.store(ns);
    const int64_t sec = ns / 1000000000;
    if (heard_sec_.exchange(sec) != sec) registry_.heard(*this, now);
  }

  // Reads at most one byte past the limit; a message is read in pieces until it is done.
  void do_read() {
    size_t room = opts_.max_message_size + 1 - std::min(buffer_.size(), opts_.max_message_size);
    ws_.async_read_some(buffer_, std::min<size_t>(room, 1u << 20), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec == websocket::error::closed)
        return self->dispatch(ev::ReadClosed{self->ws_.reason().code, self->ws_.reason().reason.c_str()});
      if (ec) return self->dispatch(ev::ReadFailed{ec.message()});
      self->touch();
      metrics::bytes_in(n);
      self->dispatch(ev::Received{self->buffer_.size(), self->ws_.is_message_done()});
    });
  }

  // Idle sessions keep no large read buffer: anything above a typical small frame is given back.
  void discard_input() {
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > 16 * 1024) buffer_.shrink_to_fit();
  }

  // A cancelled timer (stop_timers, or armed again) makes no event.
  template <class OnFire>
  void arm(asio::steady_timer& t, steady::time_point when, OnFire on_fire) {
    t.expires_at(when);
    t.async_wait([self = shared_from_this(), on_fire](beast::error_code ec) {
      if (!ec) on_fire(*self);
    });
  }

  // Frames are written one at a time, in order: the queue's front is the frame being written.
  // queued_bytes_ counts every frame from send_text until it leaves the queue.
  void enqueue(std::shared_ptr<const std::string> frame) {
    asio::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      if (self->life_.phase() == SessionPhase::closed) return void(self->queued_bytes_.fetch_sub(frame->size()));
      self->queue_.push_back(std::move(frame));
      if (self->queue_.size() == 1) self->do_write();
    });
  }

  void do_write() {
    metrics::bytes_out(queue_.front()->size());
    ws_.text(true);
    ws_.async_write(asio::buffer(*queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->queued_bytes_.fetch_sub(self->queue_.front()->size());
      self->queue_.pop_front();
      if (ec || self->life_.phase() == SessionPhase::closed) {
        for (const auto& f : self->queue_) self->queued_bytes_.fetch_sub(f->size());
        self->queue_.clear();
        if (ec) self->dispatch(ev::WriteFailed{ec.message()});
      } else if (!self->queue_.empty()) {
        self->do_write();
      }
    });
  }

  void teardown() {
    beast::error_code ignored;
    ws_.next_layer().next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    ws_.next_layer().next_layer().close(ignored);
  }

  // Closed, on the strand: the socket's last operation has ended.
  void forget(CloseCause cause) {
    registry_.remove(*this);
    auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now() - connected_at_);
    auto closing_for = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - closing_since_.load());
    std::string reason = [&] {
      cg::MutexLock lk(close_mu_);
      return close_reason_;
    }();
    log::info("agent disconnected", fields({{"reason", reason},
                                            {"cause", std::string(to_string(cause))},
                                            {"connectedForMs", lived.count()},
                                            {"closingForMs", closing_for.count()}}));
    teardown();
  }

  websocket::stream<LeanTls> ws_;
  UpgradeRequest req_;
  AgentIdentity id_;
  const std::set<std::string> caps_;
  std::atomic<bool> draining_{false};  // set_draining()
  AgentSessionOptions opts_;
  SessionRegistry& registry_;
  std::shared_ptr<FrameHandler> handler_;
  const uint64_t serial_;
  const SysTime connected_at_;
  std::atomic<int64_t> last_seen_ns_;
  std::atomic<int64_t> heard_sec_{0};  // the second of the last frame the registry heard of (touch())
  SessionLifecycle life_;
  // Strand only.
  steady::time_point last_pong_{};
  std::optional<steady::time_point> ping_sent_;  // the unanswered ping, for the RTT
  asio::steady_timer ping_timer_, deadline_timer_, expiry_timer_, close_timer_;
  beast::flat_buffer buffer_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::atomic<size_t> queued_bytes_{0};
  // Human text only; set by the thread that starts the close, read when the session is forgotten.
  cg::Mutex close_mu_;
  std::string close_reason_ CG_GUARDED_BY(close_mu_);
  std::atomic<steady::time_point> closing_since_{};
};
}  // namespace

void start_agent_session(UpgradeHandoffPtr handoff, AgentIdentity identity, const AgentSessionOptions& options,
                         SessionRegistry& registry, std::shared_ptr<FrameHandler> handler) {
  auto s = std::make_shared<AgentSession>(*handoff, std::move(identity), options, registry, std::move(handler));
  s->start();
}

}  // namespace cg::session
