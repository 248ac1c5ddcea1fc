#include "gateway/mesh_hop.hpp"

#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace cg::gateway {
using namespace cg::net;

namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr size_t kAnswerHeaderLimit = 64 * 1024;

bool repeatable(std::string_view method) { return method == "GET" || method == "HEAD" || method == "OPTIONS"; }

}  // namespace

struct MeshHop::Impl {
  // What the connection is doing; an exchange aborted from outside ends with no answer and no retry.
  enum class State { idle, exchanging, aborted };

  Impl(const asio::any_io_executor& e, std::shared_ptr<std::atomic<int64_t>> l) : ex(e), links(std::move(l)) {}
  asio::any_io_executor ex;
  std::shared_ptr<std::atomic<int64_t>> links;  // every caller connection's links, at most kMaxHopLinks
  enum class Slot { none, held };  // whether this hop counts in `links` (while it has a connection)
  Slot slot = Slot::none;
  std::optional<TlsStream> conn;  // open (or being opened) to `replica` with `tls`
  std::string replica;
  std::shared_ptr<asio::ssl::context> tls;
  beast::flat_buffer buf;
  State state = State::idle;
  std::string abort_reason;

  // Closes the socket: an operation under way ends with an error. Safe while one is pending.
  void shut() {
    if (!conn) return;
    beast::error_code ig;
    beast::get_lowest_layer(*conn).socket().close(ig);
  }
  // Drops the connection; only with no operation pending (between exchanges, or inside one).
  void close() {
    shut();
    conn.reset();
    buf.clear();
    if (slot == Slot::held) links->fetch_sub(1);
    slot = Slot::none;
  }

  // TCP, then TLS with the replica's certificate checked against the server name; "" or the reason.
  asio::awaitable<std::string> open(const MeshRelayTarget& t) {
    close();
    if (links->fetch_add(1) >= kMaxHopLinks) {
      links->fetch_sub(1);
      co_return "no free link (" + std::to_string(kMaxHopLinks) + " held)";
    }
    slot = Slot::held;
    replica = t.replica;
    tls = t.tls;
    co_return co_await connect_replica(ex, t, conn, [this] { return state == State::aborted; });
  }
};

MeshHop::MeshHop(const asio::any_io_executor& ex, std::shared_ptr<std::atomic<int64_t>> links)
    : impl_(std::make_unique<Impl>(ex, std::move(links))) {}
MeshHop::~MeshHop() { impl_->close(); }

void MeshHop::abort(const char* why) {
  auto& m = *impl_;
  if (m.state == Impl::State::idle) return m.close();
  m.state = Impl::State::aborted;
  m.abort_reason = why;
  m.shut();  // the exchange's pending operation ends; the exchange drops the connection
}

asio::awaitable<mesh::ForwardReply> MeshHop::exchange(const MeshRelayTarget& t, const mesh::ForwardRequest& req) {
  auto& m = *impl_;
  mesh::ForwardReply out;
  out.replica = t.replica;
  http::request<http::string_body> hreq;
  hreq.method_string(req.method);
  hreq.target(req.target);
  hreq.version(11);
  for (const auto& [name, value] : req.headers)
    if (!beast::iequals(name, "host") && !connection_field(name)) hreq.set(name, value);
  hreq.set(http::field::host, t.server_name.empty() ? t.host : t.server_name);
  hreq.set(mesh::kEntryPodHeader, t.entry);
  hreq.keep_alive(true);
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
    if (hreq.find(http::field::content_type) == hreq.end()) hreq.set(http::field::content_type, "application/json");
    hreq.body() = req.body;
  }
  hreq.prepare_payload();

  m.state = Impl::State::exchanging;
  m.abort_reason.clear();
  struct Idle {
    Impl& m;
    ~Idle() { m.state = Impl::State::idle; }
  } idle{m};
  const auto deadline = std::chrono::steady_clock::now() + req.timeout;
  for (int attempt = 0;; ++attempt) {
    // A kept connection to another replica, or with a replaced certificate, or that the replica
    // has closed while it was idle, is not reused.
    bool reused = m.conn && m.replica == t.replica && m.tls == t.tls && !closed_by_peer(*m.conn);
    if (!reused) {
      std::string why = co_await m.open(t);
      if (m.state == Impl::State::aborted) why = "aborted: " + m.abort_reason;
      if (!why.empty()) {
        m.close();
        out.error = std::move(why);
        out.sent = false;
        co_return out;
      }
    }
    auto& c = *m.conn;
    beast::get_lowest_layer(c).expires_at(deadline);
    auto [wec, wn] = co_await http::async_write(c, hreq, use_tuple);
    if (m.state == Impl::State::aborted) {
      m.close();
      out.error = "aborted: " + m.abort_reason;
      co_return out;
    }
    if (wec) {
      m.close();
      // The replica cannot have had the whole request: once more on a new connection.
      if (reused && attempt == 0 && wec != beast::error::timeout) continue;
      out.error = wec == beast::error::timeout ? "timeout (write)" : "write: " + wec.message();
      co_return out;
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(kAnswerHeaderLimit);
    parser.body_limit(kMaxForwardedAnswer);
    if (req.method == "HEAD") parser.skip(true);
    auto [rec, rn] = co_await http::async_read(*m.conn, m.buf, parser, use_tuple);
    if (m.state == Impl::State::aborted) {
      m.close();
      out.error = "aborted: " + m.abort_reason;
      co_return out;
    }
    if (rec) {
      const bool nothing = !parser.got_some();
      m.close();
      if (reused && attempt == 0 && nothing && repeatable(req.method) && stale_connection_error(rec)) continue;
      out.error = rec == beast::error::timeout ? "timeout (read)" : "read: " + rec.message();
      co_return out;
    }
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    out.body = std::move(res.body());
    if (res.keep_alive()) beast::get_lowest_layer(*m.conn).expires_never();
    else m.close();
    co_return out;
  }
}

}  // namespace cg::gateway
