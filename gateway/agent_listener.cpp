#include "gateway/agent_listener.hpp"

#include <boost/asio/post.hpp>
#include <poll.h>

#include <array>
#include <atomic>
#include <deque>

#include "common/no_throw.hpp"
#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "common/thread_annotations.hpp"
#include "gateway/acceptor.hpp"
#include "gateway/http_rules.hpp"
#include "session/lean_tls.hpp"
#include "session/upgrade_handoff.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {

// Admission control for TLS handshakes: at most `limit` connections are between their first byte and
// the end of the upgrade decision at once; the others wait in arrival order with their sockets open.
// In a reconnect storm every handshake then finishes at full speed, one batch after the other,
// instead of all of them progressing in turn until most exceed the agents' connect deadline and are
// retried (work thrown away). A connection still waiting at its handshake deadline, or whose agent
// has hung up meanwhile, is closed without any TLS work. A slot is held for at most kSlotHold: a
// slow or silent peer (slowloris) then cannot keep honest agents waiting, it only loses its place.
constexpr auto kSlotHold = std::chrono::seconds(1);
// Upgrade request header limits: 431 beyond them.
constexpr uint32_t kHeaderLimit = 8 * 1024;
constexpr uint32_t kForwardedHeaderLimit = 64 * 1024;

class HandshakeGate : public std::enable_shared_from_this<HandshakeGate> {
 public:
  explicit HandshakeGate(size_t limit) : limit_(limit ? limit : 1) {}
  // Starts the handshake with the slot it was given; it captures no gate (no reference cycle through
  // the queue).
  using Start = std::function<void(std::shared_ptr<HandshakeGate>)>;
  struct Waiting {
    std::shared_ptr<tcp::socket> sock;
    std::chrono::steady_clock::time_point deadline;
    Start start;
  };
  // Runs `start` now (on the caller's thread) when a slot is free, else queues it.
  void admit(Waiting w) {
    {
      cg::MutexLock lk(mu_);
      if (active_ >= limit_) {
        queue_.push_back(std::move(w));
        metrics::handshakes_waiting(static_cast<int64_t>(queue_.size()));
        return;
      }
      ++active_;
    }
    w.start(shared_from_this());
  }
  // A slot is given back: the next waiting connection that is still worth a handshake takes it.
  void release() {
    for (;;) {
      Waiting next;
      {
        cg::MutexLock lk(mu_);
        if (queue_.empty()) {
          --active_;
          return;
        }
        next = std::move(queue_.front());
        queue_.pop_front();
        metrics::handshakes_waiting(static_cast<int64_t>(queue_.size()));
      }
      if (usable(next)) {
        asio::post(next.sock->get_executor(), [self = shared_from_this(), start = std::move(next.start)] { start(self); });
        return;
      }
    }
  }
  // The listener stops: waiting connections are closed and dropped.
  void clear() {
    std::deque<Waiting> q;
    {
      cg::MutexLock lk(mu_);
      q.swap(queue_);
    }
    metrics::handshakes_waiting(0);
    beast::error_code ig;
    for (auto& w : q) w.sock->close(ig);
  }

 private:
  static bool usable(Waiting& w) {
    beast::error_code ig;
    if (std::chrono::steady_clock::now() >= w.deadline) {
      log::debug("agent TLS handshake failed", {{"reason", "handshake timeout while waiting for admission"}});
      metrics::handshake("rejected", "handshake_timeout");
      w.sock->close(ig);
      return false;
    }
    pollfd p{w.sock->native_handle(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      log::debug("agent TLS handshake failed", {{"reason", "agent hung up while waiting for admission"}});
      metrics::handshake("rejected", "tls_handshake_failed");
      w.sock->close(ig);
      return false;
    }
    return true;
  }

  const size_t limit_;
  cg::Mutex mu_;
  size_t active_ CG_GUARDED_BY(mu_) = 0;
  std::deque<Waiting> queue_ CG_GUARDED_BY(mu_);
};

// One connection from its first byte to the upgrade decision: the TLS handshake and the upgrade
// request run on LeanTls (session/lean_tls.hpp), which the session then takes over. Everything runs on
// the connection's strand (the socket's executor). The handshake deadline closes the socket.
class Handshake : public std::enable_shared_from_this<Handshake> {
 public:
  Handshake(tcp::socket s, std::shared_ptr<asio::ssl::context> ctx, std::shared_ptr<const AgentListenerDeps> deps,
            std::chrono::steady_clock::time_point deadline, std::shared_ptr<HandshakeGate> gate)
      : ctx_(std::move(ctx)),
        deps_(std::move(deps)),
        deadline_(deadline),
        gate_(std::move(gate)),
        slot_timer_(s.get_executor()),
        deadline_timer_(s.get_executor()),
        stream_(std::move(s), ctx_->native_handle()) {
    beast::error_code ec;
    auto ep = stream_.next_layer().remote_endpoint(ec);
    if (!ec) {
      remote_ip_ = ep.address().to_string();
      remote_ = remote_ip_ + ":" + std::to_string(ep.port());
    }
  }

