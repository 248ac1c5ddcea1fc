// cluster-agent-sim: N simulated OpenChoreo cluster agents in one process. Speaks upstream's agent
// protocol: dials wss://…/ws?planeID=…&planeType=… with a client certificate, answers pings (pongs
// come from the WebSocket layer while reading), answers HTTP tunnel requests from a built-in
// responder, reconnects after --reconnect-delay, and reconnects promptly (0–750 ms jitter) on GOAWAY.
// --close-mode upstream behaves like upstream's agent (gorilla websocket, commit ad3f503) when a
// connection ends: it answers a close frame with a close frame, stops reading and never closes the
// old socket (it sits in CLOSE-WAIT once the gateway closes its side), and reconnects on a new socket
// after --reconnect-delay; it ignores GOAWAY. --close-mode silent does the same without answering
// the close frame. SIGUSR1 makes every agent send a close frame (1000) itself; in those modes it then
// keeps the socket open too.
// --tls-resume offers the TLS session of an agent's previous connection when it reconnects (as a Go
// client with a ClientSessionCache; upstream's agent has none). SIGUSR2 cuts every agent's connection
// at once (the socket closed, no close frame, no close_notify: a network cut) and each agent
// reconnects at once: a reconnect storm (bench/modes/storm.py).
// Rude modes (tests/gateway/test_rude_agents.py; tests/fakes/agent_sim/README.md): --reply-fault breaks
// replies (bad base64, wrong types, a body on 204, CR/LF in a header), --reply-delay answers late
// (after the gateway's timeout, or after the caller left), both limited to paths containing
// --fault-path; --stop-reading stops reading the socket (after the first request or after a time);
// --stream-overrun sends more than a stream's flow-control window; --client-ca-cert/--client-ca-key
// or --client-cert-dir give every agent a certificate of its own.
// For load tests (bench/): --source-ip spreads connections over several local addresses (more than
// one address's ephemeral ports), --connect-rate paces the first connections, --plane-spread spreads
// the agents over several planeIDs.
#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <deque>
#include <boost/asio/signal_set.hpp>
#include <boost/url/parse.hpp>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include "common/log.hpp"
#include "common/malloc_tuning.hpp"
#include "common/net.hpp"
#include "common/time.hpp"
#include "responder.hpp"
#include "streams.hpp"
#include "session/frames.hpp"
#include "tests/support/pki.hpp"

using namespace cg;
using namespace cg::net;

namespace {

enum class CloseMode {
  clean,  // a WebSocket close handshake, then TLS close_notify and TCP close (Beast's client)
  upstream,  // upstream's agent: answer the close frame, keep the socket open, reconnect after the delay
  silent,  // as upstream, without answering the close frame
};

// The TLS stream under the agent's WebSocket, with what upstream's agent does at a close: once
// `linger` is set, the WebSocket teardown leaves the socket open (no close_notify, no FIN); once
// `mute` is set, writes vanish (the close frame's answer is never sent).
class SimStream {
 public:
  using executor_type = TlsStream::executor_type;
  using next_layer_type = TlsStream;
  template <class Ex>
  SimStream(Ex&& ex, asio::ssl::context& ctx) : s_(std::forward<Ex>(ex), ctx) {}
  executor_type get_executor() noexcept { return s_.get_executor(); }
  TlsStream& next_layer() noexcept { return s_; }
  const TlsStream& next_layer() const noexcept { return s_; }

  template <class Buffers, class Handler>
  auto async_read_some(const Buffers& b, Handler&& h) {
    return s_.async_read_some(b, std::forward<Handler>(h));
  }
  template <class Buffers, class Handler>
  auto async_write_some(const Buffers& b, Handler&& h) {
    if (!mute) return s_.async_write_some(b, std::forward<Handler>(h));
    return asio::async_compose<Handler, void(beast::error_code, size_t)>(
        [n = asio::buffer_size(b), posted = false](auto& self) mutable {
          if (!posted) {
            posted = true;
            return asio::post(std::move(self));
          }
          self.complete(beast::error_code{}, n);
        },
        h, s_);
  }

  bool mute = false;
  bool linger = false;

