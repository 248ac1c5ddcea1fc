#include "session/agent_session.hpp"

#include <atomic>
#include <deque>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "session/upgrade_handoff.hpp"

namespace cg::session {

void UpgradeHandoffDeleter::operator()(UpgradeHandoff* p) const { delete p; }

namespace {
using namespace cg::net;
using steady = std::chrono::steady_clock;
std::atomic<uint64_t> g_serial{0};

int64_t to_ns(SysTime t) { return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count(); }

class AgentSession final : public AgentHandle, public std::enable_shared_from_this<AgentSession> {
 public:
  AgentSession(UpgradeHandoff& h, AgentIdentity id, const AgentSessionOptions& opts, SessionRegistry& registry,
               std::shared_ptr<FrameHandler> handler)
      : ws_(std::move(h.stream)),
        req_(std::move(h.request)),
        id_(std::move(id)),
        opts_(opts),
        registry_(registry),
        handler_(std::move(handler)),
        serial_(++g_serial),
        connected_at_(std::chrono::system_clock::now()),
        last_seen_ns_(to_ns(connected_at_)),
        ping_timer_(ws_.get_executor()),
        deadline_timer_(ws_.get_executor()),
        expiry_timer_(ws_.get_executor()) {
    // Capability tokens: split on commas and whitespace; unknown tokens are kept and ignored.
    std::string v(req_[kCapabilitiesHeader]);
    std::string tok;
    for (char c : v + ",") {
      if (c == ',' || c == ' ' || c == '\t') {
        if (!tok.empty() && caps_.size() < 16 && tok.size() <= 64) caps_.insert(tok);
        tok.clear();
      } else {
        tok += c;
      }
    }
  }

  ~AgentSession() override = default;

