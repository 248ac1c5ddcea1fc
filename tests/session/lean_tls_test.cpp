// LeanTls on loopback TCP against a real OpenSSL client: its own server handshake (also with
// application data that arrived together with the handshake's last flight, and with a client that does
// not speak TLS), a move after the handshake, several records per read and per write, partial writes
// when the socket buffer is full, and how ends of stream are told apart (close_notify = eof, none =
// stream_truncated).
// Certificates are generated at test time (tests/support/pki).
#include <catch2/catch.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <future>
#include <optional>
#include <thread>

#include "session/lean_tls.hpp"
#include "tests/support/gateway_fixture.hpp"
#include "tests/support/pki.hpp"
#include "tls/server_context.hpp"

using namespace cg::net;
using cg::session::LeanTls;

namespace {

struct Pki {
  cg::testing::Cert ca = cg::testing::make_ca("lean-tls-test-ca");
  cg::testing::Cert server = cg::testing::make_server(ca);
  std::string dir = cg::testing::make_temp_dir("lean-tls");
  std::shared_ptr<asio::ssl::context> ctx;
  // `cache_entries`: the agent listener's session cache (--tls-session-cache; 0: none).
  explicit Pki(uint64_t cache_entries = 0) {
    cg::testing::write_file(dir + "/tls.crt", server.cert_pem());
    cg::testing::write_file(dir + "/tls.key", server.key_pem());
    cg::tls::ServerTlsOptions o;
    o.cert_file = dir + "/tls.crt";
    o.key_file = dir + "/tls.key";
    o.request_client_cert = false;
    o.session_cache_entries = cache_entries;
    ctx = cg::tls::make_server_context(o);  // the agent listener's settings (release buffers, stateful tickets)
  }
};

// A blocking OpenSSL client on its own socket. Runs on the client thread only.
struct Client {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  Client(uint16_t port, const cg::testing::Cert& ca, int rcvbuf = 0) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect");
    ctx = SSL_CTX_new(TLS_client_method());
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca.x509());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    ssl = SSL_new(ctx);
    SSL_set1_host(ssl, "localhost");
    SSL_set_tlsext_host_name(ssl, "localhost");
  }
  ~Client() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
  void connect() {
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) throw std::runtime_error("SSL_connect failed");
  }
  void write(const std::string& s) {
    size_t n = 0;
    if (SSL_write_ex(ssl, s.data(), s.size(), &n) != 1 || n != s.size()) throw std::runtime_error("SSL_write failed");
  }
  std::string read_exact(size_t want) {
    std::string out(want, '\0');
    size_t got = 0;
    while (got < want) {
      size_t n = 0;
      if (SSL_read_ex(ssl, out.data() + got, want - got, &n) != 1) throw std::runtime_error("SSL_read failed");
      got += n;
    }
    return out;
  }
};

// The server side: accepts one connection and runs LeanTls's handshake on it.
struct Server {
  asio::io_context ioc;
  tcp::acceptor acc{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::optional<LeanTls> lean;
  uint16_t port() const { return acc.local_endpoint().port(); }

  // Returns the handshake's result.
  beast::error_code accept_and_handshake(asio::ssl::context& ctx) {
    tcp::socket s(ioc);
    acc.accept(s);
    lean.emplace(std::move(s), ctx.native_handle());
    REQUIRE(lean->setup_error().empty());
    return run([&](auto h) { lean->async_handshake(h); }).first;
  }
  void accept_tls(asio::ssl::context& ctx) { REQUIRE_FALSE(accept_and_handshake(ctx)); }

  template <class Op>
  std::pair<beast::error_code, size_t> run(Op op) {
    bool done = false, initiated = false, inline_completion = false;
    std::pair<beast::error_code, size_t> out;
    op([&](beast::error_code ec, size_t n) {
      inline_completion = !initiated;
      out = {ec, n};
      done = true;
    });
    initiated = true;
    ioc.restart();
    while (!done) ioc.run_one();
    CHECK_FALSE(inline_completion);  // never completes inside the initiating call
    return out;
  }
  std::pair<beast::error_code, size_t> read(std::string& buf) {
    return run([&](auto h) { lean->async_read_some(asio::buffer(buf), h); });
  }
  std::string read_exact(size_t want) {
    std::string out, buf(4096, '\0');
    while (out.size() < want) {
      auto [ec, n] = read(buf);
      REQUIRE_FALSE(ec);
      out.append(buf, 0, n);
    }
    return out;
  }
};

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// A client thread: connects, writes `send`, then reads `want` bytes into `got` (or its exception).
std::thread talk(uint16_t port, const cg::testing::Cert& ca, std::string send, size_t want, std::promise<std::string>& got) {
  return std::thread([port, &ca, send = std::move(send), want, &got] {
    try {
      Client c(port, ca);
      c.connect();
      c.write(send);
      got.set_value(c.read_exact(want));
    } catch (...) {
      got.set_exception(std::current_exception());
    }
  });
}

}  // namespace

