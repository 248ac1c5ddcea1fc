#include "tests/support/ws_client.hpp"

#include <openssl/ssl.h>

#include <optional>
#include <thread>

#include "common/net.hpp"

namespace cg::testing {
using namespace cg::net;

namespace {
std::shared_ptr<asio::ssl::context> make_ctx(const ClientTls& t) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  if (!t.ca_pem.empty()) {
    ctx->add_certificate_authority(asio::buffer(t.ca_pem));
    ctx->set_verify_mode(asio::ssl::verify_peer);
  }
  if (!t.cert_chain_pem.empty()) {
    ctx->use_certificate_chain(asio::buffer(t.cert_chain_pem));
    ctx->use_private_key(asio::buffer(t.key_pem), asio::ssl::context::pem);
  }
  if (t.max_version) SSL_CTX_set_max_proto_version(ctx->native_handle(), t.max_version);
  if (t.min_version) SSL_CTX_set_min_proto_version(ctx->native_handle(), t.min_version);
  if (t.max_version && t.max_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx->native_handle(), 0);
  return ctx;
}
// Connects to 127.0.0.1:port and completes the TLS handshake; false with `error` set otherwise.
bool open_tls(TlsStream& s, unsigned short port, std::chrono::seconds timeout, std::string& error) {
  beast::error_code ec;
  beast::get_lowest_layer(s).expires_after(timeout);
  beast::get_lowest_layer(s).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    error = "connect: " + ec.message();
    return false;
  }
  s.handshake(asio::ssl::stream_base::client, ec);
  if (ec) {
    error = "tls: " + ec.message();
    return false;
  }
  return true;
}
}  // namespace

struct WsClient::Impl {
  asio::io_context ioc;
  std::shared_ptr<asio::ssl::context> ctx;
  std::optional<websocket::stream<TlsStream>> ws;
  beast::flat_buffer buf;
  bool read_pending = false;
  bool read_done = false;
  beast::error_code read_ec;
  bool is_closed = false;
};

WsClient::WsClient(std::unique_ptr<Impl> i) : impl_(std::move(i)) {}
WsClient::~WsClient() {
  if (impl_ && impl_->ws && !impl_->is_closed) {
    beast::error_code ec;
    beast::get_lowest_layer(*impl_->ws).socket().close(ec);
  }
}

HttpResult https_get(unsigned short port, const std::string& target, const ClientTls& tls, bool ws_headers) {
  HttpResult r;
  asio::io_context ioc;
  auto ctx = make_ctx(tls);
  TlsStream s(ioc, *ctx);
  beast::error_code ec;
  if (!open_tls(s, port, std::chrono::seconds(10), r.error)) return r;
  http::request<http::empty_body> req(http::verb::get, target, 11);
  req.set(http::field::host, "127.0.0.1");
  if (ws_headers) {
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::sec_websocket_version, "13");
    req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  } else {
    req.set(http::field::connection, "close");
  }
  http::write(s, req, ec);
  if (ec) r.error = "write: " + ec.message();  // the server may have answered early (413): read it
  beast::flat_buffer b;
  http::response_parser<http::string_body> p;
  p.skip(false);
  http::read_header(s, b, p, ec);
  if (ec) {
    r.error = "read: " + ec.message();
    return r;
  }
  r.status = static_cast<int>(p.get().result_int());
  if (r.status != 101) {
    http::read(s, b, p, ec);
    r.body = p.get().body();
  }
  return r;
}

std::string HttpResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, name)) return v;
  return {};
}

struct HttpsSession::Impl {
  unsigned short port;
  ClientTls tls;
  asio::io_context ioc;
  std::shared_ptr<asio::ssl::context> ctx;
  std::optional<TlsStream> s;
  beast::flat_buffer b;
};

HttpsSession::HttpsSession(unsigned short port, ClientTls tls) : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  impl_->tls = std::move(tls);
  impl_->ctx = make_ctx(impl_->tls);
}
HttpsSession::~HttpsSession() = default;