 private:
  TlsStream s_;
};

// Found by Beast through argument-dependent lookup.
template <class Handler>
void async_teardown(beast::role_type role, SimStream& s, Handler&& handler) {
  if (!s.linger) return async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
  asio::async_compose<Handler, void(beast::error_code)>(
      [posted = false](auto& self) mutable {
        if (!posted) {
          posted = true;
          return asio::post(std::move(self));
        }
        self.complete(beast::error_code{});
      },
      handler, s.next_layer());
}

// --stop-reading: when the agent stops reading its socket (pings go unanswered, the gateway's writes
// pile up in the socket buffers). It never notices the connection's end afterwards.
enum class StopReading { never, after_first_request, after_time };

struct Options {
  std::string server_url = "wss://cluster-gateway:8443/ws";
  std::string plane_type = "dataplane";
  std::string plane_id;
  std::string client_cert = "/certs/tls.crt";
  std::string client_key = "/certs/tls.key";
  std::string server_ca = "/ca-certs/server-ca.crt";
  bool tls_enabled = true;
  Duration reconnect_delay = std::chrono::seconds(5);
  int count = 1;
  int plane_spread = 0;  // >0: agent i uses planeID "<plane_id>-<i mod plane_spread>"
  double connect_rate = 0;  // >0: first connections started at this many per second
  std::vector<asio::ip::address> source_ips;  // agent i binds to source_ips[i mod n]
  Duration duration = Duration::zero();
  std::string capabilities = "http-stream/v1";  // announced on the upgrade request; "" = as upstream's agent
  CloseMode close_mode = CloseMode::clean;
  sim::StreamOptions streams;
  sim::ReplyFault reply_fault = sim::ReplyFault::none;
  Duration reply_delay = Duration::zero();
  std::string fault_path;  // --reply-fault and --reply-delay apply to paths containing it ("" = all)
  StopReading stop_reading = StopReading::never;
  Duration stop_reading_after = Duration::zero();
  std::string client_cert_dir, client_ca_cert, client_ca_key;
  bool tls_resume = false;  // offer the previous connection's TLS session
  std::string host, port, path;
};

std::atomic<int> g_connected{0};

class Agent : public std::enable_shared_from_this<Agent> {
 public:
  Agent(asio::io_context& ioc, asio::ssl::context& ctx, const Options& o, int index)
      : ioc_(ioc),
        ctx_(&ctx),
        o_(o),
        index_(index),
        plane_id_(o.plane_spread > 0 ? o.plane_id + "-" + std::to_string(index % o.plane_spread) : o.plane_id),
        resolver_(asio::make_strand(ioc)),
        timer_(resolver_.get_executor()) {}
  const std::string& plane_id() const { return plane_id_; }
  // A TLS context of this agent's own (its own client certificate).
  void own_context(std::unique_ptr<asio::ssl::context> ctx) {
    own_ctx_ = std::move(ctx);
    ctx_ = own_ctx_.get();
  }

  void start() { connect(); }
  void stop() {
    asio::post(resolver_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      self->timer_.cancel();
      if (!self->ws_ || !self->open_) return;
      if (self->o_.close_mode == CloseMode::clean) {
        self->ws_->async_close(websocket::close_code::normal, [self](beast::error_code) {});
      } else {
        // Upstream's agent closes its connection without a close frame when it stops.
        beast::error_code ig;
        beast::get_lowest_layer(*self->ws_).socket().close(ig);
      }
    });
  }
  // SIGUSR2: the connection is cut (socket closed; no close frame, no close_notify); the agent
  // reconnects at once.
  void cut() {
    asio::post(resolver_.get_executor(), [self = shared_from_this()] {
      if (!self->ws_ || !self->open_ || self->closing_) return;
      self->remember_session();
      self->cut_ = true;
      beast::error_code ig;
      beast::get_lowest_layer(*self->ws_).socket().close(ig);
    });
  }
  // SIGUSR1: the agent sends a close frame itself (1000). In the upstream and silent modes it reads
  // the answer, if any, and then keeps the socket open.
  void agent_close() {
    asio::post(resolver_.get_executor(), [self = shared_from_this()] {
      if (!self->ws_ || !self->open_ || self->closing_) return;
      self->closing_ = true;
      if (self->o_.close_mode != CloseMode::clean) self->ws_->next_layer().linger = true;
      log::info("sending a close frame", self->fields({{"code", 1000}}));
      self->ws_->async_close(websocket::close_reason(websocket::close_code::normal, "agent stopping"),
                             [self](beast::error_code ec) {
                               log::info("close handshake done", self->fields({{"result", ec ? ec.message() : "ok"}}));
                             });
    });
  }

 private:
  nlohmann::json fields(nlohmann::json f = nlohmann::json::object()) const {
    f["agent"] = index_;
    f["planeType"] = o_.plane_type;
    f["planeID"] = plane_id_;
    return f;
  }

