#include "session/agent_session.hpp"

#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
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

} // namespace

// Each timer expiry, each loopback send that wakes the peer and each readable event costs a thread
// wakeup, and on this kind of machine the wakeups, not the crypto, were most of the heartbeat CPU
// (docs/benchmarks.md). A ping is at most one grid step late, a timeout at most one step later.
steady::time_point heartbeat_align(steady::time_point t, Duration interval) {
  using namespace std::chrono;
  nanoseconds tick = std::min<nanoseconds>(interval / 8, milliseconds(250));
  if (tick <= milliseconds(1)) return t;
  auto since = duration_cast<nanoseconds>(t.time_since_epoch());
  auto rem = since % tick;
  if (rem == nanoseconds(0)) return t;
  return t + duration_cast<steady::duration>(tick - rem);
}

namespace {

// ---- LeanTls -------------------------------------------------------------------------------------
// The TLS stream of an established session. The handshake and the upgrade request run on Asio's
// ssl::stream (gateway/agent_listener.cpp); once the request is read, the session takes the socket and
// the SSL object over and talks to the socket directly through a small BIO. Asio's stream keeps two
// 17 KiB buffers in its core plus a BIO pair with two more 17 KiB buffers for as long as it lives,
// about 68 KiB of every idle session's memory; here OpenSSL's own record buffers are the only ones,
// and SSL_MODE_RELEASE_BUFFERS (set by Asio on every SSL) frees them whenever a session is idle.
struct SockBio {
  // The session's socket, not a copy of its descriptor: the descriptor is read at every call, so that
  // once the socket is closed (heartbeat timeout, teardown) OpenSSL gets EBADF instead of reaching
  // whatever the kernel has since given that descriptor number to (another agent's socket, a file).
  tcp::socket* sock = nullptr;
  bool eof = false;
  std::string pre;  // ciphertext Asio's BIO pair had received but OpenSSL had not read yet
  size_t pre_off = 0;
};

int sockbio_fd(SockBio* st) { return st->sock && st->sock->is_open() ? st->sock->native_handle() : -1; }

int sockbio_write(BIO* b, const char* data, int len) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const int fd = sockbio_fd(st);
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  for (;;) {
    ssize_t r = ::send(fd, data, static_cast<size_t>(len), MSG_NOSIGNAL);
    if (r >= 0) return static_cast<int>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    return -1;
  }
}

int sockbio_read(BIO* b, char* data, int len) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  if (st->pre_off < st->pre.size()) {
    size_t n = std::min(st->pre.size() - st->pre_off, static_cast<size_t>(len));
    std::memcpy(data, st->pre.data() + st->pre_off, n);
    st->pre_off += n;
    if (st->pre_off == st->pre.size()) std::string().swap(st->pre), st->pre_off = 0;
    return static_cast<int>(n);
  }
  const int fd = sockbio_fd(st);
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  for (;;) {
    ssize_t r = ::recv(fd, data, static_cast<size_t>(len), 0);
    if (r > 0) return static_cast<int>(r);
    if (r == 0) {
      st->eof = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
    return -1;
  }
}

long sockbio_ctrl(BIO* b, int cmd, long, void*) {
  auto* st = static_cast<SockBio*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_EOF: return st && st->eof ? 1 : 0;
    default: return 0;
  }
}

int sockbio_create(BIO* b) {
  BIO_set_data(b, nullptr);
  BIO_set_init(b, 1);
  return 1;
}

int sockbio_destroy(BIO* b) {
  delete static_cast<SockBio*>(BIO_get_data(b));
  BIO_set_data(b, nullptr);
  return 1;
}

const BIO_METHOD* sockbio_method() {
  static const BIO_METHOD* m = [] {
    BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cg-session-socket");
    BIO_meth_set_write(bm, sockbio_write);
    BIO_meth_set_read(bm, sockbio_read);
    BIO_meth_set_ctrl(bm, sockbio_ctrl);
    BIO_meth_set_create(bm, sockbio_create);
    BIO_meth_set_destroy(bm, sockbio_destroy);
    return bm;
  }();
  return m;
}