  ~Handshake() {
    no_throw("Handshake::~Handshake", [this] { give_back(); });
  }

  void run() {
    slot_timer_.expires_after(kSlotHold);
    slot_timer_.async_wait([w = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = w.lock()) self->give_back();
    });
    arm_deadline(deadline_);
    stream_.async_handshake([self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec || !self->stream_.setup_error().empty()) {
        log::debug("agent TLS handshake failed",
                   {{"remote", self->remote_},
                    {"reason", !self->stream_.setup_error().empty() ? self->stream_.setup_error() : self->why(ec).message()}});
        metrics::handshake("rejected", "tls_handshake_failed");
        return self->close();
      }
      if (self->stream_.resumed()) metrics::tls_resumed();
      self->read_request();
    });
  }

 private:
  // The handshake deadline: while it runs, its expiry closes the socket (the pending read or write
  // then ends with an error, which why() reports as Beast's timeout).
  enum class Deadline : uint8_t { running, expired, off };

  void arm_deadline(std::chrono::steady_clock::time_point at) {
    deadline_state_ = Deadline::running;
    deadline_timer_.expires_at(at);
    deadline_timer_.async_wait([w = weak_from_this()](beast::error_code ec) {
      auto self = w.lock();
      if (ec || !self || self->deadline_state_ != Deadline::running) return;
      self->deadline_state_ = Deadline::expired;
      self->close();
    });
  }
  void disarm_deadline() {
    deadline_state_ = Deadline::off;
    deadline_timer_.cancel();
  }
  beast::error_code why(beast::error_code ec) const {
    return deadline_state_ == Deadline::expired ? beast::error_code(beast::error::timeout) : ec;
  }
  void close() {
    beast::error_code ig;
    stream_.next_layer().close(ig);
  }

  void read_request() {
    // A forwarded certificate chain (URL-encoded PEM) takes several KiB of header.
    parser_.header_limit(deps_->auth_mode == AgentAuthMode::forwarded_header ? kForwardedHeaderLimit : kHeaderLimit);
    parser_.body_limit(0);
    http::async_read(stream_, buf_, parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      ec = self->why(ec);
      auto refuse = [&](unsigned status, const char* reason_class, const std::string& body) {
        log::warn("agent connection rejected",
                  {{"remote", self->remote_}, {"status", status}, {"reason", body.substr(0, body.size() - 1)}});
        metrics::handshake("rejected", reason_class);
        self->reply(status, body, {});
      };
      if (ec == http::error::header_limit) return refuse(431, "header_too_large", "request header fields too large\n");
      if (ec == http::error::body_limit) return refuse(413, "bad_request", "request body not allowed\n");
      if (ec && ec.category() == http::make_error_code(http::error::bad_version).category() && ec != http::error::end_of_stream &&
          ec != http::error::partial_message) {
        // Not HTTP/1.1 (a binary blob, an HTTP/2 preface): answered like Go's net/http does.
        log::debug("agent upgrade request not read", {{"remote", self->remote_}, {"reason", ec.message()}});
        return refuse(400, "bad_request", "400 Bad Request: malformed HTTP request (" + ec.message() + ")\n");
      }
      if (ec) {
        log::debug("agent upgrade request not read", {{"remote", self->remote_}, {"reason", ec.message()}});
        metrics::handshake("rejected", ec == beast::error::timeout ? "handshake_timeout" : "request_not_read");
        return self->close();
      }
      self->decide();
    });
  }

  void decide() {
    give_back();  // the expensive part is over (the verification below is in memory)
    slot_timer_.cancel();
    req_ = parser_.release();
    UpgradeDecision d = check_upgrade_target(std::string(req_.target()));
    nlohmann::json f = {{"remote", remote_}};
    if (stream_.resumed()) f["tlsResumed"] = true;
    if (!d.plane_type.empty()) f["planeType"] = d.plane_type;
    if (!d.plane_id.empty()) f["planeID"] = d.plane_id;
    if (d.status) {
      f["status"] = d.status;
      f["reason"] = d.body.substr(0, d.body.size() - 1);
      log::warn("agent connection rejected", f);
      metrics::handshake("rejected", d.status == 404 ? "not_found" : "bad_request");
      return reply(d.status, d.body, {});
    }
    tls::PeerChain chain;
    if (!take_chain(f, chain)) return;
    f["certificateSubject"] = chain.subject();
    f["certificateIssuer"] = chain.issuer();
    auto anchors = deps_->index.anchors(d.plane_type, d.plane_id);
    auto verdicts = tls::verify_all(chain, anchors);
    std::set<std::string> ok;
    nlohmann::json per_cr = nlohmann::json::array();
    size_t candidates = 0;
    for (size_t i = 0; i < verdicts.size(); ++i) {
      candidates += anchors[i].candidate();
      if (verdicts[i].ok) ok.insert(verdicts[i].key);
      else {
        per_cr.push_back({{"cr", verdicts[i].key}, {"reason", verdicts[i].reason}});
        metrics::cr_verification_failure(d.plane_type, tls::metric_label(verdicts[i].failure));
      }
    }
    if (ok.empty()) {
      std::string why = candidates == 0 ? "no " + d.plane_type + " CRs found with planeID '" + d.plane_id + "'"
                                        : "certificate not valid for any CR with planeID '" + d.plane_id + "'";
      f["status"] = 401;
      f["reason"] = why;
      f["perCR"] = per_cr;
      log::warn("agent connection rejected", f);
      metrics::handshake("rejected", candidates == 0 ? "no_crs" : "not_authorized");
      return reply(401, "client certificate verification failed: " + why + "\n", {});
    }
    if (auto refusal = websocket_upgrade_refusal(req_)) {
      // gorilla's Upgrader answers upstream's agents (text and Sec-Websocket-Version: 13).
      f["status"] = refusal->status;
      f["reason"] = "not a WebSocket upgrade request";
      log::warn("agent connection rejected", f);
      metrics::handshake("rejected", "not_websocket");
      return reply(refusal->status, std::string(refusal->text) + "\n", "13");
    }
    // Limits: soft (checked before the upgrade, so a few concurrent upgrades may pass together).
    std::string limit, limit_msg;
    if (deps_->registry.size() >= deps_->max_sessions) {
      limit = "sessions";
      limit_msg = "too many agent sessions on this gateway (limit " + std::to_string(deps_->max_sessions) + ")";
    } else if (deps_->registry.plane_session_count(d.plane_type, d.plane_id) >= deps_->max_sessions_per_plane) {
      limit = "plane_sessions";
      limit_msg = "too many agent connections for plane " + d.plane_type + "/" + d.plane_id + " (limit " +
                  std::to_string(deps_->max_sessions_per_plane) + ")";
    }
    if (!limit.empty()) {
      f["status"] = 503;
      f["reason"] = limit_msg;
      log::warn("agent connection rejected", f);
      metrics::handshake("rejected", "limit");
      metrics::limit_refused(limit);
      return reply(503, limit_msg + "\n", {});
    }
    if (!per_cr.empty()) {
      f["notAuthorizedFor"] = per_cr;
      log::info("certificate not valid for some CRs sharing the planeID", f);
    }
    session::AgentIdentity id;
    id.connection_id = uuid_v4();
    id.plane_type = d.plane_type;
    id.plane_id = d.plane_id;
    id.remote = remote_;
    id.peer = std::move(chain);
    id.authorized = std::move(ok);
    id.tls_start = stream_.resumed() ? session::TlsStart::resumed : session::TlsStart::full;
    disarm_deadline();
    // An authorized agent's TLS session may be resumed later, even after a cut connection.
    stream_.set_resumption(session::LeanTls::Resumption::keep);
    session::UpgradeHandoffPtr h(new session::UpgradeHandoff(std::move(stream_), std::move(req_)));
    session::start_agent_session(std::move(h), std::move(id), deps_->session_options, deps_->registry, deps_->frames);
  }

  // The agent's certificate chain, from where --agent-auth-mode says; false after answering 401.
  bool take_chain(nlohmann::json& f, tls::PeerChain& chain) {
    tls::PeerChain from_tls = tls::PeerChain::from_ssl(stream_.native_handle());
    auto refuse = [&](const char* metric, const std::string& reason, const std::string& body) {
      f["status"] = 401;
      f["reason"] = reason;
      log::warn("agent connection rejected", f);
      metrics::handshake("rejected", metric);
      reply(401, body, {});
      return false;
    };
    static const std::string no_cert = "no client certificate presented";
    if (deps_->auth_mode == AgentAuthMode::mtls) {
      if (from_tls.empty()) return refuse("no_client_certificate", no_cert, no_cert + "\n");
      chain = std::move(from_tls);
      return true;
    }
    // forwarded-header (upstream PR #4340): the chain comes from the trusted proxy's header only.
    const std::string& header = deps_->forwarded_header;
    f["agentAuthMode"] = to_string(deps_->auth_mode);
    auto it = req_.find(header);
    std::string_view value = it == req_.end() ? std::string_view() : std::string_view(it->value().data(), it->value().size());
    while (!value.empty() && std::string_view(" \t\r\n\v\f").find(value.front()) != std::string_view::npos)
      value.remove_prefix(1);
    while (!value.empty() && std::string_view(" \t\r\n\v\f").find(value.back()) != std::string_view::npos) value.remove_suffix(1);
    if (value.empty())
      return refuse(
          "no_client_certificate",
          no_cert + ": no " + header + " header" +
              (from_tls.empty() ? "" : " (a TLS client certificate is not used with --agent-auth-mode=forwarded-header)"),
          no_cert + "\n");
    if (!ip_in_ranges(deps_->trusted_proxies, remote_ip_))
      return refuse("forwarded_untrusted_source",
                    header + " header from " + remote_ip_ + ", which is not in --agent-auth-trusted-proxies",
                    "forwarded client certificate not accepted from this address\n");
    if (!from_tls.empty())
      return refuse("forwarded_ambiguous", "both a TLS client certificate and a " + header + " header were presented",
                    "both a TLS client certificate and a forwarded client certificate were presented\n");
    ForwardedChain fc = parse_forwarded_cert_chain(value);
    if (fc.error.empty()) chain = tls::PeerChain::from_pem(fc.pem);
    if (chain.empty())
      return refuse("forwarded_header_malformed",
                    "malformed " + header + " header: " + (fc.error.empty() ? "no certificate" : fc.error), no_cert + "\n");
    return true;
  }

  // `websocket_version`: the Sec-Websocket-Version header of gorilla's upgrade refusals, if any.
  void reply(unsigned status, const std::string& body, const std::string& websocket_version) {
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), 11);
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    if (!websocket_version.empty()) res->set(http::field::sec_websocket_version, websocket_version);
    res->set("X-Content-Type-Options", "nosniff");
    res->body() = body;
    res->keep_alive(false);
    res->prepare_payload();
    arm_deadline(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->stream_.async_shutdown([self](beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->linger();
      });
    });
  }

  // After an answer that ends the connection (and our close_notify): our side of the TCP connection is
  // shut down, and what the client still sends is read and dropped until it closes or the deadline
  // passes. Closing with unread input would send a reset, which can reach the client before it has read
  // the answer.
  void linger() {
    beast::error_code ig;
    stream_.next_layer().shutdown(tcp::socket::shutdown_send, ig);
    drain(std::make_shared<std::array<char, 2048>>());
  }
  void drain(const std::shared_ptr<std::array<char, 2048>>& scratch) {
    stream_.next_layer().async_read_some(asio::buffer(*scratch),
                                         [self = shared_from_this(), scratch](beast::error_code ec, size_t) {
                                           if (!ec) return self->drain(scratch);
                                           self->disarm_deadline();
                                           self->close();
                                         });
  }

  std::shared_ptr<asio::ssl::context> ctx_;  // the context this connection started with
  std::shared_ptr<const AgentListenerDeps> deps_;
  beast::flat_buffer buf_;
  http::request_parser<http::empty_body> parser_;
  UpgradeRequest req_;
  std::string remote_, remote_ip_;
  std::chrono::steady_clock::time_point deadline_;
  // The admission slot (HandshakeGate): given back once the request is read, after kSlotHold, or at the end.
  void give_back() {
    if (holds_slot_.exchange(false)) gate_->release();
  }
  std::shared_ptr<HandshakeGate> gate_;
  std::atomic<bool> holds_slot_{true};
  asio::steady_timer slot_timer_;
  asio::steady_timer deadline_timer_;
  Deadline deadline_state_ = Deadline::off;
  session::LeanTls stream_;
};

