// A listening socket shared by the three listeners (agent, internal API, health): binds at
// construction (throws on failure), accepts on the io_context with one strand per connection,
// pauses 100 ms after accept errors such as EMFILE instead of spinning. Include from .cpp files
// only (it names Asio types).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/net.hpp"

namespace cg::gateway {

// The TLS context a listener hands to new connections; replaced when certificates are reloaded
// (live connections keep the one they started with).
class TlsContextSlot {
 public:
  explicit TlsContextSlot(std::shared_ptr<net::asio::ssl::context> ctx) : ctx_(std::move(ctx)) {}
  std::shared_ptr<net::asio::ssl::context> get() const {
    std::lock_guard lk(mu_);
    return ctx_;
  }
  void set(std::shared_ptr<net::asio::ssl::context> ctx) {
    std::lock_guard lk(mu_);
    ctx_ = std::move(ctx);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<net::asio::ssl::context> ctx_;
};

class Acceptor {
 public:
  using OnAccept = std::function<void(net::tcp::socket)>;
  Acceptor(net::asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, OnAccept on_accept);
  ~Acceptor();
  uint16_t port() const;
  void start();
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::gateway