class LeanTls {
 public:
  using executor_type = tcp::socket::executor_type;
  using next_layer_type = tcp::socket;

  // Takes the socket and the SSL object over from `from` (which must not be used afterwards).
  explicit LeanTls(TlsStream& from) : sock_(std::move(from.next_layer().socket())), ssl_(from.native_handle()) {
    SSL_up_ref(ssl_);  // Asio's engine frees its reference when `from` is destroyed
    BIO* old = SSL_get_rbio(ssl_);
    if (BIO_ctrl_wpending(SSL_get_wbio(ssl_)) != 0) {
      adopt_error_ = "unsent TLS output left in the handshake stream";
    }
    auto* st = new SockBio;
    st->sock = &sock_;  // LeanTls is neither copied nor moved, so the pointer stays valid
    if (size_t pending = old ? BIO_ctrl_pending(old) : 0; pending > 0) {
      st->pre.resize(pending);
      int got = BIO_read(old, st->pre.data(), static_cast<int>(pending));
      st->pre.resize(got > 0 ? static_cast<size_t>(got) : 0);
    }
    BIO* b = BIO_new(sockbio_method());
    if (!b) {
      delete st;
      adopt_error_ = "BIO_new failed";
      return;
    }
    BIO_set_data(b, st);
    SSL_set_bio(ssl_, b, b);  // frees Asio's half of the pair
    beast::error_code ec;
    sock_.native_non_blocking(true, ec);
    if (ec && adopt_error_.empty()) adopt_error_ = ec.message();
  }
  LeanTls(const LeanTls&) = delete;
  LeanTls& operator=(const LeanTls&) = delete;
  ~LeanTls() {
    if (ssl_) SSL_free(ssl_);
  }

