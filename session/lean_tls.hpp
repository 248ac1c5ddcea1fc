// LeanTls: the TLS stream of an agent connection, from its handshake to its end (include from .cpp
// files only: Beast).
//
// The agent listener (gateway/agent_listener.cpp) makes one per accepted socket, runs the TLS
// handshake and reads the upgrade request on it; the session then takes it over (moved, not copied)
// for the WebSocket. OpenSSL talks to the socket directly through a small BIO: OpenSSL's own record
// buffers are the only ones, and SSL_MODE_RELEASE_BUFFERS frees them whenever the connection is
// idle. Asio's ssl::stream, which the handshake used before, allocates and zeroes two 17 KiB buffers
// in its engine plus a BIO pair with two more for every connection, and copies every byte through the
// pair (docs/benchmarks.md).
//
// The stream models Asio's AsyncStream (async_read_some, async_write_some) for
// websocket::stream<LeanTls> and Beast's HTTP reads and writes, plus async_handshake, async_shutdown
// and Beast's teardown hook. Errors are reported as Asio's ssl::stream reports them: the peer's
// close_notify is asio::error::eof, an end of stream without one is asio::ssl::error::stream_truncated.
// No operation completes inside its initiating call. Tests: tests/session/lean_tls_test.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "common/net.hpp"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace cg::session {

class LeanTls {
 public:
  using executor_type = net::tcp::socket::executor_type;
  using next_layer_type = net::tcp::socket;

  // The server side of a new connection on `sock` with the settings of `ctx` (the SSL object holds
  // its own reference to it). When the set-up fails, setup_error() says why and the stream must not
  // be used, only destroyed.
  LeanTls(net::tcp::socket sock, SSL_CTX* ctx);
  // Takes over `other`'s socket and SSL object; `other` may then only be destroyed. No operation may
  // be pending on `other`.
  LeanTls(LeanTls&& other) noexcept;
  LeanTls(const LeanTls&) = delete;
  LeanTls& operator=(const LeanTls&) = delete;
  LeanTls& operator=(LeanTls&&) = delete;
  ~LeanTls();

  executor_type get_executor() noexcept { return sock_.get_executor(); }
  net::tcp::socket& next_layer() noexcept { return sock_; }
  const net::tcp::socket& next_layer() const noexcept { return sock_; }
  SSL* native_handle() noexcept { return ssl_; }
  const std::string& setup_error() const { return setup_error_; }

  // What becomes of the TLS session in the server's cache (tls::ServerTlsOptions::session_cache_entries)
  // when the stream ends. `forget` (the default) removes it, however the connection ended: only an
  // agent that was authorized may resume. `keep` leaves it there even when the connection ends without
  // a close_notify (a cut connection is what resumption is for). OpenSSL would drop the session then
  // (its fatal "unexpected EOF" alert removes it); with `keep` it reads such an end as it reads a
  // close_notify (SSL_OP_IGNORE_UNEXPECTED_EOF), and the stream still reports it as stream_truncated.
  // A fatal error of any other kind (a bad record) still removes the session.
  enum class Resumption : uint8_t { forget, keep };
  void set_resumption(Resumption r) noexcept;
  // Whether the handshake resumed a cached session (no certificate was sent in it: the chain is the
  // one the session was made with).
  bool resumed() const noexcept;

  // The server's TLS handshake; completes with (error, 0).
  template <class Handler>
  auto async_handshake(Handler&& handler) {
    return net::asio::async_compose<Handler, void(net::beast::error_code, size_t)>(
        IoOp{this, [](LeanTls& s) { return s.handshake_step(); }, false}, handler, sock_);
  }