// Holds an accepted socket until its first byte arrives (or the handshake timeout passes), so that
// idle and half-open connections cost a socket and a timer, not a TLS stream with its buffers.
void await_first_byte(tcp::socket s, std::shared_ptr<asio::ssl::context> ctx, std::shared_ptr<const AgentListenerDeps> deps,
                      std::shared_ptr<HandshakeGate> gate) {
  const auto deadline = std::chrono::steady_clock::now() + deps->handshake_timeout;
  auto sock = std::make_shared<tcp::socket>(std::move(s));
  auto timer = std::make_shared<asio::steady_timer>(sock->get_executor());
  timer->expires_at(deadline);
  timer->async_wait([sock](beast::error_code ec) {
    if (ec) return;
    beast::error_code ig;
    auto ep = sock->remote_endpoint(ig);
    log::debug("agent TLS handshake failed",
               {{"remote", ig ? std::string() : ep.address().to_string() + ":" + std::to_string(ep.port())},
                {"reason", beast::error_code(beast::error::timeout).message()}});
    metrics::handshake("rejected", "tls_handshake_failed");
    sock->close(ig);
  });
  sock->async_wait(tcp::socket::wait_read, [sock, timer, ctx = std::move(ctx), deps = std::move(deps), deadline,
                                            gate = std::move(gate)](beast::error_code ec) {
    if (!timer->cancel() && !ec) return;  // the timer already fired and closed the socket
    if (ec) return;
    gate->admit({sock, deadline, [sock, ctx, deps, deadline](std::shared_ptr<HandshakeGate> g) {
                   std::make_shared<Handshake>(std::move(*sock), ctx, deps, deadline, std::move(g))->run();
                 }});
  });
}

}  // namespace

