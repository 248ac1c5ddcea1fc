#include "gateway/caller_io.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
}

// ---- Wakeup --------------------------------------------------------------------------------------
Wakeup::Wakeup(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}

awaitable<void> Wakeup::wait() {
  if (!pending_) co_await timer_.async_wait(use_tuple);
  pending_ = false;
  timer_.expires_at(asio::steady_timer::time_point::max());
}

void Wakeup::notify() {
  pending_ = true;
  timer_.cancel();
}

// ---- CallerWatch ---------------------------------------------------------------------------------
CallerWatch::CallerWatch(TlsStream& stream, beast::flat_buffer& buf) : stream_(stream), buf_(buf), done_(stream.get_executor()) {}

void CallerWatch::arm(const Spawn& spawn, std::function<void()> on_hangup) {
  on_hangup_ = std::move(on_hangup);
  if (state_ != State::idle || buf_.size() > 0) return;
  state_ = State::reading;
  spawn(read());
}

awaitable<void> CallerWatch::read() {
  auto [ec, n] = co_await stream_.async_read_some(buf_.prepare(4096), use_tuple);
  if (!ec) {
    buf_.commit(n);
    state_ = State::idle;
  } else if (on_hangup_) {
    state_ = State::hung_up;
    auto handler = std::move(on_hangup_);
    on_hangup_ = nullptr;
    handler();
  } else {
    state_ = State::caller_left;
  }
  done_.notify();
}

awaitable<void> CallerWatch::finished(std::chrono::steady_clock::duration limit, std::function<void()> close) {
  if (state_ != State::reading) co_return;
  asio::steady_timer deadline(stream_.get_executor(), limit);
  deadline.async_wait([this, close = std::move(close)](beast::error_code ec) {
    if (!ec && state_ == State::reading) close();
  });
  while (state_ == State::reading) co_await done_.wait();
  deadline.cancel();
}

// ---- CallerIo ------------------------------------------------------------------------------------
CallerIo::CallerIo(tcp::socket s, std::shared_ptr<asio::ssl::context> ctx, Timeouts t)
    : ctx_(std::move(ctx)), stream_(std::move(s), *ctx_), timeouts_(t), watch_(stream_, buf_) {
  beast::error_code ec;
  auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
  if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
}

awaitable<bool> CallerIo::handshake() {
  beast::get_lowest_layer(stream_).expires_after(timeouts_.handshake);
  auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::server, use_tuple);
  if (ec) {
    log::warn("internal API TLS handshake refused", {{"remote", remote_}, {"reason", ec.message()}});
    metrics::internal_handshake("rejected");
    co_return false;
  }
  metrics::internal_handshake("accepted");
  if (SSL_get_verify_result(stream_.native_handle()) == X509_V_OK)
    caller_ = identity_from_certificate(SSL_get0_peer_certificate(stream_.native_handle()));
  co_return true;
}

awaitable<std::optional<Next>> CallerIo::read_header() {
  // A read still watching the last request's caller: its bytes are this request's. The caller gets
  // the idle timeout to send them.
  co_await watch_.finished(timeouts_.idle, [this] { close_now(); });
  if (watch_.caller_left()) co_return Next::close;  // it ended in an error: the caller is gone
  beast::get_lowest_layer(stream_).expires_after(timeouts_.idle);
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  // Declared sizes are judged by the validator (in upstream's order); the real bytes are limited
  // when the body is read.
  parser_->body_limit(boost::none);
  auto [ec, n] = co_await http::async_read_header(stream_, buf_, *parser_, use_tuple);
  if (ec == http::error::header_limit)
    co_return co_await reject(431, RequestFault::header_too_large, "request header fields too large");
  if (ec && peer_left(ec)) co_return Next::close;  // caller went away or idle timeout
  if (ec) co_return co_await reject(400, RequestFault::malformed, "malformed HTTP request: " + ec.message());
  if (auto p = framing_problem(parser_->get())) co_return co_await reject(400, p->fault, p->message);
  co_return std::nullopt;
}

std::optional<uint64_t> CallerIo::content_length() const {
  if (auto cl = parser_->content_length()) return *cl;
  return std::nullopt;
}

