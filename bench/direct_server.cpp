// bench-direct-server: the "direct" backend of the tunnel benchmark. An HTTPS server (same server
// certificate as the gateway, client certificates required from --client-ca like the internal API,
// HTTP/1.1 keep-alive) that answers like cluster-agent-sim's responder: POST/PUT/PATCH echo the
// body (201 for POST, 200 otherwise) with Content-Type: application/json and X-Agent-Index: 0;
// anything else gets a Kubernetes-style 404. Prints {"port": N} on stdout once listening.
//
//   bench-direct-server --cert server.crt --key server.key --client-ca internal-ca.crt [--port 0] [--threads 2]
#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/net.hpp"
#include "common/malloc_tuning.hpp"

using namespace cg::net;

namespace {

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(tcp::socket s, asio::ssl::context& ctx) : stream_(std::move(s), ctx) {}

  void run() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(10));
    stream_.async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->read();
    });
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(64u << 20);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(120));
    http::async_read(stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      self->answer();
    });
  }

  void answer() {
    auto& req = parser_->get();
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->set(http::field::server, "bench-direct-server");
    const auto m = req.method();
    if (m == http::verb::post || m == http::verb::put || m == http::verb::patch) {
      res->result(m == http::verb::post ? http::status::created : http::status::ok);
      res->set(http::field::content_type, "application/json");
      res->set("X-Agent-Index", "0");
      res->body() = std::move(req.body());
    } else {
      res->result(http::status::not_found);
      res->set(http::field::content_type, "application/json");
      res->body() = nlohmann::json{
          {"kind", "Status"},
          {"apiVersion", "v1"},
          {"metadata", nlohmann::json::object()},
          {"status", "Failure"},
          {"message", "the server could not find the requested resource"},
          {"reason", "NotFound"},
          {"code", 404}}.dump();
    }
    const bool keep = req.keep_alive();
    res->keep_alive(keep);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
      if (ec) return;
      if (keep) return self->read();
      beast::error_code ig;
      beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ig);
    });
  }

  TlsStream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

void accept(asio::io_context& ioc, tcp::acceptor& acc, asio::ssl::context& ctx) {
  acc.async_accept(asio::make_strand(ioc), [&](beast::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      beast::error_code ig;
      s.set_option(tcp::no_delay(true), ig);
      std::make_shared<Conn>(std::move(s), ctx)->run();
    }
    accept(ioc, acc, ctx);
  });
}

}  // namespace

int main(int argc, char** argv) {
  cg::tune_malloc_for_large_messages();  // the same malloc settings as the gateway and the simulator: the direct path is not
                                         // charged page faults the tunnel path no longer pays
  std::string cert, key, client_ca, bind = "127.0.0.1";
  int port = 0, threads = 2;
  CLI::App app{"bench-direct-server: HTTPS echo backend answering like cluster-agent-sim's responder"};
  app.add_option("--cert", cert, "Server certificate chain (PEM)")->required();
  app.add_option("--key", key, "Server key (PEM)")->required();
  app.add_option("--client-ca", client_ca, "Require client certificates from this CA (empty: none requested)");
  app.add_option("--bind", bind)->capture_default_str();
  app.add_option("--port", port, "0 picks a free port")->capture_default_str();
  app.add_option("--threads", threads, "I/O threads (cluster-agent-sim uses 2)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  asio::ssl::context ctx(asio::ssl::context::tls_server);
  try {
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
    ctx.use_certificate_chain_file(cert);
    ctx.use_private_key_file(key, asio::ssl::context::pem);
    if (!client_ca.empty()) {
      ctx.load_verify_file(client_ca);
      ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    }
  } catch (const std::exception& e) {
    std::cerr << "bench-direct-server: TLS setup: " << e.what() << "\n";
    return 1;
  }
  asio::io_context ioc(threads);
  tcp::acceptor acc(ioc);
  try {
    tcp::endpoint ep(asio::ip::make_address(bind), static_cast<uint16_t>(port));
    acc.open(ep.protocol());
    acc.set_option(asio::socket_base::reuse_address(true));
    acc.bind(ep);
    acc.listen(asio::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    std::cerr << "bench-direct-server: listen: " << e.what() << "\n";
    return 1;
  }
  std::cout << nlohmann::json{{"port", acc.local_endpoint().port()}}.dump() << std::endl;
  accept(ioc, acc, ctx);
  asio::signal_set sig(ioc, SIGINT, SIGTERM);
  sig.async_wait([&](beast::error_code, int) { ioc.stop(); });
  std::vector<std::thread> ts;
  for (int i = 1; i < threads; ++i) ts.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : ts) t.join();
  return 0;
}