TEST_CASE("LeanTls carries data both ways after its own handshake", "[session][lean_tls]") {
  Pki pki;
  Server srv;
  std::promise<std::string> got;
  std::thread client = talk(srv.port(), pki.ca, "ping", 4 + 16 * 1024, got);
  srv.accept_tls(*pki.ctx);
  CHECK(srv.read_exact(4) == "ping");
  // Two small buffers (a frame header and its payload) go out as one record: one call takes both.
  std::string a = "po", b = "ng";
  std::array<asio::const_buffer, 2> bufs{asio::buffer(a), asio::buffer(b)};
  auto [ec, n] = srv.run([&](auto h) { srv.lean->async_write_some(bufs, h); });
  CHECK_FALSE(ec);
  CHECK(n == 4);
  // A small header before a large payload: one record's worth is taken, the caller writes the rest.
  const std::string hdr = "hd", payload = pattern(20000);
  std::array<asio::const_buffer, 2> frame{asio::buffer(hdr), asio::buffer(payload)};
  auto [ec2, n2] = srv.run([&](auto h) { srv.lean->async_write_some(frame, h); });
  CHECK_FALSE(ec2);
  CHECK(n2 == 16 * 1024);
  auto fut = got.get_future();
  CHECK(fut.get() == "pong" + hdr + payload.substr(0, 16 * 1024 - hdr.size()));
  client.join();
}

TEST_CASE("LeanTls reads the application data that arrived together with the handshake's last flight", "[session][lean_tls]") {
  // The client's Finished and its first application records leave in one send(), so they reach the
  // server's socket together (an agent may send its upgrade request right behind its Finished).
  Pki pki;
  Server srv;
  const std::string msg = pattern(3000);
  std::promise<void> sent;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      BIO* rb = BIO_new(BIO_s_mem());
      BIO* wb = BIO_new(BIO_s_mem());
      SSL_set_bio(c.ssl, rb, wb);
      SSL_set_connect_state(c.ssl);
      auto flush = [&] {
        char* p = nullptr;
        long len = BIO_get_mem_data(wb, &p);
        for (long off = 0; off < len;) {
          ssize_t r = ::send(c.fd, p + off, static_cast<size_t>(len - off), MSG_NOSIGNAL);
          if (r <= 0) throw std::runtime_error("send");
          off += r;
        }
        (void)BIO_reset(wb);
      };
      for (;;) {
        int r = SSL_do_handshake(c.ssl);
        if (r == 1) break;
        if (SSL_get_error(c.ssl, r) != SSL_ERROR_WANT_READ) throw std::runtime_error("client handshake");
        flush();
        char buf[16384];
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n <= 0) throw std::runtime_error("recv");
        BIO_write(rb, buf, static_cast<int>(n));
      }
      // Finished is in wb, not sent yet; the application data joins it (two records).
      c.write(msg.substr(0, 1000));
      c.write(msg.substr(1000));
      flush();
      sent.set_value();
    } catch (...) {
      sent.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  CHECK(srv.read_exact(msg.size()) == msg);
  client.join();
  sent.get_future().get();
}

TEST_CASE("LeanTls moved after the handshake keeps the connection and the moved-from stream is empty", "[session][lean_tls]") {
  // The session takes the listener's stream over by a move: the BIO must follow the socket.
  Pki pki;
  Server srv;
  std::promise<std::string> got;
  std::thread client = talk(srv.port(), pki.ca, "hello", 5, got);
  srv.accept_tls(*pki.ctx);
  // On the heap: a different address from the first object's (which is destroyed before any I/O).
  auto moved = std::make_unique<LeanTls>(std::move(*srv.lean));
  CHECK(srv.lean->native_handle() == nullptr);
  CHECK_FALSE(srv.lean->next_layer().is_open());
  srv.lean.reset();
  std::string in;
  std::string buf(16, '\0');
  while (in.size() < 5) {
    auto [ec, n] = srv.run([&](auto h) { moved->async_read_some(asio::buffer(buf), h); });
    REQUIRE_FALSE(ec);
    in.append(buf, 0, n);
  }
  CHECK(in == "hello");
  std::string w = "world";
  auto [ec, n] = srv.run([&](auto h) { moved->async_write_some(asio::buffer(w), h); });
  CHECK_FALSE(ec);
  CHECK(n == 5);
  auto fut = got.get_future();
  CHECK(fut.get() == "world");
  client.join();
}