struct AgentListener::Impl {
  Impl(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl_ctx, const std::string& bind, uint16_t port,
       AgentListenerDeps d)
      : ssl(std::move(ssl_ctx)),
        deps(std::make_shared<const AgentListenerDeps>(std::move(d))),
        gate(std::make_shared<HandshakeGate>(deps->max_concurrent_handshakes)),
        acceptor(ioc, bind, port, "agent", [this](tcp::socket s) { await_first_byte(std::move(s), ssl.get(), deps, gate); }) {}
  TlsContextSlot ssl;
  std::shared_ptr<const AgentListenerDeps> deps;
  std::shared_ptr<HandshakeGate> gate;
  Acceptor acceptor;
};

AgentListener::AgentListener(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl, const std::string& bind,
                             uint16_t port, AgentListenerDeps deps)
    : impl_(std::make_shared<Impl>(ioc, std::move(ssl), bind, port, std::move(deps))) {}
AgentListener::~AgentListener() { stop(); }
uint16_t AgentListener::port() const { return impl_->acceptor.port(); }
void AgentListener::start() { impl_->acceptor.start(); }
void AgentListener::stop() {
  impl_->acceptor.stop();
  impl_->gate->clear();
}
void AgentListener::set_ssl_context(std::shared_ptr<asio::ssl::context> ctx) { impl_->ssl.set(std::move(ctx)); }

}  // namespace cg::gateway