  void connect() {
    if (stopping_) return;
    log::info("connecting to control plane", fields({{"url", o_.server_url}}));
    ws_ = std::make_unique<websocket::stream<SimStream>>(asio::make_strand(ioc_), *ctx_);
    closing_ = false;
    resolver_.async_resolve(o_.host, o_.port, [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->retry("resolve: " + ec.message(), self->o_.reconnect_delay);
      auto& lowest = beast::get_lowest_layer(*self->ws_);
      lowest.expires_after(std::chrono::seconds(10));
      if (self->o_.source_ips.empty()) {
        lowest.async_connect(r, [self](beast::error_code ec, const tcp::endpoint&) { self->on_connect(ec); });
        return;
      }
      // A chosen source address: bind before connecting (the port is picked at connect time, so each
      // source address has its own ephemeral port range towards the gateway).
      const auto& src = self->o_.source_ips[static_cast<size_t>(self->index_) % self->o_.source_ips.size()];
      std::optional<tcp::endpoint> dst;
      for (const auto& e : r)
        if (e.endpoint().address().is_v4() == src.is_v4()) {
          dst = e.endpoint();
          break;
        }
      if (!dst)
        return self->retry("connect: " + self->o_.host + " has no address of the family of " + src.to_string(),
                           self->o_.reconnect_delay);
      auto& sock = lowest.socket();
      sock.open(dst->protocol(), ec);
      if (!ec) {
#ifdef IP_BIND_ADDRESS_NO_PORT
        int one = 1;
        if (src.is_v4()) ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        sock.bind(tcp::endpoint(src, 0), ec);
      }
      if (ec) return self->retry("bind " + src.to_string() + ": " + ec.message(), self->o_.reconnect_delay);
      lowest.async_connect(*dst, [self](beast::error_code ec) { self->on_connect(ec); });
    });
  }

  // --tls-resume: a copy of the connection's TLS session (the newest ticket), to offer on the next
  // connection. A copy: OpenSSL marks the session itself not resumable when its connection fails.
  void remember_session() {
    if (!o_.tls_resume || !ws_) return;
    SSL_SESSION* s = SSL_get0_session(ws_->next_layer().next_layer().native_handle());
    if (!s || SSL_SESSION_is_resumable(s) != 1) return;
    if (SSL_SESSION* copy = SSL_SESSION_dup(s)) session_.reset(copy, SSL_SESSION_free);
  }

  void on_connect(beast::error_code ec) {
    if (ec) return retry("connect: " + ec.message(), o_.reconnect_delay);
    auto self = shared_from_this();
    // Go's net package (upstream's agent) sets TCP_NODELAY on every TCP connection; so does the
    // simulator, or Nagle holds a frame back while an earlier one is unacknowledged.
    beast::error_code ig;
    beast::get_lowest_layer(*ws_).socket().set_option(tcp::no_delay(true), ig);
    SSL_set_tlsext_host_name(ws_->next_layer().next_layer().native_handle(), o_.host.c_str());
    ws_->next_layer().next_layer().set_verify_callback(asio::ssl::host_name_verification(o_.host));
    if (o_.tls_resume && session_) SSL_set_session(ws_->next_layer().next_layer().native_handle(), session_.get());
    ws_->next_layer().next_layer().async_handshake(asio::ssl::stream_base::client, [self](beast::error_code ec) {
      if (ec) return self->retry("tls: " + ec.message(), self->o_.reconnect_delay);
      beast::get_lowest_layer(*self->ws_).expires_never();
      websocket::stream_base::timeout t{};
      t.handshake_timeout = std::chrono::seconds(10);
      t.idle_timeout = websocket::stream_base::none();
      self->ws_->set_option(t);
      if (self->o_.close_mode != CloseMode::clean) {
        self->ws_->control_callback([raw = self.get()](websocket::frame_type kind, beast::string_view) {
          if (kind != websocket::frame_type::close) return;
          raw->ws_->next_layer().linger = true;
          if (raw->o_.close_mode == CloseMode::silent) raw->ws_->next_layer().mute = true;
          log::info("close frame received; the socket stays open (upstream agent behaviour)",
                    raw->fields({{"code", raw->ws_->reason().code},
                                 {"answered", raw->o_.close_mode == CloseMode::upstream},
                                 {"localPort", raw->local_port_}}));
        });
      }
      if (!self->o_.capabilities.empty())
        self->ws_->set_option(websocket::stream_base::decorator(
            [caps = self->o_.capabilities](websocket::request_type& req) { req.set("X-Cluster-Agent-Capabilities", caps); }));
      std::string target = self->o_.path + "?planeID=" + self->plane_id_ + "&planeType=" + self->o_.plane_type;
      self->ws_->async_handshake(self->resp_, self->o_.host, target, [self](beast::error_code ec) {
        if (ec) {
          std::string why = "websocket: bad handshake";
          if (self->resp_.result_int() != 0)
            why += " (HTTP " + std::to_string(self->resp_.result_int()) + ": " + self->resp_.body() + ")";
          while (!why.empty() && why.back() == '\n') why.pop_back();
          why.erase(std::remove(why.begin(), why.end(), '\n'), why.end());
          return self->retry(why, self->o_.reconnect_delay);
        }
        self->open_ = true;
        self->goaway_ = false;
        self->remember_session();  // TLS 1.2's session; TLS 1.3's ticket came before the 101
        ++self->conn_serial_;
        self->reader_ = Reader::reading;
        beast::error_code lec;
        auto local = beast::get_lowest_layer(*self->ws_).socket().local_endpoint(lec);
        self->local_port_ = lec ? 0 : local.port();
        ++g_connected;
        std::weak_ptr<Agent> weak = self;
        self->streams_ = std::make_unique<sim::SimStreams>(self->ws_->get_executor(), self->o_.streams, self->plane_id_,
                                                           self->index_, [weak](std::string text) {
                                                             if (auto a = weak.lock()) a->send(std::move(text));
                                                           });
        self->streams_->queued_bytes = &self->queued_bytes_;
        log::info("connected to control plane",
                  self->fields({{"localPort", self->local_port_},
                                {"tlsResumed", SSL_session_reused(self->ws_->next_layer().next_layer().native_handle()) == 1}}));
        if (self->o_.stop_reading == StopReading::after_time) {
          auto t = std::make_shared<asio::steady_timer>(self->ws_->get_executor(), self->o_.stop_reading_after);
          t->async_wait([self, t, serial = self->conn_serial_](beast::error_code ec) {
            if (!ec && serial == self->conn_serial_)
              self->stop_reader("after " + format_go_duration(self->o_.stop_reading_after));
          });
        }
        self->read();
      });
    });
  }