TEST_CASE("LeanTls handshake with a client that does not speak TLS ends with a TLS error", "[session][lean_tls]") {
  Pki pki;
  Server srv;
  std::promise<std::string> answer;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      const std::string req = "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n";
      if (::send(c.fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
        throw std::runtime_error("send");
      std::string got;
      char b[256];
      for (ssize_t r; (r = ::recv(c.fd, b, sizeof b, 0)) > 0;) got.append(b, static_cast<size_t>(r));
      answer.set_value(got);
    } catch (...) {
      answer.set_exception(std::current_exception());
    }
  });
  beast::error_code ec = srv.accept_and_handshake(*pki.ctx);
  CHECK(ec);
  CHECK(ec.category() == asio::error::get_ssl_category());
  srv.lean.reset();  // closes the socket: the client's read ends
  auto fut = answer.get_future();
  const std::string got = fut.get();
  // What the server sent, if anything, is a TLS alert record (content type 21), never plaintext.
  if (!got.empty()) CHECK(static_cast<unsigned char>(got[0]) == 21);
  client.join();
}

TEST_CASE("LeanTls waits while the socket buffer is full and keeps the byte stream intact", "[session][lean_tls]") {
  Pki pki;
  Server srv;
  const size_t total = 2u << 20;
  const std::string data = pattern(total);
  std::promise<void> start_reading;
  std::promise<std::string> received;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca, 4096);
      c.connect();
      start_reading.get_future().get();
      received.set_value(c.read_exact(total));
    } catch (...) {
      received.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  srv.lean->next_layer().set_option(asio::socket_base::send_buffer_size(4096));
  const int fd = srv.lean->next_layer().native_handle();

  size_t off = 0, calls = 0, partial = 0;
  bool reader_started = false;
  bool waited = false;  // a write was started while the socket was not writable and the client not reading
  while (off < total) {
    const size_t offer = std::min<size_t>(64 * 1024, total - off);
    bool done = false;
    std::pair<beast::error_code, size_t> res;
    srv.lean->async_write_some(asio::buffer(data.data() + off, offer), [&](beast::error_code ec, size_t n) {
      res = {ec, n};
      done = true;
    });
    if (!reader_started) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 0) == 0) {
        // Not writable: this write must wait for the client, which starts reading only now.
        waited = true;
        reader_started = true;
        start_reading.set_value();
      }
    }
    srv.ioc.restart();
    while (!done) srv.ioc.run_one();
    REQUIRE_FALSE(res.first);
    REQUIRE(res.second > 0);
    if (res.second < offer) ++partial;
    off += res.second;
    ++calls;
  }
  if (!reader_started) start_reading.set_value();
  auto fut = received.get_future();
  const std::string got = fut.get();
  client.join();
  CHECK(waited);
  INFO("write calls " << calls << ", of which partial " << partial);
  CHECK(got.size() == total);
  CHECK(got == data);
}

TEST_CASE("LeanTls tells close_notify from an end of stream without it", "[session][lean_tls]") {
  Pki pki(16);
  Server srv;
  const bool with_close_notify = GENERATE(true, false);
  // A kept session (an authorized agent's) makes OpenSSL read a missing close_notify as one; the
  // stream must still tell them apart.
  const auto resumption = GENERATE(LeanTls::Resumption::forget, LeanTls::Resumption::keep);
  INFO("close_notify " << with_close_notify << ", keep " << (resumption == LeanTls::Resumption::keep));
  std::promise<void> done;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      c.connect();
      c.write("bye");
      if (with_close_notify) SSL_shutdown(c.ssl);
      ::shutdown(c.fd, SHUT_WR);  // end of stream; the socket stays open until the test is over
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  srv.lean->set_resumption(resumption);
  CHECK(srv.read_exact(3) == "bye");
  std::string buf(100, '\0');
  auto [ec, n] = srv.read(buf);
  CHECK(n == 0);
  if (with_close_notify) {
    CHECK(ec == asio::error::eof);
  } else {
    CHECK(ec == asio::ssl::error::stream_truncated);  // truncation is reported as such, not as eof
  }
  client.join();
  done.get_future().get();
}

