#include "kube/client.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cctype>
#include <deque>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "common/no_throw.hpp"
#include "common/log.hpp"
#include "common/net.hpp"
#include "common/thread_annotations.hpp"

namespace cg::kube {
using namespace cg::net;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto kIdleMaxAge = std::chrono::seconds(50);  // below common server idle timeouts (60-90 s)
constexpr size_t kMaxLine = 64u << 20;  // largest single watch event accepted

bool is_ip(const std::string& h) {
  boost::system::error_code ec;
  asio::ip::make_address(h, ec);
  return !ec;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string ec_text(const beast::error_code& ec) {
  if (ec == beast::error::timeout) return "timeout";
  return ec.message();
}

std::optional<std::chrono::seconds> parse_retry_after(std::string_view v) {
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  if (v.empty() || v.size() > 9) return std::nullopt;
  long long n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;  // the HTTP-date form is not used by Kubernetes
    n = n * 10 + (c - '0');
  }
  return std::chrono::seconds(n);
}

// Token bucket like golang.org/x/time/rate (what client-go's QPS/burst limiter uses): a request
// reserves a token, possibly going into debt, and waits until the debt is paid.
class RateLimiter {
 public:
  RateLimiter(double qps, int burst) : qps_(qps), burst_(std::max(1, burst)), tokens_(burst_), last_(steady::now()) {}
  steady::duration reserve() CG_EXCLUDES(mu_) {
    if (qps_ <= 0) return {};
    cg::MutexLock lk(mu_);
    auto now = steady::now();
    double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min<double>(burst_, tokens_ + elapsed * qps_);
    tokens_ -= 1;
    if (tokens_ >= 0) return {};
    return std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(-tokens_ / qps_));
  }

 private:
  cg::Mutex mu_;  // a leaf
  const double qps_;
  const double burst_;
  double tokens_ CG_GUARDED_BY(mu_);
  steady::time_point last_ CG_GUARDED_BY(mu_);
};

struct Conn {
  Conn(asio::io_context& ioc, asio::ssl::context& ctx, uint64_t id)
      : stream(asio::make_strand(ioc), ctx), resolver(stream.get_executor()), timer(stream.get_executor()), id(id) {}
  TlsStream stream;
  tcp::resolver resolver;
  asio::steady_timer timer;  // deadline of a name resolution
  beast::flat_buffer buf;
  bool open = false;
  uint64_t id;

  void close() {
    beast::error_code ig;
    resolver.cancel();
    timer.cancel();
    beast::get_lowest_layer(stream).socket().close(ig);
    open = false;
  }
};

}  // namespace

// --- Response ----------------------------------------------------------------------------------

const char* to_string(WatchEndReason r) {
  switch (r) {
    case WatchEndReason::EndOfStream: return "end of stream";
    case WatchEndReason::Refused: return "refused";
    case WatchEndReason::Failed: return "failed";
    case WatchEndReason::Idle: return "idle";
    case WatchEndReason::Cancelled: return "cancelled";
  }
  return "unknown";
}

std::string Response::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

std::string Response::message() const {
  if (status == 0) return error.empty() ? "no response" : error;
  try {
    auto j = nlohmann::json::parse(body);
    if (j.is_object() && j.value("kind", "") == "Status" && j.contains("message") && j["message"].is_string())
      return "HTTP " + std::to_string(status) + ": " + j["message"].get<std::string>();
  } catch (const std::exception&) {
  }
  std::string b = body.substr(0, 200);
  while (!b.empty() && (b.back() == '\n' || b.back() == '\r')) b.pop_back();
  return "HTTP " + std::to_string(status) + (b.empty() ? "" : ": " + b);
}

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// --- Impl --------------------------------------------------------------------------------------

namespace {
struct Exchange;
struct WatchOp;
}  // namespace

