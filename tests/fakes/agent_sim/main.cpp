// cluster-agent-sim: N simulated OpenChoreo cluster agents in one process. Speaks upstream's agent
// protocol: dials wss://…/ws?planeID=…&planeType=… with a client certificate, answers pings (pongs
// come from the WebSocket layer while reading), answers HTTP tunnel requests from a built-in
// responder, reconnects after --reconnect-delay, and reconnects promptly (0–750 ms jitter) on GOAWAY.
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

#include <iostream>
#include <random>
#include <thread>

#include "common/log.hpp"
#include "common/net.hpp"
#include "common/time.hpp"
#include "responder.hpp"
#include "streams.hpp"
#include "session/frames.hpp"

using namespace cg;
using namespace cg::net;

namespace {

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
  int plane_spread = 0;      // >0: agent i uses planeID "<plane_id>-<i mod plane_spread>"
  double connect_rate = 0;   // >0: first connections started at this many per second
  std::vector<asio::ip::address> source_ips;  // agent i binds to source_ips[i mod n]
  Duration duration = Duration::zero();
  std::string capabilities = "http-stream/v1";  // announced on the upgrade request; "" = as upstream's agent
  sim::StreamOptions streams;
  std::string host, port, path;
};

std::atomic<int> g_connected{0};

class Agent : public std::enable_shared_from_this<Agent> {
 public:
  Agent(asio::io_context& ioc, asio::ssl::context& ctx, const Options& o, int index)
      : ioc_(ioc), ctx_(ctx), o_(o), index_(index),
        plane_id_(o.plane_spread > 0 ? o.plane_id + "-" + std::to_string(index % o.plane_spread) : o.plane_id),
        resolver_(asio::make_strand(ioc)), timer_(resolver_.get_executor()) {}