awaitable<std::optional<Next>> CallerIo::read_body(uint64_t max) {
  auto too_large = [max](const std::string& size) {
    return "Request body too large: " + size + " bytes (max: " + std::to_string(max) + ")";
  };
  if (auto cl = parser_->content_length(); cl && *cl > max) co_return co_await error(413, too_large(std::to_string(*cl)), false);
  parser_->body_limit(max);
  beast::get_lowest_layer(stream_).expires_after(timeouts_.read);
  auto [ec, n] = co_await http::async_read(stream_, buf_, *parser_, use_tuple);
  if (ec == http::error::body_limit)
    co_return co_await reject(413, RequestFault::body_too_large, too_large("more than " + std::to_string(max)));
  if (ec && peer_left(ec)) co_return Next::close;
  if (ec) co_return co_await reject(400, RequestFault::malformed, "malformed HTTP request body: " + ec.message());
  co_return std::nullopt;
}

template <class Res>
void CallerIo::mark_answer(Res& res) const {
  if (!entry_pod_.empty()) res.set("X-Cluster-Gateway-Entry-Pod", entry_pod_);
  if (!served_by_.empty() && res.find("X-Cluster-Gateway-Served-By") == res.end())
    res.set("X-Cluster-Gateway-Served-By", served_by_);
}

awaitable<Next> CallerIo::write(std::shared_ptr<ProxyResponse> res, bool can_keep_alive) {
  if (watch_.hung_up()) co_return Next::close;
  mark_answer(*res);
  // Kept alive when the request asked for it and was read whole (refusals pass can_keep_alive false).
  const bool keep = can_keep_alive && parser_ && parser_->is_done() && parser_->get().keep_alive();
  res->set(http::field::server, "cluster-gateway");
  res->keep_alive(keep);
  res->prepare_payload();
  beast::get_lowest_layer(stream_).expires_after(timeouts_.write);
  auto [ec, n] = co_await http::async_write(stream_, *res, use_tuple);
  if (ec) co_return Next::close;
  co_return keep ? Next::keep_alive : Next::drain_close;
}

awaitable<Next> CallerIo::error(unsigned status, const std::string& msg, bool body_consumed) {
  return write(make_text_error(status, msg), body_consumed);
}

awaitable<Next> CallerIo::reject(unsigned status, RequestFault fault, const std::string& msg) {
  metrics::http_request_rejected("internal", to_string(fault));
  log::warn("internal API request rejected", {{"remote", remote_}, {"status", status}, {"reason", msg}});
  return error(status, msg, false);
}

awaitable<bool> CallerIo::write_stream_head(std::shared_ptr<StreamHead> res) {
  res->set(http::field::server, "cluster-gateway");
  mark_answer(*res);
  res->keep_alive(false);  // a stream ends the connection: simpler for callers and proxies alike
  res->chunked(true);
  http::response_serializer<http::empty_body> sr(*res);
  beast::get_lowest_layer(stream_).expires_after(timeouts_.write);
  auto [ec, n] = co_await http::async_write_header(stream_, sr, use_tuple);
  beast::get_lowest_layer(stream_).expires_never();
  co_return !ec;
}

awaitable<beast::error_code> CallerIo::write_chunk(std::string_view data) {
  beast::get_lowest_layer(stream_).expires_after(timeouts_.write);
  auto [ec, n] = co_await asio::async_write(stream_, http::make_chunk(asio::buffer(data)), use_tuple);
  beast::get_lowest_layer(stream_).expires_never();
  co_return ec;
}

awaitable<bool> CallerIo::write_last_chunk() {
  beast::get_lowest_layer(stream_).expires_after(timeouts_.write);
  auto [ec, n] = co_await asio::async_write(stream_, http::make_chunk_last(), use_tuple);
  co_return !ec;
}

void CallerIo::await_agent(const CallerWatch::Spawn& spawn, std::function<void()> on_hangup) {
  beast::get_lowest_layer(stream_).expires_never();
  watch_.arm(spawn, std::move(on_hangup));
}

std::pair<TlsStream, CallerRequest> CallerIo::hand_over() {
  beast::get_lowest_layer(stream_).expires_never();
  stream_state_ = StreamState::handed_over;
  return {std::move(stream_), parser_->release()};
}

awaitable<void> CallerIo::drain_and_close() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  co_await watch_.finished(std::chrono::seconds(2), [this] { close_now(); });
  beast::get_lowest_layer(stream_).expires_at(deadline);
  std::string scratch(64 * 1024, '\0');
  for (size_t drained = 0; drained <= (32u << 20);) {
    auto [ec, n] = co_await stream_.async_read_some(asio::buffer(scratch), use_tuple);
    if (ec) break;
    drained += n;
  }
  close_now();
}

void CallerIo::close_now() {
  beast::error_code ig;
  beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ig);
  beast::get_lowest_layer(stream_).socket().close(ig);
}

}  // namespace cg::gateway