struct KubeClient::Impl : std::enable_shared_from_this<KubeClient::Impl> {
  Impl(asio::io_context& ioc, KubeConfig c, ClientOptions o)
      : ioc(ioc), cfg(std::move(c)), opts(std::move(o)), ssl(asio::ssl::context::tls_client), limiter(opts.qps, opts.burst) {
    if (opts.user_agent.empty()) opts.user_agent = std::string("cluster-gateway/") + CG_VERSION;
    if (opts.max_connections == 0) opts.max_connections = 1;
    SSL_CTX_set_min_proto_version(ssl.native_handle(), TLS1_2_VERSION);
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ssl.native_handle(), alpn, sizeof(alpn));
    beast::error_code ec;
    if (cfg.insecure_skip_tls_verify) {
      ssl.set_verify_mode(asio::ssl::verify_none);
    } else {
      ssl.set_verify_mode(asio::ssl::verify_peer);
      if (cfg.ca_pem.empty()) ssl.set_default_verify_paths(ec);
      else ssl.add_certificate_authority(asio::buffer(cfg.ca_pem), ec);
      if (ec) throw std::runtime_error("kubernetes CA bundle cannot be loaded: " + ec.message());
    }
    if (!cfg.client_cert_pem.empty()) {
      ssl.use_certificate_chain(asio::buffer(cfg.client_cert_pem), ec);
      if (ec) throw std::runtime_error("kubernetes client certificate cannot be loaded: " + ec.message());
      ssl.use_private_key(asio::buffer(cfg.client_key_pem), asio::ssl::context::pem, ec);
      if (ec) throw std::runtime_error("kubernetes client key cannot be loaded: " + ec.message());
      if (SSL_CTX_check_private_key(ssl.native_handle()) != 1)
        throw std::runtime_error("kubernetes client key does not match the client certificate");
    }
  }

  asio::io_context& ioc;
  KubeConfig cfg;
  ClientOptions opts;
  asio::ssl::context ssl;
  RateLimiter limiter;

  // Guards the pool, the queue, the operations in flight and the stats (any thread). A leaf: under
  // it only posts, Conn::close() of a connection no operation uses, and the arming of a rate-limit
  // timer (see after_limiter()).
  cg::Mutex mu;
  bool shut CG_GUARDED_BY(mu) = false;
  size_t active CG_GUARDED_BY(mu) = 0;
  struct Idle {
    std::shared_ptr<Conn> conn;
    steady::time_point since;
  };
  std::vector<Idle> idle CG_GUARDED_BY(mu);
  std::deque<std::shared_ptr<Exchange>> queue CG_GUARDED_BY(mu);
  std::map<Conn*, std::weak_ptr<Conn>> busy CG_GUARDED_BY(mu);
  std::set<std::shared_ptr<asio::steady_timer>> timers CG_GUARDED_BY(mu);  // rate-limit waits
  std::map<WatchOp*, std::weak_ptr<WatchOp>> watches CG_GUARDED_BY(mu);
  ClientStats stats CG_GUARDED_BY(mu);
  uint64_t next_id CG_GUARDED_BY(mu) = 0;

  std::shared_ptr<Conn> new_conn_locked() CG_REQUIRES(mu) {
    auto c = std::make_shared<Conn>(ioc, ssl, ++next_id);
    busy[c.get()] = c;
    return c;
  }
  // An idle connection young enough to reuse and still open at the server, or null. Others are closed.
  std::shared_ptr<Conn> take_idle_locked() CG_REQUIRES(mu) {
    auto now = steady::now();
    while (!idle.empty()) {
      Idle i = std::move(idle.back());
      idle.pop_back();
      const bool stale = closed_by_peer(i.conn->stream);
      if (stale) ++stats.stale_idle;
      if (stale || now - i.since > kIdleMaxAge) {
        asio::post(i.conn->stream.get_executor(), [c = i.conn] { c->close(); });
        continue;
      }
      busy[i.conn.get()] = i.conn;
      return i.conn;
    }
    return nullptr;
  }
  // Returns a connection that finished an exchange: kept idle when reusable, else closed.
  // Must run on the connection's strand.
  void release_conn(const std::shared_ptr<Conn>& c, bool reusable) CG_EXCLUDES(mu) {
    cg::MutexLock lk(mu);
    busy.erase(c.get());
    if (reusable && c->open && !shut) {
      beast::get_lowest_layer(c->stream).expires_never();
      idle.push_back({c, steady::now()});
      if (idle.size() > opts.max_idle) {
        auto old = idle.front().conn;
        idle.erase(idle.begin());
        asio::post(old->stream.get_executor(), [old] { old->close(); });
      }
    } else {
      c->close();
    }
  }

  // Waits for the rate limiter, then runs `fn` (or `fail` after shutdown).
  void after_limiter(std::function<void()> fn, std::function<void()> fail) CG_EXCLUDES(mu);

  void enqueue(std::shared_ptr<Exchange> ex) CG_EXCLUDES(mu);
  void exchange_done(const std::shared_ptr<Exchange>& ex) CG_EXCLUDES(mu);  // frees the slot and starts the next queued exchange
  void shutdown() CG_EXCLUDES(mu);
};