TEST_CASE("LeanTls keeps a resumable session in the server cache only when told to even after a cut connection",
          "[session][lean_tls]") {
  // The agent listener keeps the sessions of authorized agents (Resumption::keep); OpenSSL alone
  // drops a session whose connection ended without close_notify (its fatal "unexpected EOF" alert),
  // which is how connections end in the storms resumption is for.
  Pki pki(16);
  Server srv;
  const auto resumption = GENERATE(LeanTls::Resumption::forget, LeanTls::Resumption::keep);
  const bool cut = GENERATE(true, false);
  INFO("keep " << (resumption == LeanTls::Resumption::keep) << ", cut " << cut);
  SSL_CTX* sctx = pki.ctx->native_handle();
  std::promise<void> done;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      c.connect();
      c.write("hi");
      (void)c.read_exact(2);  // the server's answer; the TLS 1.3 ticket came before it
      if (!cut) SSL_shutdown(c.ssl);
      ::shutdown(c.fd, SHUT_WR);
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  CHECK(SSL_CTX_sess_number(sctx) == 1);  // the handshake's stateful ticket names this session
  srv.lean->set_resumption(resumption);
  CHECK(srv.read_exact(2) == "hi");
  std::string yo = "yo";
  auto [wec, wn] = srv.run([&](auto h) { srv.lean->async_write_some(asio::buffer(yo), h); });
  REQUIRE_FALSE(wec);
  std::string buf(100, '\0');
  auto [ec, n] = srv.read(buf);
  CHECK(n == 0);
  CHECK(ec == (cut ? beast::error_code(asio::ssl::error::stream_truncated) : beast::error_code(asio::error::eof)));
  client.join();
  done.get_future().get();
  srv.lean.reset();
  CHECK(SSL_CTX_sess_number(sctx) == (resumption == LeanTls::Resumption::keep ? 1 : 0));
}

TEST_CASE("LeanTls shutdown sends close_notify without waiting for the peer's, teardown closes the socket",
          "[session][lean_tls]") {
  Pki pki;
  Server srv;
  std::promise<void> server_closed;
  std::promise<int> client_saw;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      c.connect();
      server_closed.get_future().get();  // the client sends nothing until the server is done
      char b[16];
      size_t n = 0;
      int r = SSL_read_ex(c.ssl, b, sizeof b, &n);
      client_saw.set_value(SSL_get_error(c.ssl, r));
    } catch (...) {
      client_saw.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  bool done = false;
  beast::error_code tec = asio::error::would_block;
  async_teardown(beast::role_type::server, *srv.lean, [&](beast::error_code ec) {
    tec = ec;
    done = true;
  });
  srv.ioc.restart();
  while (!done) srv.ioc.run_one();
  CHECK_FALSE(tec);
  CHECK_FALSE(srv.lean->next_layer().is_open());
  server_closed.set_value();
  auto fut = client_saw.get_future();
  CHECK(fut.get() == SSL_ERROR_ZERO_RETURN);  // the client got close_notify
  client.join();

  // On a closed socket OpenSSL is not called at all.
  std::string buf(16, '\0');
  auto [ec, n] = srv.read(buf);
  CHECK(ec == asio::error::bad_descriptor);
  CHECK(n == 0);
}

TEST_CASE("LeanTls moves every record that is there in one read and as many as the socket takes in one write",
          "[session][lean_tls]") {
  // One completion per record would cost a posted completion (and a wake-up) per 16 KiB of a 1 MiB
  // tunnel message.
  Pki pki;
  Server srv;
  const std::string up = pattern(64 * 1024), down = pattern(256 * 1024);
  std::promise<void> written;
  std::promise<std::string> received;
  std::thread client([&, port = srv.port()] {
    try {
      Client c(port, pki.ca);
      c.connect();
      c.write(up);  // four records; at least the receive window's worth (more than one) is at the server
      written.set_value();
      received.set_value(c.read_exact(down.size()));
    } catch (...) {
      written.set_exception(std::current_exception());
    }
  });
  srv.accept_tls(*pki.ctx);
  written.get_future().get();
  std::string buf(128 * 1024, '\0'), in;
  size_t first_read = 0;
  while (in.size() < up.size()) {
    auto [ec, n] = srv.read(buf);
    REQUIRE_FALSE(ec);
    if (in.empty()) first_read = n;
    in.append(buf, 0, n);
  }
  CHECK(first_read > 16 * 1024);  // more than one record in the first read
  CHECK(in == up);
  size_t off = 0, first = 0;
  while (off < down.size()) {
    auto [wec, wn] = srv.run([&](auto h) { srv.lean->async_write_some(asio::buffer(down.data() + off, down.size() - off), h); });
    REQUIRE_FALSE(wec);
    if (off == 0) first = wn;
    off += wn;
  }
  CHECK(first > 16 * 1024);  // more than one record in the first write
  auto fut = received.get_future();
  CHECK(fut.get() == down);
  client.join();
}
