#include "gateway/exec_bridge.hpp"

#include <deque>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {
using namespace cg::net;

namespace {

class ExecBridge : public std::enable_shared_from_this<ExecBridge> {
 public:
  ExecBridge(TlsStream s, std::shared_ptr<const void> keep, session::Tunnel& tunnel, ExecTarget t)
      : ws_(std::move(s)), keep_(std::move(keep)), tunnel_(tunnel), t_(std::move(t)) {}

  void run(http::request<http::string_body> req) {
    req_ = std::move(req);
    websocket::stream_base::timeout to{};
    to.handshake_timeout = t_.handshake_timeout;
    to.idle_timeout = websocket::stream_base::none();
    to.keep_alive_pings = false;
    ws_.set_option(to);
    ws_.read_message_max(t_.max_message_size);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "cluster-gateway"); }));
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) {
      if (ec) {
        log::warn("exec: caller WebSocket upgrade failed", self->fields({{"reason", ec.message()}}));
        return;
      }
      self->open();
    });
  }

 private:
  nlohmann::json fields(nlohmann::json f = nlohmann::json::object()) const {
    f["requestID"] = t_.gateway_request_id;
    f["planeType"] = t_.plane_type;
    f["planeID"] = t_.plane_id;
    f["cr"] = t_.cr_key;
    if (!stream_id_.empty()) f["streamID"] = stream_id_;
    return f;
  }

  void open() {
    session::StreamRequest sr;
    sr.mode = session::StreamRequest::Mode::upgrade;
    sr.kind = "exec";
    sr.request.target = "k8s";
    sr.request.method = "POST";
    sr.request.path = t_.path;
    sr.request.query = t_.query;
    sr.request.gateway_request_id = t_.gateway_request_id;
    sr.upgrade_proto = "SPDY/3.1";
    sr.first_timeout = t_.first_timeout;
    auto self = shared_from_this();
    auto exec = ws_.get_executor();
    log::info("exec stream requested", fields({{"path", t_.path}}));
    stream_id_ = tunnel_.open_stream(t_.plane_type, t_.plane_id, t_.cr_key, std::move(sr), [self, exec](session::StreamEvent ev) {
      asio::post(exec, [self, ev = std::move(ev)]() mutable { self->on_event(std::move(ev)); });
    });
    // The stream id is only known once open_stream returns; events posted before are handled after.
    read_caller();
  }

  void on_event(session::StreamEvent ev) {
    if (ended_) return;
    using K = session::StreamEvent::Kind;
    if (ev.kind == K::data) {
      out_.push_back(std::move(ev.data));
      return pump();
    }
    if (ev.kind != K::end) return;
    ended_ = true;
    using O = session::TunnelReply::Outcome;
    uint16_t code = 1000;
    std::string reason = ev.error;
    switch (ev.outcome) {
      case O::response: break;
      case O::no_agent:
        code = 1011;
        reason = "no agent available: no agents found for plane " + t_.plane_type + "/" + t_.plane_id;
        break;
      case O::not_authorized:
        code = 1011;
        reason = "no agent available: no agents authorized for CR " + t_.cr_key;
        break;
      case O::timeout:
        code = 1011;
        reason = "timeout waiting for the agent to start the exec stream";
        break;
      case O::connection_closed:
        code = 1011;
        reason = "agent connection closed";
        break;
      default:
        code = 1011;
        if (reason.empty()) reason = "exec stream failed";
        break;
    }
    log::info("exec stream ended", fields({{"closeCode", code}, {"reason", reason}}));
    close_code_ = code;
    close_reason_ = reason;
    pump();
  }

  void pump() {
    if (writing_ || closed_) return;
    if (!out_.empty()) {
      writing_ = true;
      cur_ = std::move(out_.front());
      out_.pop_front();
      ws_.binary(true);
      beast::get_lowest_layer(ws_).expires_after(t_.write_timeout);
      ws_.async_write(asio::buffer(cur_), [self = shared_from_this()](beast::error_code ec, size_t n) {
        self->writing_ = false;
        beast::get_lowest_layer(self->ws_).expires_never();
        if (ec) return self->caller_gone("write to caller failed: " + ec.message());
        self->tunnel_.stream_consumed(self->stream_id_, n);
        self->pump();
      });
      return;
    }
    if (ended_) {
      closed_ = true;
      // WebSocket close reasons are at most 123 bytes.
      if (close_reason_.size() > 123) close_reason_.resize(123);
      beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));
      ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(close_code_), close_reason_),
                      [self = shared_from_this()](beast::error_code) {});
    }
  }

  void read_caller() {
    ws_.async_read(in_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->caller_gone(ec == websocket::error::closed ? "caller closed the exec WebSocket" : ec.message());
      std::string msg = beast::buffers_to_string(self->in_.data());
      self->in_.consume(self->in_.size());
      if (!self->ended_ && !self->stream_id_.empty()) self->tunnel_.stream_send(self->stream_id_, msg);
      self->read_caller();
    });
  }

  void caller_gone(const std::string& why) {
    if (!ended_) {
      ended_ = true;
      log::info("exec caller went away; stream closed", fields({{"reason", why}}));
      if (!stream_id_.empty()) tunnel_.stream_close(stream_id_);
    }
    closed_ = true;
    beast::error_code ig;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ig);
    beast::get_lowest_layer(ws_).socket().close(ig);
  }

  websocket::stream<TlsStream> ws_;
  http::request<http::string_body> req_;  // the upgrade request, alive for as long as async_accept may read it
  std::shared_ptr<const void> keep_;
  session::Tunnel& tunnel_;
  ExecTarget t_;
  std::string stream_id_;
  beast::flat_buffer in_;
  std::deque<std::string> out_;
  std::string cur_;
  bool writing_ = false, ended_ = false, closed_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
};

}  // namespace

void start_exec_bridge(TlsStream stream, http::request<http::string_body> request, std::shared_ptr<const void> keep_alive,
                       session::Tunnel& tunnel, ExecTarget target) {
  std::make_shared<ExecBridge>(std::move(stream), std::move(keep_alive), tunnel, std::move(target))->run(std::move(request));
}

}  // namespace cg::gateway
