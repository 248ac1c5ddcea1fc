// An asynchronous HTTP/1.1 client for the Kubernetes API (Beast over TLS) on a given io_context:
// a small keep-alive connection pool, per-request timeouts, a client-side token-bucket rate limiter
// like client-go's QPS/burst (requests wait, they are never dropped), bearer token or client
// certificate authentication, and streaming watches (newline-delimited JSON events).
//
// Callbacks run on the io_context's threads and must not block. Every callback is called exactly
// once, never from inside request()/watch() themselves. Call shutdown() (or destroy the client)
// before the io_context stops running.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plane_index/kube_config.hpp"

namespace boost::asio {
class io_context;
}

namespace cg::kube {

struct Request {
  std::string method = "GET";
  std::string path;          // path with query, e.g. "/apis/openchoreo.dev/v1alpha1/dataplanes"
  std::string body;
  std::string content_type;  // for a body; default "application/json"
  std::chrono::milliseconds timeout{30000};  // connect + TLS + write + read, after the rate limiter let it go
};

// Response::error of requests failed because the client was shut down.
inline constexpr std::string_view kShutDownError = "client shut down";

struct Response {
  int status = 0;  // 0: no HTTP response, `error` says why
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;                                // network/TLS/timeout error ("timeout" for a timeout)
  std::optional<std::chrono::seconds> retry_after;  // the Retry-After header (seconds form)

  bool ok() const { return status >= 200 && status < 300; }
  std::string header(std::string_view name) const;  // case-insensitive; "" when absent
  // For logs and errors: the Kubernetes Status message when the body is one, else the error or a short body.
  std::string message() const;
};

struct WatchEnd {
  int status = 0;          // 200: the stream was running; other: the server refused the watch; 0: no response
  std::string error;       // empty on a clean end of the stream (server-side timeout or close)
  std::string body;        // body of a non-200 answer (usually a Status)
  bool cancelled = false;  // ended by WatchHandle::cancel() or KubeClient::shutdown()
  std::optional<std::chrono::seconds> retry_after;
};

class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
  // Ends the watch; `on_done` is still called (with cancelled = true unless it already ended). Thread-safe.
  virtual void cancel() = 0;
};

struct ClientOptions {
  double qps = 20;                 // <= 0: no rate limit
  int burst = 30;
  size_t max_connections = 16;     // concurrent plain requests (watches have their own connections)
  size_t max_idle = 4;             // idle keep-alive connections kept
  std::chrono::milliseconds watch_header_timeout{30000};   // until the watch response's headers
  // No byte on a running watch for this long: the connection is presumed dead. Longer than the longest
  // timeoutSeconds the plane source asks for (2 x 300 s), as servers need not send bookmarks.
  std::chrono::milliseconds watch_idle_timeout{660000};
  size_t body_limit = 256u << 20;  // largest response body accepted
  std::string user_agent;          // default "cluster-gateway/<version>"
};

struct ClientStats {
  uint64_t requests = 0;             // plain requests sent (retries included)
  uint64_t watches = 0;              // watch requests sent
  uint64_t connections_opened = 0;   // TCP+TLS connections established
  uint64_t throttled = 0;            // requests and watches that had to wait for the rate limiter
};

class KubeClient {
 public:
  using Callback = std::function<void(Response)>;
  using LineCallback = std::function<void(std::string_view json_line)>;
  using DoneCallback = std::function<void(WatchEnd)>;

  // Throws std::runtime_error when the TLS material in `cfg` cannot be loaded.
  KubeClient(boost::asio::io_context& ioc, KubeConfig cfg, ClientOptions opts = {});
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  void request(Request req, Callback done);
  // GET `path_with_query` (which should include watch=true) and stream its body line by line.
  std::shared_ptr<WatchHandle> watch(std::string path_with_query, LineCallback on_line, DoneCallback on_done);

  // Fails queued requests, cancels running requests and watches, closes idle connections. Later
  // requests fail at once (asynchronously). Idempotent.
  void shutdown();

  const KubeConfig& config() const;
  boost::asio::io_context& io_context() const;
  ClientStats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
std::string url_encode(std::string_view s);

}  // namespace cg::kube
