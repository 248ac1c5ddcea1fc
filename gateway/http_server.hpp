// A small plain-HTTP/1.1 server (health, readiness, metrics) on the gateway's io_context.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}

namespace cg::gateway {

struct HttpReply {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpReply(const std::string& method, const std::string& target)>;

class HttpServer {
 public:
  // Binds immediately (throws on failure); port 0 picks a free port.
  HttpServer(boost::asio::io_context& ioc, const std::string& bind, uint16_t port, HttpHandler handler);
  ~HttpServer();
  uint16_t port() const;
  void start();
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::gateway