namespace {

using ImplPtr = std::shared_ptr<KubeClient::Impl>;

// Sets the TLS name checks on a new connection and connects it: resolve, TCP, TLS handshake.
// `deadline_ms` bounds the name resolution; the tcp_stream's expiry (set by the caller) bounds the rest.
void connect_conn(const ImplPtr& impl, const std::shared_ptr<Conn>& c, std::chrono::milliseconds timeout,
                  const std::function<void(beast::error_code, const char* phase)>& done) {
  const KubeConfig& cfg = impl->cfg;
  const std::string& name = cfg.tls_server_name.empty() ? cfg.host : cfg.tls_server_name;
  if (!is_ip(name)) SSL_set_tlsext_host_name(c->stream.native_handle(), name.c_str());
  if (!cfg.insecure_skip_tls_verify) c->stream.set_verify_callback(asio::ssl::host_name_verification(name));

  auto on_connected = [impl, c, done](beast::error_code ec) {
    if (ec) return done(ec, "connect");
    {
      cg::MutexLock lk(impl->mu);
      ++impl->stats.connections_opened;
    }
    c->stream.async_handshake(asio::ssl::stream_base::client, [c, done](beast::error_code ec) {
      if (!ec) c->open = true;
      done(ec, "tls handshake");
    });
  };
  beast::error_code ec;
  auto addr = asio::ip::make_address(cfg.host, ec);
  if (!ec) {
    tcp::endpoint ep(addr, static_cast<unsigned short>(std::stoi(cfg.port)));
    beast::get_lowest_layer(c->stream).async_connect(ep, on_connected);
    return;
  }
  c->timer.expires_after(timeout);
  c->timer.async_wait([c](beast::error_code ec) {
    if (!ec) c->resolver.cancel();
  });
  c->resolver.async_resolve(cfg.host, cfg.port,
                            [c, done, on_connected](beast::error_code ec, const tcp::resolver::results_type& results) {
                              bool timed_out = c->timer.expiry() <= steady::now();
                              c->timer.cancel();
                              if (ec) return done(timed_out ? beast::error::timeout : ec, "resolve");
                              beast::get_lowest_layer(c->stream).async_connect(
                                  results, [on_connected](beast::error_code ec, const tcp::endpoint&) { on_connected(ec); });
                            });
}

template <class Body>
void set_common_headers(const KubeClient::Impl& impl, http::request<Body>& r) {
  r.set(http::field::host, impl.cfg.host_header());
  r.set(http::field::user_agent, impl.opts.user_agent);
  r.set(http::field::accept, "application/json");
  std::string token = impl.cfg.token();
  if (!token.empty()) r.set(http::field::authorization, "Bearer " + token);
  r.keep_alive(true);
}

// One plain request/response exchange.
struct Exchange : std::enable_shared_from_this<Exchange> {
  ImplPtr impl;
  Request req;
  KubeClient::Callback done;
  std::shared_ptr<Conn> conn;
  bool reused = false;
  bool retried = false;
  http::request<http::string_body> hreq;
  std::optional<http::response_parser<http::string_body>> parser;

  void start() {
    asio::post(conn->stream.get_executor(), [self = shared_from_this()] { self->run(); });
  }

