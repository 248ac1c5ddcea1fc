#include "gateway/mesh_relay.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>

#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/no_throw.hpp"
#include "gateway/caller_response.hpp"

namespace cg::gateway {
using namespace cg::net;
using namespace boost::asio::experimental::awaitable_operators;

namespace {
template <class T>
using awaitable = asio::awaitable<T>;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct Relay {
  TlsStream caller;
  http::request<http::string_body> request;
  MeshRelayTarget t;
  std::optional<TlsStream> peer;
  uint64_t up = 0, down = 0;  // bytes caller → replica, replica → caller

  Relay(TlsStream c, http::request<http::string_body> r, MeshRelayTarget target)
      : caller(std::move(c)), request(std::move(r)), t(std::move(target)) {}

  nlohmann::json fields(nlohmann::json extra = nlohmann::json::object()) const {
    for (auto it = t.log_fields.begin(); it != t.log_fields.end(); ++it) extra[it.key()] = it.value();
    extra["servedBy"] = t.replica;
    return extra;
  }

  // Connects, verifies the replica and sends it the request; the reason on failure.
  awaitable<std::string> open() {
    std::string why = co_await connect_replica(caller.get_executor(), t, peer, [] { return false; });
    if (!why.empty()) co_return why;
    auto& p = *peer;
    request.set("X-Cluster-Gateway-Entry-Pod", t.entry);
    request.prepare_payload();
    auto [wec, n] = co_await http::async_write(p, request, use_tuple);
    if (wec) co_return "write: " + wec.message();
    beast::get_lowest_layer(p).expires_never();
    co_return "";
  }

  static awaitable<void> pipe(TlsStream& from, TlsStream& to, uint64_t& count) {
    std::vector<char> buf(16 * 1024);
    for (;;) {
      auto [rec, n] = co_await from.async_read_some(asio::buffer(buf), use_tuple);
      if (n > 0) {
        auto [wec, w] = co_await asio::async_write(to, asio::buffer(buf.data(), n), use_tuple);
        if (wec) co_return;
        count += n;
      }
      if (rec) co_return;
    }
  }

  awaitable<void> run() {
    std::string why = co_await open();
    if (!why.empty()) {
      metrics::mesh_forward("unreachable");
      log::warn("forwarded stream got no answer from the replica", fields({{"reason", why}}));
      auto res = make_text_error(502, "proxy request failed: replica " + t.replica + " holding the agent did not answer: " + why);
      res->set(http::field::server, "cluster-gateway");
      res->set("X-Cluster-Gateway-Entry-Pod", t.entry);
      res->keep_alive(false);
      res->prepare_payload();
      beast::get_lowest_layer(caller).expires_after(std::chrono::seconds(10));
      co_await http::async_write(caller, *res, use_tuple);
      co_await caller.async_shutdown(use_tuple);
      co_return;
    }
    metrics::mesh_forward("answered");
    log::info("stream forwarded", fields({{"method", std::string(request.method_string())}}));
    beast::get_lowest_layer(caller).expires_never();
    co_await (pipe(caller, *peer, up) || pipe(*peer, caller, down));
    beast::get_lowest_layer(caller).expires_after(std::chrono::seconds(2));
    beast::get_lowest_layer(*peer).expires_after(std::chrono::seconds(2));
    co_await (caller.async_shutdown(use_tuple) && peer->async_shutdown(use_tuple));
    log::info("forwarded stream ended", fields({{"bytesToReplica", up}, {"bytesToCaller", down}}));
  }
};
}  // namespace

awaitable<std::string> connect_replica(const asio::any_io_executor& ex, const MeshRelayTarget& t, std::optional<TlsStream>& peer,
                                       const std::function<bool()>& stop) {
  tcp::resolver resolver(ex);
  auto [rec, results] = co_await resolver.async_resolve(t.host, std::to_string(t.port), use_tuple);
  if (rec) co_return "resolve: " + rec.message();
  if (stop()) co_return "stopped";
  peer.emplace(ex, *t.tls);
  auto& p = *peer;
  if (!SSL_set_tlsext_host_name(p.native_handle(), t.server_name.c_str())) co_return "bad server name";
  p.set_verify_mode(asio::ssl::verify_peer);
  p.set_verify_callback(asio::ssl::host_name_verification(t.server_name));
  beast::get_lowest_layer(p).expires_after(t.connect_timeout);
  auto [cec, ep] = co_await beast::get_lowest_layer(p).async_connect(results, use_tuple);
  if (cec) co_return "connect: " + cec.message();
  auto [hec] = co_await p.async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (hec) co_return "TLS: " + hec.message();
  co_return "";
}

void start_mesh_relay(TlsStream caller, http::request<http::string_body> request, MeshRelayTarget target) {
  auto relay = std::make_shared<Relay>(std::move(caller), std::move(request), std::move(target));
  auto ex = relay->caller.get_executor();
  asio::co_spawn(
      ex, [relay]() -> awaitable<void> { co_await relay->run(); },
      [relay](const std::exception_ptr& e) {
        if (!e) return;
        const std::string why = exception_text(e);
        metrics::handler_exception("mesh_relay");
        log::error("forwarded stream failed; closed", relay->fields({{"reason", why}}));
        beast::error_code ec;
        beast::get_lowest_layer(relay->caller).socket().close(ec);
        if (relay->peer) beast::get_lowest_layer(*relay->peer).socket().close(ec);
      });
}

}  // namespace cg::gateway