  executor_type get_executor() noexcept { return sock_.get_executor(); }
  tcp::socket& next_layer() noexcept { return sock_; }
  const tcp::socket& next_layer() const noexcept { return sock_; }
  const std::string& adopt_error() const { return adopt_error_; }

  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    asio::mutable_buffer b;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
      if (asio::mutable_buffer(*it).size()) {
        b = *it;
        break;
      }
    }
    return asio::async_compose<Handler, void(beast::error_code, size_t)>(
        IoOp{this, [b](SSL* s, size_t& n) { return SSL_read_ex(s, b.data(), b.size(), &n); }, b.size() == 0},
        handler, sock_);
  }

  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    // One TLS record per call: small leading buffers (a frame header) are coalesced with what follows
    // (up to one record), a large first buffer is written from where it is.
    auto it = asio::buffer_sequence_begin(buffers), end = asio::buffer_sequence_end(buffers);
    while (it != end && asio::const_buffer(*it).size() == 0) ++it;
    asio::const_buffer first = it != end ? asio::const_buffer(*it) : asio::const_buffer();
    std::shared_ptr<std::string> copy;
    if (first.size() < 4096 && asio::buffer_size(buffers) > first.size()) {
      copy = std::make_shared<std::string>();
      copy->reserve(std::min<size_t>(asio::buffer_size(buffers), kRecord));
      for (; it != end && copy->size() < kRecord; ++it) {
        asio::const_buffer c(*it);
        size_t take = std::min(c.size(), kRecord - copy->size());
        copy->append(static_cast<const char*>(c.data()), take);
      }
      first = asio::buffer(*copy);
    }
    return asio::async_compose<Handler, void(beast::error_code, size_t)>(
        IoOp{this, [first, copy](SSL* s, size_t& n) { return SSL_write_ex(s, first.data(), first.size(), &n); },
             first.size() == 0},
        handler, sock_);
  }

  // close_notify, then wait for the peer's (or its end of stream), as Asio's async_shutdown does.
  template <class Handler>
  auto async_shutdown(Handler&& handler) {
    return asio::async_compose<Handler, void(beast::error_code, size_t)>(
        IoOp{this, [](SSL* s, size_t& n) {
               n = 0;
               int r = SSL_shutdown(s);
               if (r == 0) r = SSL_shutdown(s);
               return r;
             },
             false, true},
        handler, sock_);
  }

 private:
  static constexpr size_t kRecord = 16 * 1024;

  // Runs `fn` until it succeeds or fails, waiting on the socket for what OpenSSL asks for; never
  // completes inside the initiating call.
  template <class Fn>
  struct IoOp {
    LeanTls* s;
    Fn fn;
    bool empty = false;
    bool shutdown = false;
    int state = 0;  // 0 first call, 1 waiting, 2 result ready (posted)
    beast::error_code result{};
    size_t n = 0;

    template <class Self>
    void operator()(Self& self, beast::error_code ec = {}) {
      if (state == 2) return self.complete(result, n);
      bool first = state == 0;
      state = 1;
      if (ec) return self.complete(ec, 0);
      if (!s->sock_.is_open()) {
        // Closed on the strand after the wait had completed (its handler was already queued) or
        // before this operation started: OpenSSL must not run on a descriptor that is gone.
        result = first ? asio::error::bad_descriptor : asio::error::operation_aborted;
      } else if (!empty) {
        ERR_clear_error();
        size_t got = 0;
        int r = fn(s->ssl_, got);
        if (r == 1) {
          n = got;
        } else {
          int e = SSL_get_error(s->ssl_, r);
          if (e == SSL_ERROR_WANT_READ) return s->sock_.async_wait(tcp::socket::wait_read, std::move(self));
          if (e == SSL_ERROR_WANT_WRITE) return s->sock_.async_wait(tcp::socket::wait_write, std::move(self));
          result = map_error(e);
          if (shutdown && result == asio::ssl::error::stream_truncated) result = asio::error::eof;
        }
      }
      if (first) {
        state = 2;
        return asio::post(std::move(self));
      }
      self.complete(result, n);
    }

    beast::error_code map_error(int e) {
      // As Asio's engine reports them: a close_notify is eof, an end of stream without one is
      // stream_truncated, anything else the OpenSSL error.
      unsigned long err = ERR_peek_last_error();
      if (e == SSL_ERROR_ZERO_RETURN) return asio::error::eof;
      if (e == SSL_ERROR_SYSCALL && err == 0) {
        if (errno != 0 && !static_cast<SockBio*>(BIO_get_data(SSL_get_rbio(s->ssl_)))->eof)
          return beast::error_code(errno, asio::error::get_system_category());
        return asio::ssl::error::stream_truncated;
      }
      if (e == SSL_ERROR_SSL && ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return asio::ssl::error::stream_truncated;
      }
      ERR_clear_error();
      if (err == 0) return asio::ssl::error::stream_truncated;
      return beast::error_code(static_cast<int>(err), asio::error::get_ssl_category());
    }
  };
  template <class Fn>
  IoOp(LeanTls*, Fn, bool, bool = false) -> IoOp<Fn>;

  tcp::socket sock_;
  SSL* ssl_;
  std::string adopt_error_;
};

// WebSocket teardown for LeanTls (found by argument-dependent lookup): TLS close_notify as for
// Asio's ssl::stream, then Beast's TCP teardown.
struct LeanTeardownOp {
  beast::role_type role;
  LeanTls& s;
  int state = 0;
  beast::error_code first{};
  template <class Self>
  void operator()(Self& self, beast::error_code ec = {}, size_t = 0) {
    switch (state) {
      case 0:
        state = 1;
        return s.async_shutdown(std::move(self));
      case 1: {
        state = 2;
        first = ec;
        using boost::beast::websocket::async_teardown;
        return async_teardown(role, s.next_layer(), std::move(self));
      }
      default:
        self.complete(first ? first : ec);
    }
  }
};

template <class Handler>
void async_teardown(beast::role_type role, LeanTls& s, Handler&& handler) {
  asio::async_compose<Handler, void(beast::error_code)>(LeanTeardownOp{role, s}, handler, s.next_layer());
}