  void run() {
    hreq = {};
    hreq.method_string(req.method);
    hreq.target(impl->cfg.base_path + req.path);
    hreq.version(11);
    set_common_headers(*impl, hreq);
    if (!req.headers.empty()) {
      // Relayed as given: no Accept or User-Agent of the client's own.
      hreq.erase(http::field::accept);
      hreq.erase(http::field::user_agent);
    }
    // A relayed Authorization is sent only by a client without a token of its own (the mesh's peer
    // client, authenticated by its certificate): it is the caller's, and the serving replica hands it to
    // the agent as the entry replica's own tunnel would. It never replaces this client's token.
    const bool own_token = hreq.find(http::field::authorization) != hreq.end();
    for (const auto& [name, value] : req.headers) {
      if (beast::iequals(name, "host") || connection_field(name) || (own_token && beast::iequals(name, "authorization")))
        continue;
      hreq.set(name, value);
    }
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
      if (!req.content_type.empty() || hreq.find(http::field::content_type) == hreq.end())
        hreq.set(http::field::content_type, req.content_type.empty() ? "application/json" : req.content_type);
      hreq.body() = req.body;
      hreq.prepare_payload();
    }
    conn->buf.consume(conn->buf.size());
    beast::get_lowest_layer(conn->stream).expires_after(req.timeout);
    {
      cg::MutexLock lk(impl->mu);
      ++impl->stats.requests;
    }
    if (conn->open) return write();
    connect_conn(impl, conn, req.timeout, [self = shared_from_this()](beast::error_code ec, const char* phase) {
      if (ec) return self->fail(ec, phase);
      self->write();
    });
  }

  void write() {
    http::async_write(conn->stream, hreq, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->fail(ec, "write");
      self->read();
    });
  }

  void read() {
    parser.emplace();
    parser->header_limit(64 * 1024);
    parser->body_limit(impl->opts.body_limit);
    if (req.method == "HEAD") parser->skip(true);  // the answer to HEAD has no body, whatever its Content-Length
    http::async_read(conn->stream, conn->buf, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->fail(ec, "read");
      self->succeed();
    });
  }

  // GET and HEAD may be sent twice; a PATCH, POST, PUT or DELETE that may have reached the server not.
  bool idempotent() const { return req.method == "GET" || req.method == "HEAD"; }

  void fail(const beast::error_code& ec, const char* phase) {
    const bool nothing_received = !parser || !parser->got_some();
    const bool write_failed = std::string_view(phase) == "write";
    // The server closed the kept-alive connection as the request went out (its idle timeout): send it
    // once more on a new connection when that cannot do it twice.
    const bool may_resend = write_failed ? ec != beast::error::timeout : idempotent() && stale_connection_error(ec);
    if (reused && !retried && nothing_received && may_resend) {
      retried = true;
      reused = false;
      conn->close();
      {
        cg::MutexLock lk(impl->mu);
        impl->busy.erase(conn.get());
        if (!impl->shut) {
          ++impl->stats.retries;
          conn = impl->new_conn_locked();
          start();
          return;
        }
      }
    }
    Response r;
    r.error = std::string(phase) + ": " + ec_text(ec);
    if (ec == beast::error::timeout) r.error = "timeout after " + std::to_string(req.timeout.count()) + "ms (" + phase + ")";
    {
      cg::MutexLock lk(impl->mu);
      if (impl->shut) r.error = std::string(kShutDownError);
    }
    impl->release_conn(conn, false);
    finish(std::move(r));
  }

  void succeed() {
    auto& m = parser->get();
    Response r;
    r.status = static_cast<int>(m.result_int());
    for (const auto& f : m) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    r.body = std::move(m.body());
    if (auto it = m.find(http::field::retry_after); it != m.end()) r.retry_after = parse_retry_after(it->value());
    impl->release_conn(conn, m.keep_alive());
    finish(std::move(r));
  }

  void finish(Response r) {
    auto cb = std::move(done);
    impl->exchange_done(shared_from_this());
    if (cb) cb(std::move(r));
  }
};

