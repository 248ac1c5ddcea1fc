#include "gateway/acceptor.hpp"

#include <cerrno>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {
using namespace cg::net;

struct Acceptor::Impl : std::enable_shared_from_this<Acceptor::Impl> {
  Impl(asio::io_context& ioc, std::string name, OnAccept on_accept)
      : ioc(ioc), acceptor(asio::make_strand(ioc)), timer(acceptor.get_executor()), name(std::move(name)),
        on_accept(std::move(on_accept)) {}
  asio::io_context& ioc;
  tcp::acceptor acceptor;
  asio::steady_timer timer;
  std::string name;
  OnAccept on_accept;
  bool stopped = false;
  std::chrono::steady_clock::time_point last_log{};
  uint64_t failures = 0;

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      if (self->stopped || ec == asio::error::operation_aborted) return;
      if (ec) {
        const char* why = ec == asio::error::no_descriptors ? "emfile"
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
      self->on_accept(std::move(s));
      self->accept();
    });
  }
};

Acceptor::Acceptor(asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, OnAccept on_accept)
    : impl_(std::make_shared<Impl>(ioc, std::move(name), std::move(on_accept))) {
  tcp::endpoint ep(asio::ip::make_address(bind), port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
}

Acceptor::~Acceptor() { stop(); }
uint16_t Acceptor::port() const { return impl_->acceptor.local_endpoint().port(); }
void Acceptor::start() { asio::post(impl_->acceptor.get_executor(), [i = impl_] { i->accept(); }); }
void Acceptor::stop() {
  asio::post(impl_->acceptor.get_executor(), [i = impl_] {
    if (i->stopped) return;
    i->stopped = true;
    beast::error_code ig;
    i->acceptor.close(ig);
    i->timer.cancel();
  });
}

}  // namespace cg::gateway
