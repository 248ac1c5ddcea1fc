// Blocking TLS/WebSocket clients for tests (each owns its io_context; never used on gateway threads).
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cg::testing {

struct ClientTls {
  std::string cert_chain_pem;  // leaf first, then intermediates to send; empty: no client certificate
  std::string key_pem;
  std::string ca_pem;  // trusted server CA
  int max_version = 0;  // e.g. TLS1_1_VERSION to force an old protocol; 0: library default
  int min_version = 0;
};

struct HttpResult {
  int status = 0;  // 0: no HTTP response (connection or TLS failure: see error)
  std::string body;
  std::string error;
};

// One HTTPS request (Connection: close). With `websocket_headers`, sends a WebSocket upgrade request.
HttpResult https_get(unsigned short port, const std::string& target, const ClientTls& tls, bool websocket_headers = true);

struct HttpResponse {
  int status = 0;  // 0: no response (see error)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;
  std::string header(const std::string& name) const;
};

// One HTTPS request with any method, headers and body. `chunked` sends the body with chunked encoding.
HttpResponse https_request(unsigned short port, const std::string& method, const std::string& target, const ClientTls& tls,
                           const std::vector<std::pair<std::string, std::string>>& headers = {}, const std::string& body = "",
                           bool chunked = false);

// Several HTTPS requests on one kept-alive connection (opened by the first).
class HttpsSession {
 public:
  HttpsSession(unsigned short port, ClientTls tls);
  ~HttpsSession();
  HttpResponse request(const std::string& method, const std::string& target,
                       const std::vector<std::pair<std::string, std::string>>& headers = {}, const std::string& body = "",
                       bool chunked = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class WsClient {
 public:
  // nullptr when the upgrade is refused; `res` then holds the HTTP status and body.
  static std::unique_ptr<WsClient> connect(unsigned short port, const std::string& target, const ClientTls& tls, HttpResult& res);
  ~WsClient();
  // Reads one message, answering pings meanwhile. False on close, error or timeout.
  bool read(std::string& msg, std::chrono::milliseconds timeout);
  bool write(const std::string& text);
  bool closed() const;
  int close_code() const;  // WebSocket close code received (0 if none)
  std::string close_reason() const;
  void close();
  // Runs the client's io for `d` without a read pending: pings are not answered (a "silent" peer).
  void stay_silent(std::chrono::milliseconds d);

 private:
  struct Impl;
  explicit WsClient(std::unique_ptr<Impl> i);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cg::testing