// One watch: a dedicated connection streaming newline-delimited JSON events.
struct WatchOp : WatchHandle, std::enable_shared_from_this<WatchOp> {
  ImplPtr impl;
  std::string path;
  KubeClient::LineCallback on_line;
  KubeClient::DoneCallback on_done;
  std::chrono::milliseconds idle_timeout{0};
  // The connection, for the watch's own steps: set in begin() before the first step is posted to its
  // strand, reset by release() on that strand, read there only.
  std::shared_ptr<Conn> conn;
  // The same connection, for cancel() from any thread: set and reset together with `conn`.
  cg::Mutex mu;  // a leaf
  std::shared_ptr<Conn> cancel_target CG_GUARDED_BY(mu);
  std::atomic<bool> cancelled{false};
  std::atomic<bool> finished{false};
  http::request<http::empty_body> hreq;
  std::optional<http::response_parser<http::string_body>> parser;
  std::string pending;
  bool streaming = false;
  // Chunk bodies of the stream go to `pending` (the parser keeps a reference to this callback).
  std::function<std::uint64_t(std::uint64_t, beast::string_view, beast::error_code&)> chunk_cb;

  void cancel() override {
    cancelled = true;
    cg::MutexLock lk(mu);
    // Closed on the connection's strand, and only while this watch still owns it (it may have gone back
    // to the pool after a clean end of the stream).
    if (cancel_target) {
      asio::post(cancel_target->stream.get_executor(), [self = shared_from_this()] {
        cg::MutexLock lk(self->mu);
        if (self->cancel_target) self->cancel_target->close();
      });
    }
  }

  // Gives the connection back (must run on its strand); a cancelled watch never returns it to the pool.
  void release(bool reusable) {
    {
      cg::MutexLock lk(mu);
      cancel_target.reset();
    }
    std::shared_ptr<Conn> c = std::move(conn);
    if (c) impl->release_conn(c, reusable && !cancelled);
  }

  void begin() {  // after the rate limiter
    std::shared_ptr<Conn> c;
    {
      cg::MutexLock lk(impl->mu);
      if (impl->shut) cancelled = true;
      else {
        c = impl->new_conn_locked();
        ++impl->stats.watches;
      }
    }
    if (!c) return end_cancelled();
    {
      cg::MutexLock lk(mu);
      conn = c;
      cancel_target = c;
    }
    asio::post(c->stream.get_executor(), [self = shared_from_this()] { self->run(); });
  }

  void run() {
    if (cancelled) return fail({}, "cancelled");
    hreq = {};
    hreq.method(http::verb::get);
    hreq.target(impl->cfg.base_path + path);
    hreq.version(11);
    set_common_headers(*impl, hreq);
    beast::get_lowest_layer(conn->stream).expires_after(impl->opts.watch_header_timeout);
    connect_conn(impl, conn, impl->opts.watch_header_timeout,
                 [self = shared_from_this()](beast::error_code ec, const char* phase) {
                   if (ec) return self->fail(ec, phase);
                   http::async_write(self->conn->stream, self->hreq, [self](beast::error_code ec, size_t) {
                     if (ec) return self->fail(ec, "write");
                     self->read_header();
                   });
                 });
  }