  void retry(const std::string& why, Duration delay) {
    if (streams_) streams_->reset();
    if (open_) --g_connected;
    open_ = false;
    if (stopping_) return;
    log::warn("connection failed", fields({{"reason", why}, {"retryAfter", format_go_duration(delay)}}));
    timer_.expires_after(delay);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->connect();
    });
  }

  // --stop-reading: no more reads on this connection (the pending one, if any, completes and its
  // message is dropped unhandled).
  void stop_reader(const std::string& when) {
    if (reader_ != Reader::reading) return;
    reader_ = Reader::stopped;
    log::info("reader stopped; the socket is no longer read", fields({{"when", when}, {"localPort", local_port_}}));
  }

  void read() {
    if (reader_ == Reader::stopped) return;
    ws_->async_read(buf_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec && self->cut_) {
        self->cut_ = false;
        return self->retry("cut (SIGUSR2)", Duration::zero());
      }
      if (ec) {
        self->remember_session();
        std::string why = ec == websocket::error::closed ? "closed by gateway (code " + std::to_string(self->ws_->reason().code) +
                                                               ": " + std::string(self->ws_->reason().reason.c_str()) + ")"
                                                         : ec.message();
        if (self->o_.close_mode != CloseMode::clean) {
          // As upstream's agent: the read loop ends, the old socket is neither closed nor read
          // again (it is kept until the process exits), and a new one is dialled after the delay.
          self->lingering_.push_back(Lingering{std::move(self->ws_), std::move(self->queue_), self->local_port_});
          self->queue_.clear();
          self->queued_bytes_ = 0;
          ++self->gen_;
          log::info("connection lost, reconnecting", self->fields({{"reason", why},
                                                                   {"delay", format_go_duration(self->o_.reconnect_delay)},
                                                                   {"keptOpenLocalPort", self->lingering_.back().local_port}}));
          return self->retry(why, self->o_.reconnect_delay);
        }
        if (self->goaway_) {
          std::uniform_int_distribution<int> jitter(0, 750);
          std::mt19937 rng(std::random_device{}());
          return self->retry("goaway: " + why, std::chrono::milliseconds(jitter(rng)));
        }
        return self->retry(why, self->o_.reconnect_delay);
      }
      if (self->reader_ == Reader::stopped) {
        log::info("message read after the reader stopped; dropped", self->fields({{"bytes", self->buf_.size()}}));
        self->buf_.consume(self->buf_.size());
        return;
      }
      const auto data = self->buf_.data();  // a flat_buffer: one contiguous block
      self->handle(std::string_view(static_cast<const char*>(data.data()), data.size()));
      self->buf_.consume(self->buf_.size());
      self->read();
    });
  }

  void handle(std::string_view text) {
    auto j = sim::parse_frame(text);
    if (j.is_discarded() || !j.is_object()) {
      log::warn("invalid message from gateway", fields());
      return;
    }
    if (j.value("type", "") == "goaway" && o_.close_mode == CloseMode::clean) {
      log::info("goaway received; reconnecting promptly", fields({{"reason", j.value("reason", "")}}));
      goaway_ = true;
      if (streams_) streams_->reset();
      // Replies already queued still go out; then the connection closes and the agent reconnects.
      if (queue_.empty()) {
        beast::error_code ig;
        beast::get_lowest_layer(*ws_).socket().close(ig);
      }
      return;
    }
    const std::string rid = j.value("requestID", "");
    if (rid.empty()) {
      log::warn("message without requestID", fields());
      return;
    }
    const bool is_request = !j.contains("credit") && !j.contains("data") && !j.contains("isClose");
    if (is_request && o_.stop_reading == StopReading::after_first_request) stop_reader("after the first request");
    if (streams_ && streams_->handle(j)) return;  // stream init, chunk, credit or streamed request
    const std::string path = j.value("path", "");
    if (path == "/sim/hang") return;  // tests: a request this agent never answers
    log::debug("received HTTP tunnel request", fields({{"requestID", rid}, {"method", j.value("method", "")}, {"path", path}}));
    auto reply = sim::respond(j, plane_id_, index_);
    const bool rude = o_.fault_path.empty() || path.find(o_.fault_path) != std::string::npos;
    if (rude && o_.reply_fault != sim::ReplyFault::none) {
      sim::apply_fault(reply, o_.reply_fault);
      log::info("sending a malformed reply", fields({{"requestID", rid}, {"path", path}}));
    }
    std::string out = sim::dump_reply(std::move(reply));
    if (!rude || o_.reply_delay <= Duration::zero()) return send(std::move(out));
    // A late answer: sent after the delay on this very connection (dropped if it ended meanwhile).
    log::info("delaying the reply", fields({{"requestID", rid}, {"path", path}, {"delay", format_go_duration(o_.reply_delay)}}));
    auto t = std::make_shared<asio::steady_timer>(ws_->get_executor(), o_.reply_delay);
    t->async_wait([self = shared_from_this(), t, serial = conn_serial_, rid, out = std::move(out)](beast::error_code ec) mutable {
      if (ec || serial != self->conn_serial_) return;
      log::info("sending a late reply", self->fields({{"requestID", rid}}));
      self->send(std::move(out));
    });
  }

  void send(std::string text) {
    if (!open_) return;
    queued_bytes_ += text.size();
    queue_.push_back(std::move(text));
    if (queue_.size() == 1) write();
  }
  void write() {
    ws_->text(true);
    ws_->async_write(asio::buffer(queue_.front()), [self = shared_from_this(), gen = gen_](beast::error_code ec, size_t) {
      if (gen != self->gen_) return;  // a connection kept open after its end: its queue went with it
      const size_t before = self->queued_bytes_;
      self->queued_bytes_ -= self->queue_.front().size();
      self->queue_.pop_front();
      if (ec) {
        self->queue_.clear();
        self->queued_bytes_ = 0;
        return;
      }
      if (!self->queue_.empty()) self->write();
      else if (self->goaway_) {
        beast::error_code ig;
        beast::get_lowest_layer(*self->ws_).socket().close(ig);
      }
      if (before > (1u << 20) && self->queued_bytes_ <= (1u << 20) && self->streams_) self->streams_->writable();
    });
  }

  asio::io_context& ioc_;
  asio::ssl::context* ctx_;
  std::unique_ptr<asio::ssl::context> own_ctx_;  // --client-ca-cert or --client-cert-dir
  enum class Reader { reading, stopped };
  Reader reader_ = Reader::reading;
  uint64_t conn_serial_ = 0;  // the current connection's number (late replies and timers check it)
  const Options& o_;
  int index_;
  std::string plane_id_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  std::unique_ptr<websocket::stream<SimStream>> ws_;
  struct Lingering {
    std::unique_ptr<websocket::stream<SimStream>> ws;
    std::deque<std::string> queue;  // frames a write may still be reading from
    uint16_t local_port = 0;
  };
  std::vector<Lingering> lingering_;  // upstream and silent modes: old connections, never closed
  uint64_t gen_ = 0;  // the current connection's number
  uint16_t local_port_ = 0;
  bool closing_ = false;  // agent_close() started
  bool cut_ = false;  // cut() closed the socket: reconnect at once
  std::shared_ptr<SSL_SESSION> session_;  // --tls-resume: offered on the next connection
  websocket::response_type resp_;
  beast::flat_buffer buf_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  std::unique_ptr<sim::SimStreams> streams_;
  bool open_ = false, stopping_ = false, goaway_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  cg::tune_malloc_for_large_messages();  // as the gateway; Go's runtime does not give memory back per message either
  Options o;
  CLI::App app{"cluster-agent-sim: simulated OpenChoreo cluster agents (upstream agent protocol)"};
  std::string reconnect = "5s", duration = "0", log_level = "info", unused_hb = "30s", unused_rt = "30s";
  app.add_option("--server-url", o.server_url, "Gateway WebSocket URL")->envname("SERVER_URL")->capture_default_str();
  app.add_option("--plane-type", o.plane_type, "dataplane, workflowplane or observabilityplane")
      ->envname("PLANE_TYPE")
      ->capture_default_str();
  app.add_option("--plane-id", o.plane_id, "Plane ID (required)")->envname("PLANE_ID");
  app.add_option("--client-cert", o.client_cert, "Client certificate chain (PEM)")
      ->envname("CLIENT_CERT_PATH")
      ->capture_default_str();
  app.add_option("--client-key", o.client_key, "Client key (PEM)")->envname("CLIENT_KEY_PATH")->capture_default_str();
  app.add_option("--server-ca", o.server_ca, "CA that signed the gateway's certificate")
      ->envname("SERVER_CA_PATH")
      ->capture_default_str();
  app.add_option("--tls-enabled", o.tls_enabled, "Use TLS with the client certificate")
      ->envname("TLS_ENABLED")
      ->capture_default_str();
  app.add_option("--reconnect-delay", reconnect, "Delay before reconnecting")->capture_default_str();
  app.add_option("--heartbeat-interval", unused_hb, "Accepted for compatibility; unused (as upstream)");
  app.add_option("--request-timeout", unused_rt, "Accepted for compatibility; unused (as upstream)");
  app.add_option("--log-level", log_level, "debug, info, warn, error")->envname("LOG_LEVEL")->capture_default_str();
  app.add_flag("--tls-resume", o.tls_resume,
               "Offer the previous connection's TLS session when reconnecting (a TLS 1.3 ticket or TLS 1.2 session ID)");
  app.add_option("--count", o.count, "Number of agents to run in this process")->capture_default_str();
  app.add_option("--duration", duration, "Exit after this long (0: until SIGINT/SIGTERM)");
  std::string source_ips;
  app.add_option("--source-ip", source_ips,
                 "Comma-separated local addresses to connect from (agent i uses address i mod n), e.g. "
                 "127.0.0.2,127.0.0.3 to go beyond one address's ephemeral ports");
  app.add_option("--connect-rate", o.connect_rate, "Start the first connections at this many agents per second (0: all at once)");
  app.add_option("--capabilities", o.capabilities,
                 "Capability tokens announced in the X-Cluster-Agent-Capabilities upgrade header (\"\" to behave like "
                 "upstream's agent: no HTTP streaming)")
      ->capture_default_str();
  std::string stream_interval = "200ms";
  app.add_option("--stream-interval", stream_interval,
                 "Pace of simulated watch events, log lines and flows (logs of container \"flood\" go as fast as "
                 "flow control allows)")
      ->capture_default_str();
  std::string close_mode = "clean";
  app.add_option("--close-mode", close_mode,
                 "What the agent does when a connection ends: clean (close handshake, then the socket is closed), "
                 "upstream (as upstream's agent: answers a close frame, never closes the old socket, reconnects "
                 "after --reconnect-delay, ignores GOAWAY) or silent (as upstream without answering the close frame)")
      ->capture_default_str();
  app.add_option("--plane-spread", o.plane_spread,
                 "Spread the agents over this many planeIDs: agent i uses <plane-id>-<i mod N> (0: all use --plane-id)");
  // Rude modes (tests/fakes/agent_sim/README.md).
  std::string reply_fault = "none", reply_delay = "0", stop_reading = "never";
  app.add_option("--reply-fault", reply_fault,
                 "Break HTTP tunnel replies: none, bad-base64 (body not base64), wrong-types (statusCode as a "
                 "string), body-on-204 (status 204 with a body), crlf-header (CR/LF in a header value), "
                 "crlf-header-name (CR/LF in a header name). Plain replies only, not stream heads")
      ->capture_default_str();
  app.add_option("--reply-delay", reply_delay,
                 "Send each HTTP tunnel reply this long after the request (longer than the gateway's "
                 "--request-timeout: a reply nobody waits for; 0: at once)")
      ->capture_default_str();
  app.add_option("--fault-path", o.fault_path,
                 "Apply --reply-fault and --reply-delay only to requests whose path contains this text (\"\": all)");
  app.add_option("--stop-reading", stop_reading,
                 "Stop reading the socket: never, after-first-request (the first request is still answered), or a "
                 "duration after connecting (e.g. 3s). Pings then go unanswered; the agent never notices the "
                 "connection's end and does not reconnect")
      ->capture_default_str();
  app.add_option("--stream-overrun", o.streams.overrun,
                 "Bytes beyond the flow-control window: right after the head of each flow-controlled HTTP stream, "
                 "send one data chunk of window + N bytes (0: honour the window)")
      ->capture_default_str();
  app.add_option("--client-ca-cert", o.client_ca_cert,
                 "With --client-ca-key: generate at startup one certificate per agent (EC P-256, clientAuth, CN "
                 "<planeID>-agent-<i>) issued by this CA, instead of sharing --client-cert");
  app.add_option("--client-ca-key", o.client_ca_key, "Key of --client-ca-cert (PEM)");
  app.add_option("--client-cert-dir", o.client_cert_dir,
                 "Agent i uses DIR/agent-<i>.crt and DIR/agent-<i>.key (a chain file is fine) instead of --client-cert");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "cluster-agent-sim: " << e.what() << "\n";
    return 2;
  }
  auto fail = [](const std::string& m) {
    std::cerr << "cluster-agent-sim: " << m << "\n";
    return 1;
  };
  if (o.plane_id.empty()) return fail("--plane-id is required");
  if (o.plane_type != "dataplane" && o.plane_type != "workflowplane" && o.plane_type != "observabilityplane")
    return fail("--plane-type must be one of dataplane, workflowplane, observabilityplane");
  auto rd = parse_go_duration(reconnect);
  auto du = parse_go_duration(duration);
  if (!rd) return fail("--reconnect-delay: '" + reconnect + "' is not a duration");
  if (!du) return fail("--duration: '" + duration + "' is not a duration");
  o.reconnect_delay = *rd;
  auto si = parse_go_duration(stream_interval);
  if (!si || *si <= Duration::zero()) return fail("--stream-interval: '" + stream_interval + "' is not a positive duration");
  o.streams.interval = *si;
  o.duration = *du;
  if (o.count < 1) return fail("--count must be at least 1");
  if (close_mode == "clean") o.close_mode = CloseMode::clean;
  else if (close_mode == "upstream") o.close_mode = CloseMode::upstream;
  else if (close_mode == "silent") o.close_mode = CloseMode::silent;
  else return fail("--close-mode must be one of clean, upstream, silent");
  if (o.plane_spread < 0) return fail("--plane-spread must not be negative");
  if (!sim::parse_reply_fault(reply_fault, o.reply_fault))
    return fail("--reply-fault must be one of none, bad-base64, wrong-types, body-on-204, crlf-header, crlf-header-name");
  auto rdl = parse_go_duration(reply_delay);
  if (!rdl || *rdl < Duration::zero()) return fail("--reply-delay: '" + reply_delay + "' is not a duration");
  o.reply_delay = *rdl;
  if (stop_reading == "never") o.stop_reading = StopReading::never;
  else if (stop_reading == "after-first-request") o.stop_reading = StopReading::after_first_request;
  else if (auto sr = parse_go_duration(stop_reading); sr && *sr >= Duration::zero()) {
    o.stop_reading = StopReading::after_time;
    o.stop_reading_after = *sr;
  } else return fail("--stop-reading must be never, after-first-request or a duration");
  if (o.client_ca_cert.empty() != o.client_ca_key.empty()) return fail("--client-ca-cert and --client-ca-key go together");
  if (!o.client_ca_cert.empty() && !o.client_cert_dir.empty())
    return fail("--client-ca-cert and --client-cert-dir are alternatives");
  if (o.connect_rate < 0) return fail("--connect-rate must not be negative");
  for (size_t pos = 0; !source_ips.empty() && pos <= source_ips.size();) {
    size_t end = source_ips.find(',', pos);
    if (end == std::string::npos) end = source_ips.size();
    std::string one = source_ips.substr(pos, end - pos);
    boost::system::error_code aec;
    auto a = asio::ip::make_address(one, aec);
    if (aec) return fail("--source-ip: '" + one + "' is not an IP address");
    o.source_ips.push_back(a);
    pos = end + 1;
  }
  log::Level lvl;
  if (!log::parse_level(log_level, lvl)) return fail("--log-level: '" + log_level + "' is not a level");
  log::init(lvl, log::Format::json);

  auto url = boost::urls::parse_uri(o.server_url);
  if (!url || (url->scheme() != "wss" && url->scheme() != "ws")) return fail("--server-url must be a wss:// URL");
  if (url->scheme() == "ws") return fail("--server-url: plain ws:// is not supported; the gateway requires TLS");
  o.host = url->host();
  o.port = url->has_port() ? std::string(url->port()) : "443";
  o.path = url->path().empty() ? "/" : std::string(url->path());

  const bool own_certs = o.tls_enabled && (!o.client_ca_cert.empty() || !o.client_cert_dir.empty());
  // A client TLS context; `with_shared_cert`: with --client-cert/--client-key.
  auto make_ctx = [&](bool with_shared_cert) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    if (o.tls_enabled) {
      if (with_shared_cert) {
        ctx->use_certificate_chain_file(o.client_cert);
        ctx->use_private_key_file(o.client_key, asio::ssl::context::pem);
      }
      ctx->load_verify_file(o.server_ca);
      ctx->set_verify_mode(asio::ssl::verify_peer);
    } else {
      ctx->set_verify_mode(asio::ssl::verify_none);
    }
    return ctx;
  };
  std::unique_ptr<asio::ssl::context> shared_ctx;
  try {
    shared_ctx = make_ctx(!own_certs);
  } catch (const std::exception& e) {
    return fail(std::string("TLS setup: ") + e.what());
  }

  asio::io_context ioc;
  std::vector<std::shared_ptr<Agent>> agents;
  for (int i = 0; i < o.count; ++i) agents.push_back(std::make_shared<Agent>(ioc, *shared_ctx, o, i));
  if (own_certs) {
    // One certificate per agent, so that the gateway verifies each one (its verification cache
    // never hits across agents).
    std::optional<testing::Cert> ca;
    if (!o.client_ca_cert.empty()) {
      auto read_pem = [](const std::string& path, auto reader) {
        std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "r"), BIO_free);
        return bio ? reader(bio.get()) : nullptr;
      };
      X509* c = read_pem(o.client_ca_cert, [](BIO* b) { return PEM_read_bio_X509(b, nullptr, nullptr, nullptr); });
      EVP_PKEY* k = read_pem(o.client_ca_key, [](BIO* b) { return PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr); });
      if (!c || !k) {
        if (c) X509_free(c);
        if (k) EVP_PKEY_free(k);
        return fail("--client-ca-cert/--client-ca-key: cannot read " + (c ? o.client_ca_key : o.client_ca_cert));
      }
      ca.emplace(std::shared_ptr<X509>(c, X509_free), std::shared_ptr<EVP_PKEY>(k, EVP_PKEY_free));
    }
    try {
      for (int i = 0; i < o.count; ++i) {
        auto ctx = make_ctx(false);
        if (ca) {
          testing::CertSpec spec;
          spec.cn = agents[static_cast<size_t>(i)]->plane_id() + "-agent-" + std::to_string(i);
          spec.org = "cluster-agent-sim";
          spec.not_after = std::chrono::hours(24);
          auto leaf = testing::make_signed(spec, *ca);
          if (SSL_CTX_use_certificate(ctx->native_handle(), leaf.x509()) != 1 ||
              SSL_CTX_use_PrivateKey(ctx->native_handle(), leaf.key()) != 1)
            return fail("cannot use the generated certificate of agent " + std::to_string(i));
          // An intermediate CA goes with the leaf (the gateway needs the chain up to the CR's CA).
          if (X509_check_issued(ca->x509(), ca->x509()) != X509_V_OK) {
            X509_up_ref(ca->x509());
            SSL_CTX_add_extra_chain_cert(ctx->native_handle(), ca->x509());
          }
        } else {
          const auto base = std::filesystem::path(o.client_cert_dir) / ("agent-" + std::to_string(i));
          ctx->use_certificate_chain_file(base.string() + ".crt");
          ctx->use_private_key_file(base.string() + ".key", asio::ssl::context::pem);
        }
        agents[static_cast<size_t>(i)]->own_context(std::move(ctx));
      }
    } catch (const std::exception& e) {
      return fail(std::string("TLS setup: ") + e.what());
    }
    log::info("one client certificate per agent", {{"agents", o.count}, {"source", ca ? "generated" : "directory"}});
  }
  // Pacing, signals and the deadline share one strand: no agent is started after stop_all.
  auto ctl = asio::make_strand(ioc);
  asio::steady_timer pacer(ctl);
  size_t started = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::function<void()> pace = [&] {
    // Start every agent whose turn has come (agent k at t0 + k / rate), then wait for the next one.
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t due = std::min(agents.size(), static_cast<size_t>(elapsed * o.connect_rate) + 1);
    while (started < due) agents[started++]->start();
    if (started >= agents.size()) return;
    pacer.expires_at(t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(static_cast<double>(started) / o.connect_rate)));
    pacer.async_wait([&](beast::error_code ec) {
      if (!ec) pace();
    });
  };
  if (o.connect_rate > 0) asio::post(ctl, pace);
  else
    for (auto& a : agents) a->start();

  asio::signal_set signals(ctl, SIGINT, SIGTERM);
  asio::steady_timer deadline(ctl);
  auto stop_all = [&] {
    pacer.cancel();
    for (auto& a : agents) a->stop();
    // Give close handshakes a moment, then stop.
    deadline.expires_after(std::chrono::milliseconds(500));
    deadline.async_wait([&](beast::error_code) { ioc.stop(); });
  };
  signals.async_wait([&](beast::error_code ec, int) {
    if (!ec) stop_all();
  });
  asio::signal_set usr1(ctl, SIGUSR1);
  std::function<void()> on_usr1 = [&] {
    usr1.async_wait([&](beast::error_code ec, int) {
      if (ec) return;
      for (auto& a : agents) a->agent_close();
      on_usr1();
    });
  };
  on_usr1();
  asio::signal_set usr2(ctl, SIGUSR2);
  std::function<void()> on_usr2 = [&] {
    usr2.async_wait([&](beast::error_code ec, int) {
      if (ec) return;
      log::info("SIGUSR2: cutting every connection", {{"agents", agents.size()}});
      for (auto& a : agents) a->cut();
      on_usr2();
    });
  };
  on_usr2();
  if (o.duration > Duration::zero()) {
    deadline.expires_after(o.duration);
    deadline.async_wait([&](beast::error_code ec) {
      if (!ec) stop_all();
    });
  }
  unsigned n = std::max(1u, std::min(2u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : threads) t.join();
  return 0;
}
