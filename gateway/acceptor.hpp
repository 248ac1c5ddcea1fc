// A listening socket shared by the three listeners (agent, internal API, health): binds at
// construction (throws on failure), accepts on the io_context with one strand per connection,
// pauses 100 ms after accept errors such as EMFILE instead of spinning. Include from .cpp files
// only (it names Asio types).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <chrono>
#include <string>

#include "common/net.hpp"
#include "common/thread_annotations.hpp"

namespace cg::gateway {

// The TLS context a listener hands to new connections; replaced when certificates are reloaded
// (live connections keep the one they started with).
class TlsContextSlot {
 public:
  explicit TlsContextSlot(std::shared_ptr<net::asio::ssl::context> ctx) : ctx_(std::move(ctx)) {}
  std::shared_ptr<net::asio::ssl::context> get() const {
    cg::MutexLock lk(mu_);
    return ctx_;
  }
  void set(std::shared_ptr<net::asio::ssl::context> ctx) {
    cg::MutexLock lk(mu_);
    ctx_ = std::move(ctx);
  }

 private:
  mutable cg::Mutex mu_;
  std::shared_ptr<net::asio::ssl::context> ctx_ CG_GUARDED_BY(mu_);
};

// Connection defences every listener can share (zero values turn each off).
struct AcceptLimits {
  size_t max_connections = 0;  // open connections of this listener; beyond it new ones are closed at once
  // A connection that sends no byte within this time is closed; until its first byte arrives it costs
  // only its socket and a timer (no TLS state, no buffers). The callback runs at the first byte.
  std::chrono::steady_clock::duration first_byte_timeout{};
};

class Acceptor {
 public:
  using OnAccept = std::function<void(net::tcp::socket)>;
  // `slot` counts the connection against AcceptLimits::max_connections until it is released: the
  // connection keeps it for as long as it lives.
  using OnAcceptSlot = std::function<void(net::tcp::socket, std::shared_ptr<void> slot)>;
  Acceptor(net::asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, OnAccept on_accept);
  Acceptor(net::asio::io_context& ioc, const std::string& bind, uint16_t port, std::string name, AcceptLimits limits,
           OnAcceptSlot on_accept);
  ~Acceptor();
  uint16_t port() const;
  void start();
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::gateway