  void read_header() {
    parser.emplace();
    parser->header_limit(64 * 1024);
    parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::async_read_header(conn->stream, conn->buf, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->fail(ec, "read");
      if (self->parser->get().result_int() != 200) return self->read_error_body();
      self->streaming = true;
      self->chunk_cb = [op = self.get()](std::uint64_t, beast::string_view body, beast::error_code& ec) -> std::uint64_t {
        op->pending.append(body.data(), body.size());
        if (op->pending.size() > kMaxLine) ec = http::error::body_limit;
        return body.size();
      };
      self->parser->on_chunk_body(self->chunk_cb);
      self->read_some();
    });
  }

  void read_error_body() {
    parser->body_limit(impl->opts.body_limit);
    http::async_read(conn->stream, conn->buf, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
      WatchEnd e;
      e.reason = self->cancelled ? WatchEndReason::Cancelled : WatchEndReason::Refused;
      e.status = static_cast<int>(self->parser->get().result_int());
      e.body = self->parser->get().body();
      if (auto it = self->parser->get().find(http::field::retry_after); it != self->parser->get().end())
        e.retry_after = parse_retry_after(it->value());
      if (ec && !self->cancelled) e.error = "read: " + ec_text(ec);
      self->release(!ec && self->parser->get().keep_alive());
      self->end(std::move(e));
    });
  }

  void read_some() {
    if (cancelled) return fail({}, "cancelled");
    beast::get_lowest_layer(conn->stream).expires_after(idle_timeout);
    http::async_read_some(conn->stream, conn->buf, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
      // Non-chunked bodies land in the string body; chunked ones went to `pending` already.
      auto& b = self->parser->get().body();
      if (!b.empty()) {
        self->pending += b;
        b.clear();
      }
      if (!self->cancelled) self->deliver_lines();
      if (ec && !(self->parser->is_done() && (ec == http::error::end_of_stream || ec == asio::error::eof)))
        return self->fail(ec, "read");
      if (self->parser->is_done()) {
        if (!self->pending.empty() && !self->cancelled) {
          self->pending += '\n';
          self->deliver_lines();
        }
        WatchEnd e;
        e.status = 200;
        e.reason = self->cancelled ? WatchEndReason::Cancelled : WatchEndReason::EndOfStream;
        self->release(self->parser->get().keep_alive());
        return self->end(std::move(e));
      }
      self->read_some();
    });
  }

  void deliver_lines() {
    size_t start = 0;
    for (;;) {
      size_t nl = pending.find('\n', start);
      if (nl == std::string::npos) break;
      std::string_view line(pending.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      start = nl + 1;
      if (line.empty()) continue;
      if (cancelled) break;
      if (on_line) on_line(line);
    }
    pending.erase(0, start);
  }

  void fail(const beast::error_code& ec, const char* phase) {
    {
      cg::MutexLock lk(impl->mu);
      if (impl->shut) cancelled = true;
    }
    WatchEnd e;
    e.status = streaming ? 200 : 0;
    if (cancelled) {
      e.reason = WatchEndReason::Cancelled;
    } else if (streaming && ec == beast::error::timeout) {
      e.reason = WatchEndReason::Idle;
      e.error = "no byte for " + std::to_string(idle_timeout.count()) + "ms";
    } else {
      e.reason = WatchEndReason::Failed;
      e.error = std::string(phase) + ": " + ec_text(ec);
    }
    if (ec == http::error::body_limit) e.error = "watch event larger than " + std::to_string(kMaxLine) + " bytes";
    release(false);
    end(std::move(e));
  }

  void end_cancelled() {
    WatchEnd e;
    e.reason = WatchEndReason::Cancelled;
    end(std::move(e));
  }

  void end(WatchEnd e) {
    if (finished.exchange(true)) return;
    {
      cg::MutexLock lk(impl->mu);
      impl->watches.erase(this);
    }
    auto cb = std::move(on_done);
    on_line = nullptr;
    if (cb) cb(std::move(e));
  }
};

}  // namespace

void KubeClient::Impl::after_limiter(std::function<void()> fn, std::function<void()> fail) {
  auto wait = limiter.reserve();
  if (wait <= steady::duration::zero()) {
    asio::post(ioc, std::move(fn));
    return;
  }
  // The wait runs on a strand private to the waiting request or watch (it has no connection, and so
  // no connection strand, yet). It is armed under `mu`: once the timer is in `timers`, shutdown() may
  // post its cancel() to that strand, which must not run while this thread is still inside
  // expires_after()/async_wait() (a timer is not safe for concurrent use, and a cancel() before
  // async_wait() would be lost). The handler never runs inline from async_wait(), so taking `mu` in it
  // cannot deadlock.
  auto t = std::make_shared<asio::steady_timer>(asio::make_strand(ioc));
  cg::MutexLock lk(mu);
  if (shut) {
    asio::post(ioc, std::move(fail));
    return;
  }
  ++stats.throttled;
  timers.insert(t);
  t->expires_after(wait);
  t->async_wait([self = shared_from_this(), t, fn = std::move(fn), fail = std::move(fail)](beast::error_code) {
    bool shut_now;
    {
      cg::MutexLock lk(self->mu);
      self->timers.erase(t);
      shut_now = self->shut;
    }
    if (shut_now) fail();
    else fn();
  });
}