  // Reads into the first non-empty buffer: every record that is there, up to its size.
  template <class MutableBuffers, class Handler>
  auto async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    net::asio::mutable_buffer b;
    for (auto it = net::asio::buffer_sequence_begin(buffers); it != net::asio::buffer_sequence_end(buffers); ++it) {
      if (net::asio::mutable_buffer(*it).size()) {
        b = *it;
        break;
      }
    }
    return net::asio::async_compose<Handler, void(net::beast::error_code, size_t)>(
        IoOp{this, [b](LeanTls& s) { return s.read_step(b); }, b.size() == 0}, handler, sock_);
  }

  // Writes from the first buffer: small leading buffers (a frame header) are first coalesced with what
  // follows (up to one record), a large first buffer is written from where it is, as many records as
  // the socket takes. Completes with the number of plaintext bytes taken, which may be fewer than
  // offered (the socket buffer filled up); the caller offers the rest again.
  template <class ConstBuffers, class Handler>
  auto async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    namespace asio = net::asio;
    auto it = asio::buffer_sequence_begin(buffers), end = asio::buffer_sequence_end(buffers);
    while (it != end && asio::const_buffer(*it).size() == 0) ++it;
    asio::const_buffer first = it != end ? asio::const_buffer(*it) : asio::const_buffer();
    std::shared_ptr<std::string> copy;
    if (first.size() < kCoalesceBelow && asio::buffer_size(buffers) > first.size()) {
      copy = std::make_shared<std::string>();
      copy->reserve(std::min<size_t>(asio::buffer_size(buffers), kRecord));
      for (; it != end && copy->size() < kRecord; ++it) {
        asio::const_buffer c(*it);
        size_t take = std::min(c.size(), kRecord - copy->size());
        copy->append(static_cast<const char*>(c.data()), take);
      }
      first = asio::buffer(*copy);
    }
    return asio::async_compose<Handler, void(net::beast::error_code, size_t)>(
        IoOp{this, [first, copy](LeanTls& s) { return s.write_step(first); }, first.size() == 0}, handler, sock_);
  }

  // Sends close_notify and completes: the peer's close_notify is not waited for (RFC 8446 §6.1 lets
  // the closer skip it). Upstream's agent never sends one after a close frame: it leaves its socket
  // open, so a wait here would last until a timeout.
  template <class Handler>
  auto async_shutdown(Handler&& handler) {
    return net::asio::async_compose<Handler, void(net::beast::error_code, size_t)>(
        IoOp{this, [](LeanTls& s) { return s.shutdown_step(); }, false}, handler, sock_);
  }

 private:
  static constexpr size_t kRecord = 16 * 1024;
  static constexpr size_t kCoalesceBelow = 4096;

  // One call into OpenSSL: done (ec and n are the result) or what it waits for on the socket.
  enum class Want : uint8_t { nothing, read, write };
  struct Step {
    Want want = Want::nothing;
    net::beast::error_code ec{};
    size_t n = 0;
  };
  Step handshake_step();
  Step read_step(net::asio::mutable_buffer b);
  Step write_step(net::asio::const_buffer b);
  Step shutdown_step();
  Step finish_step(int ret, size_t n, bool shutdown);
  // Calls `call(offset, &n)` (an SSL_read_ex or SSL_write_ex from `offset` on) while it moves bytes
  // and `size` is not reached.
  template <class Call>
  Step records_step(size_t size, Call call);

  // Runs `fn` until it is done, waiting on the socket for what OpenSSL asks for; never completes
  // inside the initiating call.
  template <class Fn>
  struct IoOp {
    LeanTls* s;
    Fn fn;
    bool empty = false;
    enum class Phase : uint8_t { first_call, waiting, posted } phase = Phase::first_call;
    net::beast::error_code result{};
    size_t n = 0;

    template <class Self>
    void operator()(Self& self, net::beast::error_code ec = {}) {
      if (phase == Phase::posted) return self.complete(result, n);
      const bool first = phase == Phase::first_call;
      phase = Phase::waiting;
      if (ec) return self.complete(ec, 0);
      if (!s->sock_.is_open()) {
        // Closed on the strand after the wait had completed (its handler was already queued) or
        // before this operation started: OpenSSL must not run on a descriptor that is gone.
        result = first ? net::asio::error::bad_descriptor : net::asio::error::operation_aborted;
      } else if (!empty) {
        Step st = fn(*s);
        if (st.want == Want::read) return s->sock_.async_wait(net::tcp::socket::wait_read, std::move(self));
        if (st.want == Want::write) return s->sock_.async_wait(net::tcp::socket::wait_write, std::move(self));
        result = st.ec;
        n = st.n;
      }
      if (first) {
        phase = Phase::posted;
        return net::asio::post(std::move(self));
      }
      self.complete(result, n);
    }
  };
  template <class Fn>
  IoOp(LeanTls*, Fn, bool) -> IoOp<Fn>;

  // Points the BIO at this object's socket (after a construction or a move).
  void bind_bio();

  net::tcp::socket sock_;
  SSL* ssl_ = nullptr;
  std::string setup_error_;
  Resumption resumption_ = Resumption::forget;
};

// WebSocket teardown for LeanTls (found by argument-dependent lookup): TLS close_notify, then the
// socket is closed at once. Beast's TCP teardown would wait for the peer's end of stream first,
// which upstream's agent never sends (its old socket stays open, in CLOSE-WAIT).
struct LeanTeardownOp {
  net::beast::role_type role;
  LeanTls& s;
  bool shutdown_sent = false;
  template <class Self>
  void operator()(Self& self, net::beast::error_code ec = {}, size_t = 0) {
    if (!shutdown_sent) {
      shutdown_sent = true;
      return s.async_shutdown(std::move(self));
    }
    net::beast::error_code ignored;
    s.next_layer().shutdown(net::tcp::socket::shutdown_both, ignored);
    s.next_layer().close(ignored);
    self.complete(ec);
  }
};

template <class Handler>
void async_teardown(net::beast::role_type role, LeanTls& s, Handler&& handler) {
  net::asio::async_compose<Handler, void(net::beast::error_code)>(LeanTeardownOp{role, s}, handler, s.next_layer());
}

}  // namespace cg::session