  void start() { connect(); }
  void stop() {
    asio::post(resolver_.get_executor(), [self = shared_from_this()] {
      self->stopping_ = true;
      self->timer_.cancel();
      if (self->ws_ && self->open_) {
        self->ws_->async_close(websocket::close_code::normal, [self](beast::error_code) {});
      }
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
    ws_.emplace(asio::make_strand(ioc_), ctx_);
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
      if (!dst) return self->retry("connect: " + self->o_.host + " has no address of the family of " + src.to_string(), self->o_.reconnect_delay);
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

  void on_connect(beast::error_code ec) {
    if (ec) return retry("connect: " + ec.message(), o_.reconnect_delay);
    auto self = shared_from_this();
    // Go's net package (upstream's agent) sets TCP_NODELAY on every TCP connection; so does the
    // simulator, or Nagle holds a frame back while an earlier one is unacknowledged.
    beast::error_code ig;
    beast::get_lowest_layer(*ws_).socket().set_option(tcp::no_delay(true), ig);
    SSL_set_tlsext_host_name(ws_->next_layer().native_handle(), o_.host.c_str());
    ws_->next_layer().set_verify_callback(asio::ssl::host_name_verification(o_.host));
    ws_->next_layer().async_handshake(asio::ssl::stream_base::client, [self](beast::error_code ec) {
      if (ec) return self->retry("tls: " + ec.message(), self->o_.reconnect_delay);
      beast::get_lowest_layer(*self->ws_).expires_never();
      websocket::stream_base::timeout t{};
      t.handshake_timeout = std::chrono::seconds(10);
      t.idle_timeout = websocket::stream_base::none();
      self->ws_->set_option(t);
      if (!self->o_.capabilities.empty())
        self->ws_->set_option(websocket::stream_base::decorator([caps = self->o_.capabilities](websocket::request_type& req) {
          req.set("X-Cluster-Agent-Capabilities", caps);
        }));
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
        ++g_connected;
        std::weak_ptr<Agent> weak = self;
        self->streams_ = std::make_unique<sim::SimStreams>(self->ws_->get_executor(), self->o_.streams, self->plane_id_,
                                                           self->index_, [weak](std::string text) {
                                                             if (auto a = weak.lock()) a->send(std::move(text));
                                                           });
        self->streams_->queued_bytes = &self->queued_bytes_;
        log::info("connected to control plane", self->fields());
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

  void read() {
    ws_->async_read(buf_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) {
        std::string why = ec == websocket::error::closed
                              ? "closed by gateway (code " + std::to_string(self->ws_->reason().code) + ": " +
                                    std::string(self->ws_->reason().reason.c_str()) + ")"
                              : ec.message();
        if (self->goaway_) {
          std::uniform_int_distribution<int> jitter(0, 750);
          std::mt19937 rng(std::random_device{}());
          return self->retry("goaway: " + why, std::chrono::milliseconds(jitter(rng)));
        }
        return self->retry(why, self->o_.reconnect_delay);
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
    if (j.value("type", "") == "goaway") {
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
    if (streams_ && streams_->handle(j)) return;  // stream init, chunk, credit or streamed request
    if (j.value("path", "") == "/sim/hang") return;  // tests: a request this agent never answers
    log::debug("received HTTP tunnel request", fields({{"requestID", rid}, {"method", j.value("method", "")}, {"path", j.value("path", "")}}));
    send(sim::dump_reply(sim::respond(j, plane_id_, index_)));
  }

  void send(std::string text) {
    if (!open_) return;
    queued_bytes_ += text.size();
    queue_.push_back(std::move(text));
    if (queue_.size() == 1) write();
  }
  void write() {
    ws_->text(true);
    ws_->async_write(asio::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
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
  asio::ssl::context& ctx_;
  const Options& o_;
  int index_;
  std::string plane_id_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  std::optional<websocket::stream<TlsStream>> ws_;
  websocket::response_type resp_;
  beast::flat_buffer buf_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  std::unique_ptr<sim::SimStreams> streams_;
  bool open_ = false, stopping_ = false, goaway_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"cluster-agent-sim: simulated OpenChoreo cluster agents (upstream agent protocol)"};
  std::string reconnect = "5s", duration = "0", log_level = "info", unused_hb = "30s", unused_rt = "30s";
  app.add_option("--server-url", o.server_url, "Gateway WebSocket URL")->envname("SERVER_URL")->capture_default_str();
  app.add_option("--plane-type", o.plane_type, "dataplane, workflowplane or observabilityplane")->envname("PLANE_TYPE")->capture_default_str();
  app.add_option("--plane-id", o.plane_id, "Plane ID (required)")->envname("PLANE_ID");
  app.add_option("--client-cert", o.client_cert, "Client certificate chain (PEM)")->envname("CLIENT_CERT_PATH")->capture_default_str();
  app.add_option("--client-key", o.client_key, "Client key (PEM)")->envname("CLIENT_KEY_PATH")->capture_default_str();
  app.add_option("--server-ca", o.server_ca, "CA that signed the gateway's certificate")->envname("SERVER_CA_PATH")->capture_default_str();
  app.add_option("--tls-enabled", o.tls_enabled, "Use TLS with the client certificate")->envname("TLS_ENABLED")->capture_default_str();
  app.add_option("--reconnect-delay", reconnect, "Delay before reconnecting")->capture_default_str();
  app.add_option("--heartbeat-interval", unused_hb, "Accepted for compatibility; unused (as upstream)");
  app.add_option("--request-timeout", unused_rt, "Accepted for compatibility; unused (as upstream)");
  app.add_option("--log-level", log_level, "debug, info, warn, error")->envname("LOG_LEVEL")->capture_default_str();
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
  app.add_option("--plane-spread", o.plane_spread,
                 "Spread the agents over this many planeIDs: agent i uses <plane-id>-<i mod N> (0: all use --plane-id)");
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
  if (o.plane_spread < 0) return fail("--plane-spread must not be negative");
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

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  try {
    if (o.tls_enabled) {
      ctx.use_certificate_chain_file(o.client_cert);
      ctx.use_private_key_file(o.client_key, asio::ssl::context::pem);
      ctx.load_verify_file(o.server_ca);
      ctx.set_verify_mode(asio::ssl::verify_peer);
    } else {
      ctx.set_verify_mode(asio::ssl::verify_none);
    }
  } catch (const std::exception& e) {
    return fail(std::string("TLS setup: ") + e.what());
  }

  asio::io_context ioc;
  std::vector<std::shared_ptr<Agent>> agents;
  for (int i = 0; i < o.count; ++i) agents.push_back(std::make_shared<Agent>(ioc, ctx, o, i));
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