  void start() {
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::duration_cast<std::chrono::seconds>(opts_.handshake_timeout);
    if (t.handshake_timeout < std::chrono::seconds(1)) t.handshake_timeout = std::chrono::seconds(1);
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    ws_.read_message_max(opts_.max_message_size);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "cluster-gateway"); }));
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::pong) {
        last_pong_ = steady::now();
        touch();
        if (ping_sent_ != steady::time_point{}) {
          metrics::heartbeat_rtt(std::chrono::duration<double>(last_pong_ - ping_sent_).count());
          ping_sent_ = {};
        }
      }
    });
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
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
  bool closing() const override { return closing_.load(); }
  bool has_capability(std::string_view c) const override { return caps_.count(std::string(c)) > 0; }

  void close(uint16_t code, std::string reason) override {
    if (closing_.exchange(true)) return;
    asio::post(ws_.get_executor(), [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
      self->do_close(code, std::move(reason));
    });
  }

  bool send_text(std::shared_ptr<const std::string> frame) override {
    if (closing_.load()) return false;
    size_t n = frame->size();
    if (queued_bytes_.fetch_add(n) + n > opts_.max_write_queue_bytes) {
      queued_bytes_.fetch_sub(n);
      log::warn("agent write queue full; frame refused", fields({{"queuedBytes", queued_bytes_.load()}}));
      return false;
    }
    asio::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      if (self->finished_) {
        self->queued_bytes_.fetch_sub(frame->size());
        return;
      }
      self->queue_.push_back(std::move(frame));
      if (!self->writing_) self->do_write();
    });
    return true;
  }

 private:
  nlohmann::json fields(nlohmann::json extra = nlohmann::json::object()) const {
    extra["planeType"] = id_.plane_type;
    extra["planeID"] = id_.plane_id;
    extra["connectionID"] = id_.connection_id;
    return extra;
  }

  static std::string reason_class_for(const std::string& r) {
    if (r.rfind("heartbeat timeout", 0) == 0) return "heartbeat_timeout";
    if (r.rfind("agent closed", 0) == 0) return "agent_closed";
    if (r.rfind("closed by gateway", 0) == 0) return "gateway_closed";
    if (r.rfind("message larger", 0) == 0) return "message_too_big";
    if (r.rfind("write failed", 0) == 0) return "write_failed";
    return "connection_lost";
  }

  void touch() { last_seen_ns_.store(to_ns(std::chrono::system_clock::now())); }

  void on_accept(beast::error_code ec) {
    if (ec) {
      log::warn("websocket upgrade failed", fields({{"reason", ec.message()}, {"remote", id_.remote}}));
      finished_ = true;
      return;
    }
    last_pong_ = steady::now();
    touch();
    nlohmann::json crs = nlohmann::json::array();
    for (const auto& k : id_.authorized) crs.push_back(k);
    nlohmann::json caps = nlohmann::json::array();
    for (const auto& c : caps_) caps.push_back(c);
    log::info("agent connected successfully",
              fields({{"validCRs", crs}, {"remote", id_.remote}, {"capabilities", caps}, {"certificateSubject", id_.peer.subject()},
                      {"certificateIssuer", id_.peer.issuer()},
                      {"certificateNotAfter", format_rfc3339(id_.peer.not_after())}}));
    if (!registry_.add(shared_from_this(), id_.authorized)) {
      // The gateway started draining while this upgrade completed: announce it and close.
      log::info("agent upgraded during shutdown; closing", fields());
      registered_ = true;  // lets do_close run; finish() must not unregister what was never added
      admitted_ = false;
      send_text(std::make_shared<const std::string>(R"({"type":"goaway","reason":"gateway draining"})"));
      close(1001, "gateway shutting down");
      do_read();
      return;
    }
    registered_ = true;
    metrics::handshake("accepted", "ok");
    metrics::session_opened(id_.plane_type, id_.plane_id);
    do_read();
    arm_ping();
    arm_deadline();
    arm_expiry();
  }

  void do_read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, size_t n) {
    if (ec) {
      std::string reason;
      if (ec == websocket::error::closed) {
        auto r = ws_.reason();
        reason = closing_ && !close_reason_.empty() ? close_reason_
                                                     : "agent closed the connection (code " + std::to_string(r.code) +
                                                           (r.reason.empty() ? "" : ": " + std::string(r.reason.c_str())) + ")";
      } else if (!close_reason_.empty()) {
        reason = close_reason_;
      } else if (ec == websocket::error::message_too_big || ec == websocket::error::buffer_overflow) {
        reason = "message larger than the limit of " + std::to_string(opts_.max_message_size) + " bytes";
      } else {
        reason = "connection lost: " + ec.message();
      }
      finish(reason);
      return;
    }
    touch();
    metrics::bytes_in(n);
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(n);
    if (buffer_.capacity() > 64 * 1024) buffer_.shrink_to_fit();
    if (handler_) handler_->on_text(*this, text);
    if (!finished_) do_read();
  }

  void arm_ping() {
    ping_timer_.expires_after(opts_.heartbeat_interval);
    ping_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_ || self->closing_) return;
      if (!self->ping_pending_) {
        self->ping_pending_ = true;
        self->ping_sent_ = steady::now();
        self->ws_.async_ping({}, [self](beast::error_code pec) {
          self->ping_pending_ = false;
          if (pec && !self->finished_) log::debug("ping failed", self->fields({{"reason", pec.message()}}));
        });
      }
      self->arm_ping();
    });
  }

  void arm_deadline() {
    deadline_timer_.expires_at(last_pong_ + opts_.heartbeat_timeout);
    deadline_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_) return;
      if (steady::now() >= self->last_pong_ + self->opts_.heartbeat_timeout) {
        self->close_reason_ = "heartbeat timeout: no pong within " + format_go_duration(self->opts_.heartbeat_timeout);
        log::warn("agent heartbeat timeout", self->fields({{"timeout", format_go_duration(self->opts_.heartbeat_timeout)}}));
        self->closing_ = true;
        self->teardown();
        return;
      }
      self->arm_deadline();
    });
  }

  void arm_expiry() {
    auto left = id_.peer.not_after() - std::chrono::system_clock::now();
    if (left < std::chrono::seconds(0)) left = std::chrono::seconds(0);
    // Timers take at most ~292 years; certificates far in the future are capped at 10 years.
    auto cap = std::chrono::hours(24 * 3650);
    expiry_timer_.expires_after(std::min<std::chrono::nanoseconds>(left, cap));
    expiry_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_) return;
      if (std::chrono::system_clock::now() < self->id_.peer.not_after()) {
        self->arm_expiry();
        return;
      }
      log::warn("agent client certificate expired; closing", self->fields());
      self->close(1008, "client certificate expired");
    });
  }

  void do_close(uint16_t code, std::string reason) {
    if (finished_) return;
    if (!registered_) return;
    if (reason.size() > 120) reason.resize(120);
    close_reason_ = "closed by gateway (code " + std::to_string(code) + "): " + reason;
    ping_timer_.cancel();
    ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(code), reason),
                    [self = shared_from_this()](beast::error_code ec) {
                      if (ec) self->teardown();
                    });
  }

  void do_write() {
    writing_ = true;
    metrics::bytes_out(queue_.front()->size());
    ws_.text(true);
    ws_.async_write(asio::buffer(*queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->queued_bytes_.fetch_sub(self->queue_.front()->size());
      self->queue_.pop_front();
      if (ec) {
        self->writing_ = false;
        if (!self->finished_ && self->close_reason_.empty()) self->close_reason_ = "write failed: " + ec.message();
        self->teardown();
        return;
      }
      if (!self->queue_.empty() && !self->finished_) self->do_write();
      else self->writing_ = false;
    });
  }

  void teardown() {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

  void finish(const std::string& reason) {
    if (finished_) return;
    finished_ = true;
    closing_ = true;
    ping_timer_.cancel();
    deadline_timer_.cancel();
    expiry_timer_.cancel();
    for (const auto& f : queue_) queued_bytes_.fetch_sub(f->size());
    if (!writing_) queue_.clear();
    auto lived = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now() - connected_at_);
    if (registered_ && admitted_) {
      metrics::session_closed(id_.plane_type, id_.plane_id, reason_class_for(reason));
      registry_.remove(*this);
      if (handler_) handler_->on_closed(*this);
    }
    log::info("agent disconnected", fields({{"reason", reason}, {"connectedForMs", lived.count()}}));
    teardown();
  }

  websocket::stream<TlsStream> ws_;
  UpgradeRequest req_;
  AgentIdentity id_;
  std::set<std::string> caps_;
  AgentSessionOptions opts_;
  SessionRegistry& registry_;
  std::shared_ptr<FrameHandler> handler_;
  const uint64_t serial_;
  const SysTime connected_at_;
  std::atomic<int64_t> last_seen_ns_;
  steady::time_point last_pong_{};
  steady::time_point ping_sent_{};
  asio::steady_timer ping_timer_, deadline_timer_, expiry_timer_;
  beast::flat_buffer buffer_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::atomic<size_t> queued_bytes_{0};
  std::atomic<bool> closing_{false};
  bool writing_ = false;
  bool finished_ = false;
  bool registered_ = false;
  bool admitted_ = true;
  bool ping_pending_ = false;
  std::string close_reason_;
};
}  // namespace

void start_agent_session(UpgradeHandoffPtr handoff, AgentIdentity identity, const AgentSessionOptions& options,
                         SessionRegistry& registry, std::shared_ptr<FrameHandler> handler) {
  auto s = std::make_shared<AgentSession>(*handoff, std::move(identity), options, registry, std::move(handler));
  s->start();
}

}  // namespace cg::session
