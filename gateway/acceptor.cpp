#include "gateway/acceptor.hpp"

#include <atomic>
#include <cerrno>

#include "common/no_throw.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {
// Waits for a connection's first byte (or its deadline) on the connection's strand.
struct FirstByte : std::enable_shared_from_this<FirstByte> {
  FirstByte(tcp::socket s, std::shared_ptr<void> slot, std::string listener, Acceptor::OnAcceptSlot then)
      : sock(std::move(s)),
        timer(sock.get_executor()),
        slot(std::move(slot)),
        listener(std::move(listener)),
        then(std::move(then)) {}
  tcp::socket sock;
  asio::steady_timer timer;
  std::shared_ptr<void> slot;
  std::string listener;
  Acceptor::OnAcceptSlot then;
  bool done = false;

  void start(std::chrono::steady_clock::duration timeout) {
    timer.expires_after(timeout);
    timer.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->done) return;
      self->done = true;
      metrics::connection_closed_early(self->listener, "no_first_byte");
      beast::error_code ig;
      self->sock.close(ig);
    });
    sock.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (self->done) return;
      self->done = true;
      self->timer.cancel();
      if (ec) return;
      self->then(std::move(self->sock), std::move(self->slot));
    });
  }
};
}  // namespace

struct Acceptor::Impl : std::enable_shared_from_this<Acceptor::Impl> {
  Impl(asio::io_context& ioc, std::string name, AcceptLimits limits, OnAcceptSlot on_accept)
      : ioc(ioc),
        acceptor(asio::make_strand(ioc)),
        timer(acceptor.get_executor()),
        name(std::move(name)),
        limits(limits),
        on_accept(std::move(on_accept)) {}
  asio::io_context& ioc;
  tcp::acceptor acceptor;
  asio::steady_timer timer;
  std::string name;
  AcceptLimits limits;
  OnAcceptSlot on_accept;
  std::shared_ptr<std::atomic<size_t>> live = std::make_shared<std::atomic<size_t>>(0);
  bool stopped = false;
  std::chrono::steady_clock::time_point last_log{}, last_cap_log{};
  uint64_t failures = 0, capped = 0;

  // Over the cap: the connection is closed at once (one log line per second at most, with a count).
  bool over_cap(tcp::socket& s) {
    if (limits.max_connections == 0 || live->load() < limits.max_connections) return false;
    metrics::connection_closed_early(name, "limit");
    metrics::limit_refused("connections_" + name);
    ++capped;
    auto now = std::chrono::steady_clock::now();
    if (now - last_cap_log >= std::chrono::seconds(1)) {
      log::warn("connection refused: listener at its connection limit",
                {{"listener", name}, {"limit", limits.max_connections}, {"refusedSinceLastLog", capped}});
      last_cap_log = now;
      capped = 0;
    }
    beast::error_code ig;
    s.close(ig);
    return true;
  }

  void hand_over(tcp::socket s) {
    if (over_cap(s)) return;
    live->fetch_add(1);
    std::shared_ptr<void> slot(live.get(), [live = live](void*) { live->fetch_sub(1); });
    if (limits.first_byte_timeout.count() > 0) {
      std::make_shared<FirstByte>(std::move(s), std::move(slot), name, on_accept)->start(limits.first_byte_timeout);
      return;
    }
    on_accept(std::move(s), std::move(slot));
  }

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (self->stopped) {
        if (!ec) self->hand_over(std::move(s));  // accepted just before stop(): served like the backlog
        return;
      }
      if (ec) {
        const char* why = ec == asio::error::no_descriptors    ? "emfile"
                          : ec.value() == ENFILE               ? "enfile"
                          : ec == asio::error::no_buffer_space ? "enobufs"
                                                               : "other";
        metrics::accept_error(self->name, why);
        // One line per second at most while it lasts (a full fd table fails every accept).
        auto now = std::chrono::steady_clock::now();
        if (now - self->last_log >= std::chrono::seconds(1)) {
          log::warn("accept failed; pausing 100ms",
                    {{"listener", self->name}, {"reason", ec.message()}, {"failuresSinceLastLog", self->failures + 1}});
          self->last_log = now;
          self->failures = 0;
        } else {
          ++self->failures;
        }
        self->timer.expires_after(std::chrono::milliseconds(100));
        self->timer.async_wait([self](beast::error_code) { self->accept(); });
        return;
      }
      beast::error_code ig;
      s.set_option(tcp::no_delay(true), ig);
      self->hand_over(std::move(s));
      self->accept();
    });
  }
};

Acceptor::Acceptor(asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, OnAccept on_accept)
    : Acceptor(ioc, bind, port, std::move(name), AcceptLimits{},
               [f = std::move(on_accept)](tcp::socket s, const std::shared_ptr<void>&) { f(std::move(s)); }) {}

Acceptor::Acceptor(asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, AcceptLimits limits,
                   OnAcceptSlot on_accept)
    : impl_(std::make_shared<Impl>(ioc, std::move(name), limits, std::move(on_accept))) {
  tcp::endpoint ep(asio::ip::make_address(bind), port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
}

Acceptor::~Acceptor() {
  no_throw("Acceptor::~Acceptor", [this] { stop(); });
}
uint16_t Acceptor::port() const { return impl_->acceptor.local_endpoint().port(); }
void Acceptor::start() {
  asio::post(impl_->acceptor.get_executor(), [i = impl_] { i->accept(); });
}
void Acceptor::stop() {
  asio::post(impl_->acceptor.get_executor(), [i = impl_] {
    if (i->stopped) return;
    i->stopped = true;
    // Connections the kernel has already completed wait in the listen backlog: closing the socket
    // would reset them (a rolling restart's callers would see a connection reset). They are accepted
    // and served first; only then does the port close.
    beast::error_code ec;
    i->acceptor.non_blocking(true, ec);
    for (int n = 0; n < 4096 && !ec; ++n) {
      tcp::socket s(asio::make_strand(i->ioc));
      i->acceptor.accept(s, ec);
      if (ec) break;
      beast::error_code ig;
      s.set_option(tcp::no_delay(true), ig);
      i->hand_over(std::move(s));
    }
    beast::error_code ig;
    i->acceptor.close(ig);
    i->timer.cancel();
  });
}

}  // namespace cg::gateway