class AgentSession final : public AgentHandle, public std::enable_shared_from_this<AgentSession> {
 public:
  AgentSession(UpgradeHandoff& h, AgentIdentity id, const AgentSessionOptions& opts, SessionRegistry& registry,
               std::shared_ptr<FrameHandler> handler)
      : ws_(h.stream),
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
    if (!ws_.next_layer().adopt_error().empty()) {
      log::warn("websocket upgrade failed", fields({{"reason", ws_.next_layer().adopt_error()}, {"remote", id_.remote}}));
      finished_ = true;
      return;
    }
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::duration_cast<std::chrono::seconds>(opts_.handshake_timeout);
    if (t.handshake_timeout < std::chrono::seconds(1)) t.handshake_timeout = std::chrono::seconds(1);
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    // The message limit is counted by the session itself (do_read/on_read), not by Beast: when Beast
    // hits its own limit it sends 1009 and tears the TLS stream down at once, while the agent may still
    // be sending the rest of its message; the teardown's error then replaces message_too_big (so the
    // close was reported as a lost connection) and the reset can reach the agent before the close frame
    // does (1006). Here the session stops one byte past the limit and closes with 1009 gracefully.
    ws_.read_message_max(0);
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
    req_ = UpgradeRequest{};  // the upgrade request is not needed after the handshake (capabilities are parsed)
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
    // At most one byte past the limit is ever buffered; a message is read in pieces until it is done.
    size_t room = opts_.max_message_size + 1 - std::min(buffer_.size(), opts_.max_message_size);
    ws_.async_read_some(buffer_, std::min<size_t>(room, 1u << 20),
                        [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read(ec, n); });
  }

  // The agent's message is over the limit: close with 1009 and let Beast's close handshake read (and
  // discard) whatever the agent still sends until its close frame, so the 1009 reaches it.
  void close_too_big() {
    ping_timer_.cancel();
    close_reason_ = "message larger than the limit of " + std::to_string(opts_.max_message_size) + " bytes";
    log::warn("agent message larger than the limit; closing 1009",
              fields({{"limit", opts_.max_message_size}, {"received", buffer_.size()}}));
    buffer_.consume(buffer_.size());
    buffer_.shrink_to_fit();
    ws_.async_close(websocket::close_reason(websocket::close_code::too_big, "message too big"),
                    [self = shared_from_this()](beast::error_code) { self->finish(self->close_reason_); });
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
      } else {
        reason = "connection lost: " + ec.message();
      }
      finish(reason);
      return;
    }
    touch();
    metrics::bytes_in(n);
    if (discarding_ || buffer_.size() > opts_.max_message_size) {
      if (discarding_ || closing_.exchange(true)) {
        // A close the gateway started is under way (do_close posted): drop the rest of this message and
        // read on so that the close handshake completes.
        discarding_ = !ws_.is_message_done();
        buffer_.consume(buffer_.size());
        if (!finished_) do_read();
        return;
      }
      close_too_big();
      return;
    }
    if (!ws_.is_message_done()) {
      do_read();
      return;
    }
    // The handler sees the message where it was read (flat_buffer is contiguous): no copy.
    auto d = buffer_.data();
    if (handler_) handler_->on_text(*this, std::string_view(static_cast<const char*>(d.data()), d.size()));
    buffer_.consume(buffer_.size());
    // Idle sessions keep no large read buffer: anything above a typical small frame is given back.
    if (buffer_.capacity() > 16 * 1024) buffer_.shrink_to_fit();
    if (!finished_) do_read();
  }

  void arm_ping() {
    ping_timer_.expires_at(heartbeat_align(steady::now() + opts_.heartbeat_interval, opts_.heartbeat_interval));
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
    deadline_timer_.expires_at(heartbeat_align(last_pong_ + opts_.heartbeat_timeout, opts_.heartbeat_interval));
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
    ws_.next_layer().next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    ws_.next_layer().next_layer().close(ignored);
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

  websocket::stream<LeanTls> ws_;
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
  bool discarding_ = false;  // the rest of an oversized message is dropped while a close is under way
  std::string close_reason_;
};
}  // namespace

void start_agent_session(UpgradeHandoffPtr handoff, AgentIdentity identity, const AgentSessionOptions& options,
                         SessionRegistry& registry, std::shared_ptr<FrameHandler> handler) {
  auto s = std::make_shared<AgentSession>(*handoff, std::move(identity), options, registry, std::move(handler));
  s->start();
}

}  // namespace cg::session
