// A listening socket shared by the three listeners (agent, internal API, health): binds at
// construction (throws on failure), accepts on the io_context with one strand per connection,
// pauses 100 ms after accept errors such as EMFILE instead of spinning. Include from .cpp files
// only (it names Asio types).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/net.hpp"

namespace cg::gateway {

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
