// An asynchronous HTTP/1.1 client for the Kubernetes API (Beast over TLS) on a given io_context:
// a small keep-alive connection pool, per-request timeouts, a client-side token-bucket rate limiter
// like client-go's QPS/burst (requests wait, they are never dropped), bearer token or client
// certificate authentication, and streaming watches (newline-delimited JSON events).
//
// Kept-alive connections the server closes (idle timeouts of API servers and load balancers): an
// idle connection is checked before reuse and dropped when the server has closed it or sent
// anything (its close_notify). When the close crosses the request on the wire instead (the request
// went out, the connection ended with nothing received), the request is sent again once on a new
// connection if it is a GET or HEAD, or whatever its method if the write itself failed (the server
// cannot have had the whole request). Other requests (PATCH, POST, PUT, DELETE) fail with the
// error; their caller decides (the status writer retries its PATCHes). As Go's net/http does.
//
// Callbacks run on the io_context's threads and must not block. Every callback is called exactly
// once, never from inside request()/watch() themselves (always posted). Call shutdown() (or destroy
// the client) before the io_context stops running.
// Timers: each runs on the strand of what it belongs to: a connection's name-resolution deadline on
// the connection's strand, a request's or watch's rate-limiter wait on a strand private to that
// request or watch. None runs on the bare io_context.
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

#include "kube/config.hpp"

namespace boost::asio {
class io_context;
}

namespace cg::kube {

struct Request {
  std::string method = "GET";
  std::string path;  // path with query, e.g. "/apis/openchoreo.dev/v1alpha1/dataplanes"
  std::string body;
  std::string content_type;  // for a body; default "application/json"
  std::chrono::milliseconds timeout{30000};  // connect + TLS + write + read, after the rate limiter let it go
  // Header fields of a relayed request (the mesh forwarding a caller's request): when given, the
  // client sends these instead of its own Accept and User-Agent; Host and the connection's own fields
  // (net::connection_field: Connection, Content-Length, Transfer-Encoding, ...) stay the client's and
  // are skipped; Authorization is skipped when the client has a token of its own, else relayed.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Response::error of requests failed because the client was shut down.
inline constexpr std::string_view kShutDownError = "client shut down";

struct Response {
  int status = 0;  // 0: no HTTP response, `error` says why
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;  // network/TLS/timeout error ("timeout" for a timeout)
  std::optional<std::chrono::seconds> retry_after;  // the Retry-After header (seconds form)

  bool ok() const { return status >= 200 && status < 300; }
  std::string header(std::string_view name) const;  // case-insensitive; "" when absent
  // For logs and errors: the Kubernetes Status message when the body is one, else the error or a short body.
  std::string message() const;
};

// How a watch ended.
enum class WatchEndReason {
  EndOfStream,  // the server ended the stream cleanly (timeoutSeconds elapsed, or it closed it)
  Refused,  // the server answered another status than 200 (`status`, `body`, `retry_after`)
  Failed,  // no answer (connect, TLS, write, headers timeout) or the stream broke (`error`)
  Idle,  // the stream was running, then nothing arrived for the idle bound: presumed hung
  Cancelled,  // WatchHandle::cancel() or KubeClient::shutdown()
};
const char* to_string(WatchEndReason r);

struct WatchEnd {
  WatchEndReason reason = WatchEndReason::Failed;
  int status = 0;  // 200: the stream was running; other: the server refused the watch; 0: no response
  std::string error;  // empty on a clean end of the stream (server-side timeout or close)
  std::string body;  // body of a non-200 answer (usually a Status)
  std::optional<std::chrono::seconds> retry_after;
  bool cancelled() const { return reason == WatchEndReason::Cancelled; }
};

struct WatchOptions {
  // Once the stream runs, no byte for this long ends the watch with WatchEndReason::Idle (the
  // connection is closed). 0: ClientOptions::watch_idle_timeout.
  std::chrono::milliseconds idle_timeout{0};
};

class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
  // Ends the watch; `on_done` is still called (with cancelled = true unless it already ended). Thread-safe.
  virtual void cancel() = 0;
};

struct ClientOptions {
  double qps = 20;  // <= 0: no rate limit
  int burst = 30;
  size_t max_connections = 16;  // concurrent plain requests (watches have their own connections)
  size_t max_idle = 4;  // idle keep-alive connections kept
  std::chrono::milliseconds watch_header_timeout{30000};  // until the watch response's headers
  // No byte on a running watch for this long: the connection is presumed dead (WatchEndReason::Idle),
  // unless the watch gives its own bound (WatchOptions). Longer than the longest timeoutSeconds the
  // plane source asks for (2 x 300 s), as servers need not send bookmarks.
  std::chrono::milliseconds watch_idle_timeout{660000};
  size_t body_limit = 256u << 20;  // largest response body accepted
  std::string user_agent;  // default "cluster-gateway/<version>"
};

struct ClientStats {
  uint64_t requests = 0;  // plain requests sent (retries included)
  uint64_t watches = 0;  // watch requests sent
  uint64_t connections_opened = 0;  // TCP+TLS connections established
  uint64_t throttled = 0;  // requests and watches that had to wait for the rate limiter
  uint64_t stale_idle = 0;  // idle connections found closed by the server, dropped before reuse
  uint64_t retries = 0;  // requests sent again on a new connection after a kept-alive one ended
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
  // GET `path_with_query` (which should include watch=true) and stream its body line by line. Events
  // split over several HTTP chunks and several events in one chunk are delivered as whole lines.
  std::shared_ptr<WatchHandle> watch(std::string path_with_query, LineCallback on_line, DoneCallback on_done,
                                     WatchOptions opts = {});

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
