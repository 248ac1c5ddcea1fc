#include "session/lean_tls.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <utility>

namespace cg::session {
namespace {
using net::tcp;
namespace asio = net::asio;
namespace beast = net::beast;

// The BIO under the session's SSL object.
struct SockBio {
  // The session's socket, not a copy of its descriptor: the descriptor is read at every call, so that
  // once the socket is closed (heartbeat timeout, teardown) OpenSSL gets EBADF instead of reaching
  // whatever the kernel has since given that descriptor number to (another agent's socket, a file).
  tcp::socket* sock = nullptr;
  bool eof = false;
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

// As Asio's engine reports them: a close_notify is eof, an end of stream without one is
// stream_truncated, anything else the OpenSSL error. With SSL_OP_IGNORE_UNEXPECTED_EOF (a kept session:
// LeanTls::set_resumption) OpenSSL reports an end without close_notify as a close_notify; the socket
// having reached its end tells them apart (a close_notify is read and reported before the end is).
beast::error_code map_error(SSL* ssl, int e) {
  unsigned long err = ERR_peek_last_error();
  if (e == SSL_ERROR_ZERO_RETURN) {
    const bool eof_read = static_cast<SockBio*>(BIO_get_data(SSL_get_rbio(ssl)))->eof;
    if (eof_read && (SSL_get_options(ssl) & SSL_OP_IGNORE_UNEXPECTED_EOF)) return asio::ssl::error::stream_truncated;
    return asio::error::eof;
  }
  if (e == SSL_ERROR_SYSCALL && err == 0) {
    if (errno != 0 && !static_cast<SockBio*>(BIO_get_data(SSL_get_rbio(ssl)))->eof)
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

}  // namespace

LeanTls::LeanTls(tcp::socket sock, SSL_CTX* ctx) : sock_(std::move(sock)) {
  ssl_ = SSL_new(ctx);
  if (!ssl_) {
    setup_error_ = "SSL_new failed";
    ERR_clear_error();
    return;
  }
  // Partial writes: async_write_some completes with what one call took. The buffer may move between
  // a write that wanted the socket and its retry (coalesced copies). Record buffers are freed while idle.
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  // A record's header and body in one recv (and the next record's start with them), not two.
  SSL_set_read_ahead(ssl_, 1);
  SSL_set_accept_state(ssl_);
  BIO* b = BIO_new(sockbio_method());
  if (!b) {
    setup_error_ = "BIO_new failed";
    ERR_clear_error();
    return;
  }
  BIO_set_data(b, new SockBio);
  SSL_set_bio(ssl_, b, b);
  bind_bio();
  beast::error_code ec;
  sock_.native_non_blocking(true, ec);
  if (ec) setup_error_ = ec.message();
}

LeanTls::LeanTls(LeanTls&& other) noexcept
    : sock_(std::move(other.sock_)),
      ssl_(std::exchange(other.ssl_, nullptr)),
      setup_error_(std::move(other.setup_error_)),
      resumption_(other.resumption_) {
  bind_bio();
}

void LeanTls::bind_bio() {
  BIO* b = ssl_ ? SSL_get_rbio(ssl_) : nullptr;
  if (auto* st = b ? static_cast<SockBio*>(BIO_get_data(b)) : nullptr) st->sock = &sock_;
}

LeanTls::~LeanTls() {
  if (!ssl_) return;
  if (resumption_ == Resumption::keep) {
    // SSL_free removes the session of a connection that ended without our close_notify.
    SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  } else if (SSL_SESSION* s = SSL_get0_session(ssl_)) {
    SSL_CTX_remove_session(SSL_get_SSL_CTX(ssl_), s);  // nothing when the cache is off or never held it
  }
  SSL_free(ssl_);
}

void LeanTls::set_resumption(Resumption r) noexcept {
  resumption_ = r;
  if (!ssl_) return;
  if (r == Resumption::keep) SSL_set_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  else SSL_clear_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

bool LeanTls::resumed() const noexcept { return ssl_ && SSL_session_reused(ssl_) == 1; }

LeanTls::Step LeanTls::finish_step(int ret, size_t n, bool shutdown) {
  if (ret == 1) return Step{Want::nothing, {}, n};
  int e = SSL_get_error(ssl_, ret);
  if (e == SSL_ERROR_WANT_READ) return Step{Want::read};
  if (e == SSL_ERROR_WANT_WRITE) return Step{Want::write};
  beast::error_code ec = map_error(ssl_, e);
  if (shutdown && ec == asio::ssl::error::stream_truncated) ec = asio::error::eof;
  return Step{Want::nothing, ec, 0};
}

LeanTls::Step LeanTls::handshake_step() {
  if (!setup_error_.empty() || !ssl_) return Step{Want::nothing, asio::error::invalid_argument, 0};
  ERR_clear_error();
  return finish_step(SSL_do_handshake(ssl_), 0, false);
}

// One SSL_read or SSL_write moves one record (16 KiB at most). Both steps go on while there is room
// (read) or data (write) and the socket keeps up, so that a 1 MiB message costs a few completions
// instead of one posted completion (and wake-up) per record. Whatever stopped a step after some bytes
// moved (the socket would block, an alert, the peer's close) is met again by the next call, which
// starts with the same OpenSSL call: the bytes are delivered first, the rest follows. A record that
// would block stays pending inside OpenSSL; the caller's next write offers the same bytes (from the
// first one not taken), which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows.
template <class Call>
LeanTls::Step LeanTls::records_step(size_t size, Call call) {
  size_t total = 0;
  for (;;) {
    ERR_clear_error();
    size_t n = 0;
    int r = call(total, &n);
    if (r == 1) {
      total += n;
      if (total < size) continue;
    }
    if (total > 0) {
      ERR_clear_error();
      return Step{Want::nothing, {}, total};
    }
    return finish_step(r, n, false);
  }
}

LeanTls::Step LeanTls::read_step(asio::mutable_buffer b) {
  auto* data = static_cast<char*>(b.data());
  return records_step(b.size(), [&](size_t off, size_t* n) { return SSL_read_ex(ssl_, data + off, b.size() - off, n); });
}

LeanTls::Step LeanTls::write_step(asio::const_buffer b) {
  const auto* data = static_cast<const char*>(b.data());
  return records_step(b.size(), [&](size_t off, size_t* n) { return SSL_write_ex(ssl_, data + off, b.size() - off, n); });
}

LeanTls::Step LeanTls::shutdown_step() {
  ERR_clear_error();
  int r = SSL_shutdown(ssl_);
  return finish_step(r == 0 ? 1 : r, 0, true);  // 0: ours is sent, the peer's not received yet
}

}  // namespace cg::session