HttpResponse HttpsSession::request(const std::string& method, const std::string& target,
                                   const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
                                   bool chunked) {
  HttpResponse r;
  auto& m = *impl_;
  if (!m.s) {
    m.s.emplace(m.ioc, *m.ctx);
    m.b.clear();
    if (!open_tls(*m.s, m.port, std::chrono::seconds(60), r.error)) {
      m.s.reset();
      return r;
    }
  }
  auto& s = *m.s;
  beast::get_lowest_layer(s).expires_after(std::chrono::seconds(60));
  beast::error_code ec;
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  if (req.method() == http::verb::unknown) req.method_string(method);
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.insert(k, v);
  req.body() = body;
  if (chunked) req.chunked(true);
  else if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") req.prepare_payload();
  http::write(s, req, ec);
  if (ec) {
    r.error = "write: " + ec.message();
    m.s.reset();
    return r;
  }
  http::response_parser<http::string_body> p;
  p.body_limit(64u << 20);
  if (method == "HEAD") p.skip(true);
  http::read(s, m.b, p, ec);
  if (ec && ec != http::error::end_of_stream) {
    r.error = "read: " + ec.message();
    m.s.reset();
    if (!p.is_header_done()) return r;
  }
  r.status = static_cast<int>(p.get().result_int());
  for (const auto& f : p.get()) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  r.body = p.get().body();
  if (ec || !p.get().keep_alive()) m.s.reset();
  return r;
}

HttpResponse https_request(unsigned short port, const std::string& method, const std::string& target, const ClientTls& tls,
                           const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
                           bool chunked) {
  HttpsSession one(port, tls);
  return one.request(method, target, headers, body, chunked);
}

std::unique_ptr<WsClient> WsClient::connect(unsigned short port, const std::string& target, const ClientTls& tls,
                                            HttpResult& res) {
  auto i = std::make_unique<Impl>();
  i->ctx = make_ctx(tls);
  i->ws.emplace(i->ioc, *i->ctx);
  auto& ws = *i->ws;
  beast::error_code ec;
  beast::get_lowest_layer(ws).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(ws).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) {
    res.error = "connect: " + ec.message();
    return nullptr;
  }
  ws.next_layer().handshake(asio::ssl::stream_base::client, ec);
  if (ec) {
    res.error = "tls: " + ec.message();
    return nullptr;
  }
  websocket::response_type resp;
  ws.handshake(resp, "127.0.0.1", target, ec);
  res.status = static_cast<int>(resp.result_int());
  res.body = resp.body();
  if (ec) {
    res.error = "upgrade: " + ec.message();
    return nullptr;
  }
  beast::get_lowest_layer(ws).expires_never();
  ws.control_callback([raw = i.get()](websocket::frame_type, beast::string_view) { (void)raw; });
  return std::unique_ptr<WsClient>(new WsClient(std::move(i)));
}

bool WsClient::read(std::string& msg, std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  if (i.is_closed) return false;
  if (!i.read_pending) {
    i.read_pending = true;
    i.read_done = false;
    i.ws->async_read(i.buf, [&i](beast::error_code ec, size_t) {
      i.read_done = true;
      i.read_ec = ec;
    });
  }
  i.ioc.restart();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!i.read_done && std::chrono::steady_clock::now() < deadline) i.ioc.run_one_until(deadline);
  if (!i.read_done) return false;
  i.read_pending = false;
  if (i.read_ec) {
    i.is_closed = true;
    return false;
  }
  msg = beast::buffers_to_string(i.buf.data());
  i.buf.consume(i.buf.size());
  return true;
}

bool WsClient::write(const std::string& text) {
  beast::error_code ec;
  impl_->ws->text(true);
  impl_->ws->write(asio::buffer(text), ec);
  return !ec;
}

bool WsClient::closed() const { return impl_->is_closed; }
int WsClient::close_code() const { return impl_->ws ? impl_->ws->reason().code : 0; }
std::string WsClient::close_reason() const { return impl_->ws ? std::string(impl_->ws->reason().reason.c_str()) : ""; }

void WsClient::close() {
  if (impl_->is_closed) return;
  beast::error_code ec;
  impl_->ws->close(websocket::close_code::normal, ec);
  impl_->is_closed = true;
}

void WsClient::stay_silent(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

}  // namespace cg::testing
