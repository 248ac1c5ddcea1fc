// The caller's side of one internal API connection: TLS, reading requests, writing answers and
// streams, and the watch that notices a caller hanging up while the agent works. Every Beast and Asio
// I/O operation on a caller connection is instantiated in caller_io.cpp (the exec bridge aside).
// Private to the internal API (Beast types: include from .cpp files only).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "common/net.hpp"
#include "common/time.hpp"
#include "gateway/caller_response.hpp"
#include "gateway/http_rules.hpp"
#include "gateway/proxy_policy.hpp"

namespace cg::gateway {

template <class T>
using awaitable = boost::asio::awaitable<T>;
using CallerRequest = net::http::request<net::http::string_body>;

// What the connection does after a request.
enum class Next {
  keep_alive,  // read the next request
  drain_close,  // answered early (the caller may still be sending): read and drop for 2 s, then close
  close,  // close now (the caller is gone, or the answer could not be written)
  handed_off  // the stream belongs to someone else now (exec)
};

// A one-strand event: wait() returns once notify() was called (before or during the wait).
class Wakeup {
 public:
  explicit Wakeup(const boost::asio::any_io_executor& ex);
  awaitable<void> wait();
  void notify();

 private:
  boost::asio::steady_timer timer_;
  bool pending_ = false;
};

// "The agent's reply, or the caller hanging up": while the agent works, one read on the caller's
// connection notices the caller going away and calls the handler the request armed. Bytes already
// buffered are a pipelined next request: the caller is there, and a read would keep that request
// waiting until the caller sent more. Bytes that arrive are kept for the next request.
class CallerWatch {
 public:
  using Spawn = std::function<void(awaitable<void>)>;
  CallerWatch(net::TlsStream& stream, net::beast::flat_buffer& buf);
  // Starts the read (unless one runs, the caller left, or bytes wait) and arms `on_hangup`: called
  // once, on the strand, if the read ends in an error before disarm().
  void arm(const Spawn& spawn, std::function<void()> on_hangup);
  void disarm() { on_hangup_ = nullptr; }
  // The caller left (the read ended in an error); no further request is read.
  bool caller_left() const { return state_ == State::caller_left || state_ == State::hung_up; }
  // The caller left while a request was armed: its answer is not written.
  bool hung_up() const { return state_ == State::hung_up; }
  // Waits until the read has finished, at most `limit`: that read was started without a deadline (a
  // stream may run for hours) and a tcp_stream deadline set now would not reach it, so at `limit`
  // `close` is called, which ends the read.
  awaitable<void> finished(std::chrono::steady_clock::duration limit, std::function<void()> close);

 private:
  awaitable<void> read();
  enum class State {
    idle,  // no read outstanding
    reading,  // the read is outstanding
    caller_left,  // the read ended in an error while nothing was armed
    hung_up  // the read ended in an error while a request was armed (its handler was called)
  };
  net::TlsStream& stream_;
  net::beast::flat_buffer& buf_;
  State state_ = State::idle;
  std::function<void()> on_hangup_;  // armed while the agent works
  Wakeup done_;  // the read finished
};

// The connection's I/O. The owner (one coroutine per connection) keeps it alive while any of its
// operations runs; `spawn` runs the watch's read on the connection's strand, keeping the owner alive.
class CallerIo {
 public:
  struct Timeouts {
    Duration idle, read, write, handshake;
  };
  CallerIo(net::tcp::socket s, std::shared_ptr<net::asio::ssl::context> ctx, Timeouts t);

  const std::string& remote() const { return remote_; }
  // Several replicas: every answer carries X-Cluster-Gateway-Entry-Pod (when `entry` is set) and
  // X-Cluster-Gateway-Served-By (`served_by`, unless the answer already names the replica that served it).
  void set_answer_headers(std::string entry, std::string served_by) {
    entry_pod_ = std::move(entry);
    served_by_ = std::move(served_by);
  }
  const CallerIdentity& caller() const { return caller_; }
  boost::asio::any_io_executor executor() { return stream_.get_executor(); }
  bool owns_stream() const { return stream_state_ == StreamState::owned; }

  awaitable<bool> handshake();
  // Reads the next request's header (first waiting for the last request's watch). The answer already
  // given instead (or close) when there is no request to serve.
  awaitable<std::optional<Next>> read_header();
  CallerRequest& request() { return parser_->get(); }
  std::optional<uint64_t> content_length() const;
  // Reads the request body (at most `max` bytes, declared or sent); the answer given when it cannot.
  awaitable<std::optional<Next>> read_body(uint64_t max);

  // Answers: each returns what the connection does next.
  awaitable<Next> write(std::shared_ptr<ProxyResponse> res, bool can_keep_alive);
  awaitable<Next> error(unsigned status, const std::string& msg, bool body_consumed);
  // A request refused before routing: answered, logged with its reason, counted; the connection closes.
  awaitable<Next> reject(unsigned status, RequestFault fault, const std::string& msg);

  // A stream's head (chunked; the connection closes at its end), its chunks and its last chunk.
  awaitable<bool> write_stream_head(std::shared_ptr<StreamHead> res);
  awaitable<net::beast::error_code> write_chunk(std::string_view data);
  awaitable<bool> write_last_chunk();

  // While the agent works: no deadline on the connection; the watch notices a hang-up.
  void await_agent(const CallerWatch::Spawn& spawn, std::function<void()> on_hangup);
  void agent_done() { watch_.disarm(); }
  bool hung_up() const { return watch_.hung_up(); }

  // Hands the TLS stream and the request to the exec bridge (this object no longer owns them).
  std::pair<net::TlsStream, CallerRequest> hand_over();

  // After an early answer (the request body was not read), read and discard what the caller is still
  // sending for a short while, so that closing does not reset the connection before the caller has
  // read the answer.
  awaitable<void> drain_and_close();
  void close_now();

 private:
  std::shared_ptr<net::asio::ssl::context> ctx_;  // the context this connection started with
  net::TlsStream stream_;
  enum class StreamState { owned, handed_over } stream_state_ = StreamState::owned;  // handed over: to exec
  Timeouts timeouts_;
  net::beast::flat_buffer buf_;
  std::optional<net::http::request_parser<net::http::string_body>> parser_;
  CallerWatch watch_;
  std::string remote_;
  CallerIdentity caller_;  // from the verified client certificate (anonymous without one)
  std::string entry_pod_, served_by_;  // set_answer_headers
  template <class Res>
  void mark_answer(Res& res) const;
};

}  // namespace cg::gateway
