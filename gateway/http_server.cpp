#include "gateway/http_server.hpp"

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "gateway/caller_response.hpp"
#include "gateway/http_rules.hpp"
#include "common/net.hpp"
#include "gateway/acceptor.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {
class HttpConn : public std::enable_shared_from_this<HttpConn> {
 public:
  HttpConn(tcp::socket s, std::shared_ptr<void> slot, std::shared_ptr<HttpHandler> h)
      : slot_(std::move(slot)), stream_(std::move(s)), handler_(std::move(h)) {}
  void run() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(8 * 1024);
    parser_->body_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::header_limit || ec == http::error::body_limit)
        return self->reject(431, RequestFault::header_too_large, "request too large");
      if (ec && peer_left(ec)) return;
      if (ec) return self->reject(400, RequestFault::malformed, "malformed HTTP request: " + ec.message());
      if (auto p = framing_problem(self->parser_->get())) return self->reject(400, p->fault, p->message);
      self->serve();
    });
  }
  void reject(unsigned status, RequestFault fault, const std::string& message) {
    metrics::http_request_rejected("health", to_string(fault));
    beast::error_code ig;
    auto ep = stream_.socket().remote_endpoint(ig);
    log::warn("health listener request rejected",
              {{"remote", ig ? std::string() : ep.address().to_string()}, {"status", status}, {"reason", message}});
    auto res = make_text_error(status, message);
    res->set(http::field::server, "cluster-gateway");
    res->keep_alive(false);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ig;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ig);
    });
  }
  void serve() {
    auto req = parser_->release();
    HttpReply r;
    try {
      r = (*handler_)(std::string(req.method_string()), std::string(req.target()));
    } catch (const std::exception& e) {
      r = {500, "text/plain; charset=utf-8", std::string("internal error: ") + e.what() + "\n"};
    }
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), req.version());
    res->set(http::field::server, "cluster-gateway");
    res->set(http::field::content_type, r.content_type);
    res->body() = req.method() == http::verb::head ? std::string() : std::move(r.body);
    res->keep_alive(req.keep_alive());
    res->prepare_payload();
    bool keep = req.keep_alive();
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
      if (ec) return;
      if (keep) self->read();
      else {
        beast::error_code ig;
        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ig);
      }
    });
  }
  std::shared_ptr<void> slot_;  // counts against the listener's connection cap
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<HttpHandler> handler_;
};
}  // namespace

struct HttpServer::Impl {
  Impl(asio::io_context& ioc, const std::string& bind, uint16_t port, HttpHandler h)
      : handler(std::make_shared<HttpHandler>(std::move(h))),
        acceptor(ioc, bind, port, "health", AcceptLimits{kMaxConnections, std::chrono::seconds(10)},
                 [this](tcp::socket s, std::shared_ptr<void> slot) {
                   std::make_shared<HttpConn>(std::move(s), std::move(slot), handler)->run();
                 }) {}
  static constexpr size_t kMaxConnections = 256;  // probes and scrapers: a handful at a time
  std::shared_ptr<HttpHandler> handler;
  Acceptor acceptor;
};

HttpServer::HttpServer(asio::io_context& ioc, const std::string& bind, uint16_t port, HttpHandler handler)
    : impl_(std::make_shared<Impl>(ioc, bind, port, std::move(handler))) {}
HttpServer::~HttpServer() { stop(); }
uint16_t HttpServer::port() const { return impl_->acceptor.port(); }
void HttpServer::start() { impl_->acceptor.start(); }
void HttpServer::stop() { impl_->acceptor.stop(); }

}  // namespace cg::gateway