void KubeClient::Impl::enqueue(std::shared_ptr<Exchange> ex) {
  cg::MutexLock lk(mu);
  if (shut) {
    lk.unlock();
    Response r;
    r.error = std::string(kShutDownError);
    auto cb = std::move(ex->done);
    if (cb) cb(std::move(r));
    return;
  }
  if (active >= opts.max_connections) {
    queue.push_back(std::move(ex));
    return;
  }
  ++active;
  ex->conn = take_idle_locked();
  ex->reused = ex->conn != nullptr;
  if (!ex->conn) ex->conn = new_conn_locked();
  lk.unlock();
  ex->start();
}

void KubeClient::Impl::exchange_done(const std::shared_ptr<Exchange>&) {
  std::shared_ptr<Exchange> next;
  {
    cg::MutexLock lk(mu);
    if (active > 0) --active;
    if (!shut && !queue.empty() && active < opts.max_connections) {
      next = std::move(queue.front());
      queue.pop_front();
      ++active;
      next->conn = take_idle_locked();
      next->reused = next->conn != nullptr;
      if (!next->conn) next->conn = new_conn_locked();
    }
  }
  if (next) next->start();
}

void KubeClient::Impl::shutdown() {
  std::deque<std::shared_ptr<Exchange>> q;
  std::vector<Idle> idles;
  std::vector<std::shared_ptr<Conn>> conns;
  std::set<std::shared_ptr<asio::steady_timer>> ts;
  std::vector<std::shared_ptr<WatchOp>> ws;
  {
    cg::MutexLock lk(mu);
    if (shut) return;
    shut = true;
    q.swap(queue);
    idles.swap(idle);
    ts.swap(timers);
    for (auto& [p, w] : busy)
      if (auto c = w.lock()) conns.push_back(c);
    for (auto& [p, w] : watches)
      if (auto op = w.lock()) ws.push_back(op);
  }
  for (auto& w : ws) w->cancel();  // first: their connections closing below must read as a cancellation
  for (auto& t : ts) asio::post(t->get_executor(), [t] { t->cancel(); });
  for (auto& i : idles) asio::post(i.conn->stream.get_executor(), [c = i.conn] { c->close(); });
  for (auto& c : conns) asio::post(c->stream.get_executor(), [c] { c->close(); });
  for (auto& ex : q) {
    asio::post(ioc, [ex] {
      Response r;
      r.error = std::string(kShutDownError);
      auto cb = std::move(ex->done);
      if (cb) cb(std::move(r));
    });
  }
}

// --- KubeClient --------------------------------------------------------------------------------

KubeClient::KubeClient(asio::io_context& ioc, KubeConfig cfg, ClientOptions opts)
    : impl_(std::make_shared<Impl>(ioc, std::move(cfg), std::move(opts))) {}

KubeClient::~KubeClient() {
  no_throw("KubeClient::~KubeClient", [this] { shutdown(); });
}

void KubeClient::request(Request req, Callback done) {
  auto ex = std::make_shared<Exchange>();
  ex->impl = impl_;
  ex->req = std::move(req);
  ex->done = std::move(done);
  impl_->after_limiter([ex] { ex->impl->enqueue(ex); },
                       [ex] {
                         Response r;
                         r.error = std::string(kShutDownError);
                         auto cb = std::move(ex->done);
                         if (cb) cb(std::move(r));
                       });
}

std::shared_ptr<WatchHandle> KubeClient::watch(std::string path_with_query, LineCallback on_line, DoneCallback on_done,
                                               WatchOptions opts) {
  auto op = std::make_shared<WatchOp>();
  op->impl = impl_;
  op->idle_timeout = opts.idle_timeout.count() > 0 ? opts.idle_timeout : impl_->opts.watch_idle_timeout;
  op->path = std::move(path_with_query);
  op->on_line = std::move(on_line);
  op->on_done = std::move(on_done);
  {
    cg::MutexLock lk(impl_->mu);
    if (!impl_->shut) impl_->watches[op.get()] = op;
  }
  impl_->after_limiter([op] { op->begin(); }, [op] { op->end_cancelled(); });
  return op;
}

void KubeClient::shutdown() { impl_->shutdown(); }

const KubeConfig& KubeClient::config() const { return impl_->cfg; }

asio::io_context& KubeClient::io_context() const { return impl_->ioc; }

ClientStats KubeClient::stats() const {
  cg::MutexLock lk(impl_->mu);
  return impl_->stats;
}

}  // namespace cg::kube
