#include "gateway/internal_api.hpp"


#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <deque>

#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "gateway/acceptor.hpp"
#include "gateway/authorizer.hpp"
#include "gateway/exec_bridge.hpp"
#include "gateway/proxy_rules.hpp"

namespace cg::gateway {
using namespace cg::net;
using Response = http::response<http::string_body>;

namespace {

std::string zero_or_time(const std::optional<SysTime>& t) {
  return t ? format_rfc3339_nano(*t) : "0001-01-01T00:00:00Z";
}

nlohmann::json plane_status_json(const std::string& type, const std::string& id, const session::SessionReport& r) {
  return {{"planeType", type}, {"planeID", id}, {"connected", r.connected_agents > 0},
          {"connectedAgents", r.connected_agents}, {"lastSeen", zero_or_time(r.last_seen)}};
}

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(tcp::socket s, std::shared_ptr<asio::ssl::context> ctx, std::shared_ptr<const InternalApiDeps> deps)
      : ctx_(std::move(ctx)), stream_(std::move(s), *ctx_), deps_(std::move(deps)) {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  void run() {
    beast::get_lowest_layer(stream_).expires_after(deps_->handshake_timeout);
    stream_.async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
      if (ec) {
        log::warn("internal API TLS handshake refused", {{"remote", self->remote_}, {"reason", ec.message()}});
        metrics::internal_handshake("rejected");
        return;
      }
      metrics::internal_handshake("accepted");
      self->read_header();
    });
  }

 private:
  void read_header() {
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    // Declared sizes are judged by the validator (in upstream's order); the real bytes are limited
    // when the body is read.
    parser_->body_limit(boost::none);
    beast::get_lowest_layer(stream_).expires_after(deps_->idle_timeout);
    http::async_read_header(stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::header_limit) return self->error(431, "request header fields too large", false);
      if (ec) return;  // caller went away or idle timeout
      self->dispatch();
    });
  }

  void read_body(std::function<void()> then) {
    if (auto cl = parser_->content_length(); cl && *cl > kMaxProxyBody)
      return error(413, "Request body too large: " + std::to_string(*cl) + " bytes (max: " + std::to_string(kMaxProxyBody) + ")", false);
    parser_->body_limit(kMaxProxyBody);
    beast::get_lowest_layer(stream_).expires_after(deps_->read_timeout);
    http::async_read(stream_, buf_, *parser_, [self = shared_from_this(), then = std::move(then)](beast::error_code ec, size_t) {
      if (ec == http::error::body_limit)
        return self->error(413, "Request body too large: more than " + std::to_string(kMaxProxyBody) +
                                    " bytes (max: " + std::to_string(kMaxProxyBody) + ")", false);
      if (ec) return;
      then();
    });
  }

  void dispatch() {
    auto& req = parser_->get();
    auto u = boost::urls::parse_origin_form(req.target());
    if (!u) return error(400, "malformed request target", false);
    path_ = u->path();
    query_ = std::string(u->encoded_query());
    method_ = std::string(req.method_string());
    keep_alive_ = req.keep_alive();
    if (path_.rfind("/api/proxy/", 0) == 0) return proxy();
    if (path_ == "/api/v1/planes/notify") {
      if (method_ != "POST") return method_not_allowed("POST");
      return read_body([self = shared_from_this()] { self->notify(); });
    }
    if (path_ == "/api/v1/planes/status") {
      if (method_ != "GET") return method_not_allowed("GET");
      return all_status();
    }
    if (path_.rfind("/api/v1/planes/", 0) == 0) {
      std::vector<std::string> seg = split_path(path_.substr(std::string("/api/v1/planes/").size()));
      if (seg.size() == 3 && !seg[0].empty() && !seg[1].empty() && seg[2] == "status") {
        if (method_ != "GET") return method_not_allowed("GET");
        std::string ns, name;
        for (auto p : u->params()) {
          if (p.key == "namespace") ns = p.value;
          if (p.key == "name") name = p.value;
        }
        return plane_status(seg[0], seg[1], ns, name);
      }
      if (seg.size() == 3 && !seg[0].empty() && !seg[1].empty() && seg[2] == "reconnect") {
        if (method_ != "POST") return method_not_allowed("POST");
        return reconnect(seg[0], seg[1]);
      }
    }
    if (path_.rfind("/api/exec/", 0) == 0) return exec(*u);
    if (path_.rfind("/api/wirelogs/", 0) == 0) return wirelogs(*u);
    error(404, "404 page not found", true);
  }

  // ---- /api/proxy ------------------------------------------------------------------------
  void proxy() {
    auto& req = parser_->get();
    std::optional<uint64_t> clen;
    if (auto cl = parser_->content_length()) clen = *cl;
    bool upgrade = req.count(http::field::upgrade) > 0 || beast::iequals(req[http::field::connection], "upgrade");
    check_ = check_proxy_request(method_, path_, query_, clen, upgrade);
    auto rid = req["X-Request-ID"];
    gateway_request_id_ = rid.empty() ? "gw-" + random_hex(8) : std::string(rid);
    if (check_.status) {
      log::warn("request validation failed",
                {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
                 {"cr", check_.cr_namespace + "/" + check_.cr_name}, {"target", check_.target}, {"path", check_.path},
                 {"status", check_.status}, {"reason", check_.message}});
      return error(check_.status, check_.message, false);
    }
    if (check_.streaming && !check_.upgrade)
      return read_body([self = shared_from_this()] { self->proxy_stream(); });
    if (check_.streaming) {
      log::info("HTTP upgrade proxy request refused (not supported)",
                {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
                 {"cr", check_.cr_key}, {"path", check_.path}, {"query", query_}});
      return error(501, kStreamingNotSupported, false);
    }
    read_body([self = shared_from_this()] { self->proxy_send(); });
  }

  session::TunnelRequest tunnel_request() {
    auto& req = parser_->get();
    session::TunnelRequest tr;
    tr.target = check_.target;
    tr.method = method_;
    tr.path = check_.path;
    tr.query = query_;
    tr.gateway_request_id = gateway_request_id_;
    for (const auto& f : req) {
      if (f.name() == http::field::host) continue;
      tr.headers.emplace_back(canonical_header_key(f.name_string()), std::string(f.value()));
    }
    tr.body = std::move(req.body());
    return tr;
  }

  void proxy_send() {
    auto tr = tunnel_request();
    started_ = std::chrono::steady_clock::now();
    log::info("HTTP proxy request received",
              {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
               {"cr", check_.cr_key}, {"target", check_.target}, {"path", check_.path}, {"method", method_}});
    waiting_ = true;
    resume_after_watch_ = false;
    beast::get_lowest_layer(stream_).expires_never();
    auto self = shared_from_this();
    auto exec = stream_.get_executor();
    hop_id_ = deps_->tunnel.send(check_.plane_type, check_.plane_id, check_.cr_key, tr, deps_->request_timeout,
                                 [self, exec](session::TunnelReply r) {
                                   asio::post(exec, [self, r = std::move(r)]() mutable { self->proxy_reply(std::move(r)); });
                                 });
    watch_caller();
  }

  // While the agent works, a read on the caller's connection notices when the caller goes away.
  void watch_caller() {
    // Bytes already buffered are a pipelined next request: the caller is there, and a read now would
    // keep that request waiting until the caller sends more (the answer's write completion reads it).
    if (watching_ || !waiting_ || buf_.size() > 0) return;
    watching_ = true;
    stream_.async_read_some(buf_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) {
        if (self->waiting_ && !self->caller_gone_) {
          log::info("caller went away; request cancelled", {{"requestID", self->gateway_request_id_}, {"hopRequestID", self->hop_id_}});
          self->caller_gone_ = true;
          if (self->streaming_) {
            self->stream_done_ = true;
            self->deps_->tunnel.stream_close(self->hop_id_);
            self->close_now();
          } else {
            self->deps_->tunnel.cancel(self->hop_id_);
          }
        }
        return;
      }
      self->buf_.commit(n);  // pipelined bytes: kept for the next request
      if (self->waiting_) {
        self->watch_caller();
      } else if (self->resume_after_watch_) {
        // The answer is written: this read was the last thing the next request waited for. (When the
        // answer is still being written, its completion reads the next request instead.)
        self->resume_after_watch_ = false;
        self->read_header();
      }
    });
  }

  void proxy_reply(session::TunnelReply r) {
    waiting_ = false;
    using O = session::TunnelReply::Outcome;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
    nlohmann::json f = {{"requestID", gateway_request_id_}, {"hopRequestID", r.request_id}, {"planeType", check_.plane_type},
                        {"planeID", check_.plane_id}, {"cr", check_.cr_key}, {"target", check_.target}, {"durationMs", ms}};
    if (!r.connection_id.empty()) f["connectionID"] = r.connection_id;
    const std::string plane = check_.plane_type + "/" + check_.plane_id;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    int code = 502;
    if (r.outcome == O::response) code = r.status_code;
    else if (r.outcome == O::not_authorized) code = 403;
    else if (r.outcome == O::cancelled) code = 499;  // caller went away (nginx's convention)
    else if (r.outcome == O::overloaded) code = 503;
    metrics::tunnel_request(check_.plane_type, code, check_.target, secs);
    switch (r.outcome) {
      case O::response: {
        f["statusCode"] = r.status_code;
        log::info("HTTP proxy request completed", f);
        auto res = std::make_shared<Response>(static_cast<http::status>(r.status_code), 11);
        for (const auto& [k, v] : r.headers) {
          auto fld = http::string_to_field(k);
          if (fld == http::field::content_length || fld == http::field::transfer_encoding || fld == http::field::connection)
            continue;
          res->insert(k, v);
        }
        if (method_ != "HEAD") res->body() = std::move(r.body);
        return write(res, true);
      }
      case O::no_agent:
        f["reason"] = "no agents found";
        log::warn("HTTP tunnel request failed", f);
        return error(502, "proxy request failed: no agents found for plane " + plane, true);
      case O::not_authorized:
        f["reason"] = "no agents authorized for CR";
        log::warn("CR authorization failed", f);
        return error(403, "Forbidden: Agent not authorized for CR " + check_.cr_key, true);
      case O::send_failed:
        f["reason"] = r.agent_error.empty() ? "agent connection is closing" : r.agent_error;
        log::warn("HTTP tunnel request failed", f);
        return error(502, "proxy request failed: " +
                              (r.agent_error.empty() ? "failed to send HTTP tunnel request: agent connection is closing"
                                                     : r.agent_error), true);
      case O::timeout:
        f["reason"] = "timeout";
        log::warn("HTTP tunnel request failed", f);
        return error(502, "proxy request failed: HTTP tunnel request timeout", true);
      case O::connection_closed:
        f["reason"] = "agent connection closed before responding";
        log::warn("HTTP tunnel request failed", f);
        return error(502, "proxy request failed: agent connection closed before responding", true);
      case O::overloaded:
        f["reason"] = r.agent_error;
        log::warn("HTTP tunnel request refused", f);
        return error(503, "proxy request failed: " + r.agent_error, true);
      case O::not_capable:  // not produced for plain requests
      case O::cancelled:
        return;  // the caller is gone
    }
  }

  // ---- streams: watch / logs follow (http mode) and wirelogs (SSE) ------------------------------
  void proxy_stream() {
    session::StreamRequest sr;
    sr.mode = session::StreamRequest::Mode::http;
    sr.kind = "http";
    sr.request = tunnel_request();
    sr.first_timeout = deps_->request_timeout;
    log::info("HTTP stream request received",
              {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
               {"cr", check_.cr_key}, {"target", check_.target}, {"path", check_.path}, {"query", query_}});
    start_stream(std::move(sr), false);
  }

  void wirelogs(const boost::urls::url_view& u) {
    gateway_request_id_ = parser_->get()["X-Request-ID"].empty() ? "gw-" + random_hex(8)
                                                                  : std::string(parser_->get()["X-Request-ID"]);
    std::vector<std::string> seg = split_path(path_.substr(std::string("/api/wirelogs/").size()));
    if (seg.size() != 4 || seg[0].empty() || seg[1].empty() || seg[2].empty() || seg[3].empty())
      return error(400, "invalid path: expected /api/wirelogs/{planeType}/{planeID}/{crNamespace}/{crName}", false);
    if (method_ != "GET") return method_not_allowed("GET");
    std::string environment, ns, project, component;
    for (auto p : u.params()) {
      if (p.key == "environment") environment = p.value;
      else if (p.key == "namespace") ns = p.value;
      else if (p.key == "project") project = p.value;
      else if (p.key == "component") component = p.value;
    }
    if (environment.empty() || ns.empty()) return error(400, "environment and namespace query parameters are required", false);
    check_ = ProxyCheck{};
    check_.plane_type = seg[0];
    check_.plane_id = seg[1];
    check_.cr_key = (seg[2] == "_cluster" ? std::string() : seg[2]) + "/" + seg[3];
    check_.target = "hubble";
    check_.path = "/wirelogs";
    boost::urls::url q;
    q.params().append({"namespace", ns});
    q.params().append({"environment", environment});
    if (!project.empty()) q.params().append({"project", project});
    if (!component.empty()) q.params().append({"component", component});
    session::StreamRequest sr;
    sr.mode = session::StreamRequest::Mode::upgrade;
    sr.kind = "wirelogs";
    sr.request.target = "hubble";
    sr.request.method = "GET";
    sr.request.path = "/wirelogs";
    sr.request.query = std::string(q.encoded_query());
    sr.request.gateway_request_id = gateway_request_id_;
    sr.upgrade_proto = "hubble/v1";
    sr.first_timeout = deps_->request_timeout;
    log::info("wirelogs stream requested", {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type},
                                            {"planeID", check_.plane_id}, {"cr", check_.cr_key}});
    start_stream(std::move(sr), true);
  }

  void exec(const boost::urls::url_view& u) {
    auto& req = parser_->get();
    gateway_request_id_ = req["X-Request-ID"].empty() ? "gw-" + random_hex(8) : std::string(req["X-Request-ID"]);
    std::vector<std::string> seg = split_path(path_.substr(std::string("/api/exec/").size()));
    if (seg.size() != 4 || seg[0].empty() || seg[1].empty() || seg[2].empty() || seg[3].empty())
      return error(400, "invalid path: expected /api/exec/{planeType}/{planeID}/{crNamespace}/{crName}", false);
    std::string pod_ns, pod, container, tty, stdin_;
    std::vector<std::string> command;
    for (auto p : u.params()) {
      if (p.key == "podNamespace") pod_ns = p.value;
      else if (p.key == "podName") pod = p.value;
      else if (p.key == "container") container = p.value;
      else if (p.key == "command") command.push_back(p.value);
      else if (p.key == "tty") tty = p.value;
      else if (p.key == "stdin") stdin_ = p.value;
    }
    if (pod_ns.empty() || pod.empty()) return error(400, "podNamespace and podName query parameters are required", false);
    if (pod_ns.find('/') != std::string::npos || pod.find('/') != std::string::npos || pod_ns == ".." || pod == "..")
      return error(400, "invalid podNamespace or podName", false);
    const std::string cr_key = (seg[2] == "_cluster" ? std::string() : seg[2]) + "/" + seg[3];
    bool plane_has = false;
    if (!deps_->registry.pick(seg[0], seg[1], cr_key, plane_has)) {
      std::string why = plane_has ? "no agents authorized for CR " + cr_key : "no agents found for plane " + seg[0] + "/" + seg[1];
      log::warn("exec refused: no agent", {{"requestID", gateway_request_id_}, {"planeType", seg[0]}, {"planeID", seg[1]},
                                           {"cr", cr_key}, {"reason", why}});
      return error(503, "no agent available: " + why, false);
    }
    if (!websocket::is_upgrade(req)) return error(400, "exec requires a WebSocket upgrade request", false);
    boost::urls::url q;
    q.params().append({"stdout", "true"});
    q.params().append({"stderr", "true"});
    if (!stdin_.empty()) q.params().append({"stdin", stdin_});
    if (!tty.empty()) q.params().append({"tty", tty});
    if (!container.empty()) q.params().append({"container", container});
    for (const auto& c : command) q.params().append({"command", c});
    ExecTarget t;
    t.plane_type = seg[0];
    t.plane_id = seg[1];
    t.cr_key = cr_key;
    t.gateway_request_id = gateway_request_id_;
    t.path = "/api/v1/namespaces/" + pod_ns + "/pods/" + pod + "/exec";
    t.query = std::string(q.encoded_query());
    t.first_timeout = deps_->request_timeout;
    t.write_timeout = deps_->write_timeout;
    beast::get_lowest_layer(stream_).expires_never();
    start_exec_bridge(std::move(stream_), parser_->release(), deps_, deps_->tunnel, std::move(t));
  }

  static std::vector<std::string> split_path(const std::string& rest) {
    std::vector<std::string> seg;
    size_t pos = 0;
    while (true) {
      size_t n = rest.find('/', pos);
      seg.push_back(rest.substr(pos, n == std::string::npos ? std::string::npos : n - pos));
      if (n == std::string::npos) break;
      pos = n + 1;
    }
    return seg;
  }

  void start_stream(session::StreamRequest sr, bool sse) {
    sse_ = sse;
    streaming_ = true;
    waiting_ = true;
    resume_after_watch_ = false;
    started_ = std::chrono::steady_clock::now();
    beast::get_lowest_layer(stream_).expires_never();
    auto self = shared_from_this();
    auto exec = stream_.get_executor();
    hop_id_ = deps_->tunnel.open_stream(check_.plane_type, check_.plane_id, check_.cr_key, std::move(sr),
                                        [self, exec](session::StreamEvent ev) {
                                          asio::post(exec, [self, ev = std::move(ev)]() mutable { self->on_stream_event(std::move(ev)); });
                                        });
    watch_caller();
  }

  nlohmann::json stream_fields() const {
    return {{"requestID", gateway_request_id_}, {"hopRequestID", hop_id_}, {"planeType", check_.plane_type},
            {"planeID", check_.plane_id}, {"cr", check_.cr_key}, {"target", check_.target}};
  }

  void on_stream_event(session::StreamEvent ev) {
    if (caller_gone_ || stream_done_) return;
    using K = session::StreamEvent::Kind;
    using O = session::TunnelReply::Outcome;
    if (ev.kind == K::head) {
      if (sse_) return;  // not sent on upgrade streams
      head_status_ = ev.status_code;
      auto res = std::make_shared<http::response<http::empty_body>>(static_cast<http::status>(ev.status_code), 11);
      for (const auto& [k, v] : ev.headers) {
        auto fld = http::string_to_field(k);
        if (fld == http::field::content_length || fld == http::field::transfer_encoding || fld == http::field::connection)
          continue;
        res->insert(k, v);
      }
      return send_stream_head(res);
    }
    if (ev.kind == K::data) {
      if (sse_ && !head_sent_) {
        head_status_ = 200;
        auto res = std::make_shared<http::response<http::empty_body>>(http::status::ok, 11);
        res->set(http::field::content_type, "text/event-stream");
        res->set(http::field::cache_control, "no-cache, no-transform");
        res->set("X-Accel-Buffering", "no");
        send_stream_head(res);
      }
      if (ev.data.empty()) return;  // the wirelogs sentinel, or an empty chunk
      if (sse_) {
        out_bytes_.push_back(ev.data.size());  // credit accounting is on the agent's bytes
        out_.push_back(sse_event(ev.data));
      } else {
        out_bytes_.push_back(ev.data.size());
        out_.push_back(std::move(ev.data));
      }
      return pump();
    }
    // end
    stream_done_ = true;
    if (head_sent_) {
      end_error_ = ev.error;
      end_pending_ = true;
      return pump();
    }
    waiting_ = false;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
    auto f = stream_fields();
    f["durationMs"] = ms;
    if (!ev.connection_id.empty()) f["connectionID"] = ev.connection_id;
    const std::string plane = check_.plane_type + "/" + check_.plane_id;
    unsigned code = 502;
    std::string msg;
    if (sse_) {
      switch (ev.outcome) {
        case O::no_agent: code = 503; msg = "no agent available: no agents found for plane " + plane; break;
        case O::not_authorized: code = 503; msg = "no agent available: no agents authorized for CR " + check_.cr_key; break;
        case O::timeout: code = 504; msg = "timeout waiting for the agent to start the stream"; break;
        case O::response: msg = "agent rejected stream: " + (ev.error.empty() ? std::string("stream closed") : ev.error); break;
        case O::overloaded: code = 503; msg = "no agent available: " + ev.error; break;
        default: msg = "agent stream failed: " + (ev.error.empty() ? std::string("agent connection closed") : ev.error); break;
      }
    } else {
      switch (ev.outcome) {
        case O::no_agent: msg = "proxy request failed: no agents found for plane " + plane; break;
        case O::not_authorized: code = 403; msg = "Forbidden: Agent not authorized for CR " + check_.cr_key; break;
        case O::not_capable: code = 501; msg = kStreamingNotSupported; break;
        case O::overloaded: code = 503; msg = "proxy request failed: " + ev.error; break;
        case O::timeout: msg = "proxy request failed: HTTP tunnel request timeout"; break;
        case O::connection_closed: msg = "proxy request failed: agent connection closed before responding"; break;
        default:
          msg = "proxy request failed: " + (ev.error.empty() ? std::string("agent closed the stream before responding") : ev.error);
          break;
      }
    }
    f["statusCode"] = code;
    f["reason"] = msg;
    metrics::tunnel_request(check_.plane_type, static_cast<int>(code), check_.target,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    log::warn(sse_ ? "wirelogs stream failed" : "HTTP stream request failed", f);
    error(code, msg, true);
  }

  static std::string sse_event(const std::string& payload) {
    std::string out;
    size_t pos = 0;
    std::string_view p = payload;
    if (!p.empty() && p.back() == '\n') p.remove_suffix(1);
    while (true) {
      size_t n = p.find('\n', pos);
      std::string_view line = p.substr(pos, n == std::string_view::npos ? std::string_view::npos : n - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      out += "data: ";
      out += line;
      out += '\n';
      if (n == std::string_view::npos) break;
      pos = n + 1;
    }
    out += '\n';
    return out;
  }

  void send_stream_head(std::shared_ptr<http::response<http::empty_body>> res) {
    head_sent_ = true;
    res->set(http::field::server, "cluster-gateway");
    res->keep_alive(false);  // a stream ends the connection: simpler for callers and proxies alike
    res->chunked(true);
    head_ = res;
    head_sr_.emplace(*head_);
    writing_ = true;
    beast::get_lowest_layer(stream_).expires_after(deps_->write_timeout);
    http::async_write_header(stream_, *head_sr_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      beast::get_lowest_layer(self->stream_).expires_never();
      if (ec) return self->stream_caller_gone("writing the response head failed: " + ec.message());
      log::info("stream started", [&] { auto f = self->stream_fields(); f["statusCode"] = self->head_status_; return f; }());
      self->pump();
    });
  }

  void pump() {
    if (writing_ || caller_gone_ || !head_sent_) return;
    if (!out_.empty()) {
      writing_ = true;
      cur_ = std::move(out_.front());
      cur_bytes_ = out_bytes_.front();
      out_.pop_front();
      out_bytes_.pop_front();
      beast::get_lowest_layer(stream_).expires_after(deps_->write_timeout);
      asio::async_write(stream_, http::make_chunk(asio::buffer(cur_)), [self = shared_from_this()](beast::error_code ec, size_t) {
        self->writing_ = false;
        beast::get_lowest_layer(self->stream_).expires_never();
        if (ec) return self->stream_caller_gone("write to caller failed: " + ec.message());
        self->deps_->tunnel.stream_consumed(self->hop_id_, self->cur_bytes_);
        self->pump();
      });
      return;
    }
    if (!end_pending_) return;
    end_pending_ = false;
    waiting_ = false;
    auto f = stream_fields();
    f["durationMs"] = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
    metrics::tunnel_request(check_.plane_type, head_status_, check_.target,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    if (!end_error_.empty()) {
      // The head is out: the only way to say "broken" is to end the connection without the last chunk.
      f["reason"] = end_error_;
      log::warn("stream aborted", f);
      return close_now();
    }
    log::info("stream completed", f);
    writing_ = true;
    beast::get_lowest_layer(stream_).expires_after(deps_->write_timeout);
    asio::async_write(stream_, http::make_chunk_last(), [self = shared_from_this()](beast::error_code, size_t) {
      self->writing_ = false;
      // Connection: close was announced. The caller closes; a read still watching for that ends
      // by itself, or by this deadline.
      beast::get_lowest_layer(self->stream_).expires_after(std::chrono::seconds(2));
      if (!self->watching_) self->drain_and_close();
    });
  }

  void stream_caller_gone(const std::string& why) {
    if (caller_gone_) return;
    caller_gone_ = true;
    auto f = stream_fields();
    f["reason"] = why;
    log::info("stream caller went away; stream closed", f);
    if (!stream_done_) {
      stream_done_ = true;
      deps_->tunnel.stream_close(hop_id_);
    }
    close_now();
  }

  // ---- /api/v1/planes ----------------------------------------------------------------------
  void plane_status(const std::string& type, const std::string& id, const std::string& ns, const std::string& name) {
    auto r = name.empty() ? deps_->registry.plane_report(type, id) : deps_->registry.report(type, ns + "/" + name);
    json_reply(200, plane_status_json(type, id, r));
  }

  void all_status() {
    std::map<std::pair<std::string, std::string>, bool> planes;
    for (const auto& s : deps_->registry.all()) planes[{s.handle->plane_type(), s.handle->plane_id()}] = true;
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& [k, _] : planes) arr.push_back(plane_status_json(k.first, k.second, deps_->registry.plane_report(k.first, k.second)));
    json_reply(200, {{"planes", arr}, {"total", arr.size()}});
  }

  size_t disconnect_all(const std::string& type, const std::string& id, const std::string& why) {
    auto sessions = deps_->registry.sessions_of(type, id);
    for (const auto& s : sessions) s.handle->close(1001, why);
    log::info("disconnected all agents for plane", {{"planeType", type}, {"planeID", id}, {"disconnectedAgents", sessions.size()}});
    return sessions.size();
  }

  void reconnect(const std::string& type, const std::string& id) {
    log::info("manual reconnection requested", {{"planeType", type}, {"planeID", id}});
    auto n = disconnect_all(type, id, "reconnect requested");
    json_reply(200, {{"success", true}, {"disconnectedAgents", n}});
  }

  void notify() {
    auto j = nlohmann::json::parse(parser_->get().body(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return error(400, "invalid payload: body is not a JSON object", true);
    auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
    std::string type = str("planeType"), id = str("planeID"), event = str("event"), ns = str("namespace"), name = str("name");
    if (type.empty() || id.empty() || event.empty()) return error(400, "missing required fields: planeType, planeID, event", true);
    log::info("received plane notification", {{"planeType", type}, {"planeID", id}, {"event", event}, {"cr", ns + "/" + name}});
    if (event == "deleted") {
      auto n = disconnect_all(type, id, "plane CR deleted");
      return json_reply(200, {{"success", true}, {"action", "disconnect"}, {"disconnectedAgents", n}});
    }
    if (event != "created" && event != "updated") return error(400, "unknown event type: " + event, true);
    // The gateway follows CRs itself; a notification re-verifies the plane's live sessions now.
    bool found = false, has_ca = false;
    for (const auto& a : deps_->index.anchors(type, id))
      if (a.key == ns + "/" + name) {
        found = true;
        has_ca = a.store != nullptr;
      }
    if (!found) return error(503, "CR " + ns + "/" + name + " not found", true);
    if (!has_ca) return error(503, "CR " + ns + "/" + name + " has no usable CA configured", true);
    auto res = reverify_plane(deps_->index, deps_->registry, type, id);
    json_reply(200, {{"success", true}, {"action", "revalidate"}, {"authorizationsGranted", res.granted},
                     {"authorizationsRevoked", res.revoked}});
  }

  // ---- responses ---------------------------------------------------------------------------
  void method_not_allowed(const char* allow) {
    auto res = std::make_shared<Response>(http::status::method_not_allowed, 11);
    res->set(http::field::allow, allow);
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    res->set("X-Content-Type-Options", "nosniff");
    res->body() = "Method Not Allowed\n";
    write(res, false);
  }

  void error(unsigned status, const std::string& msg, bool body_consumed) {
    auto res = std::make_shared<Response>(static_cast<http::status>(status), 11);
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    res->set("X-Content-Type-Options", "nosniff");
    res->body() = msg + "\n";
    write(res, body_consumed);
  }

  void json_reply(unsigned status, const nlohmann::json& j) {
    auto res = std::make_shared<Response>(static_cast<http::status>(status), 11);
    res->set(http::field::content_type, "application/json");
    res->body() = j.dump() + "\n";
    write(res, true);
  }

  void write(std::shared_ptr<Response> res, bool can_keep_alive) {
    if (caller_gone_) return;
    bool keep = can_keep_alive && keep_alive_ && parser_ && parser_->is_done();
    res->set(http::field::server, "cluster-gateway");
    res->keep_alive(keep);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(deps_->write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep](beast::error_code ec, size_t) {
      if (ec) return;
      if (!keep) return self->drain_and_close();
      if (self->watching_) self->resume_after_watch_ = true;  // continue when the watch read completes
      else self->read_header();
    });
  }

  // After an early answer (the request body was not read), read and discard what the caller is
  // still sending for a short while, so that closing does not reset the connection before the
  // caller has read the answer.
  void drain_and_close() {
    if (drained_ == 0) beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
    if (drained_ > (32u << 20)) return close_now();
    scratch_.resize(64 * 1024);
    stream_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->close_now();
      self->drained_ += n;
      self->drain_and_close();
    });
  }
  void close_now() {
    beast::error_code ig;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ig);
    beast::get_lowest_layer(stream_).socket().close(ig);
  }

  std::string scratch_;
  size_t drained_ = 0;
  std::shared_ptr<asio::ssl::context> ctx_;  // the context this connection started with
  TlsStream stream_;
  std::shared_ptr<const InternalApiDeps> deps_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_, path_, query_, method_, gateway_request_id_, hop_id_;
  ProxyCheck check_;
  bool keep_alive_ = false, waiting_ = false, watching_ = false, resume_after_watch_ = false, caller_gone_ = false;
  // Streams.
  bool streaming_ = false, sse_ = false, stream_done_ = false, head_sent_ = false, writing_ = false, end_pending_ = false;
  int head_status_ = 0;
  std::string end_error_, cur_;
  size_t cur_bytes_ = 0;
  std::deque<std::string> out_;
  std::deque<size_t> out_bytes_;
  std::shared_ptr<http::response<http::empty_body>> head_;
  std::optional<http::response_serializer<http::empty_body>> head_sr_;
  std::chrono::steady_clock::time_point started_{};
};

}  // namespace

struct InternalApi::Impl {
  Impl(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl_ctx, const std::string& bind, uint16_t port,
       InternalApiDeps d)
      : ssl(std::move(ssl_ctx)),
        deps(std::make_shared<const InternalApiDeps>(std::move(d))),
        acceptor(ioc, bind, port, "internal", [this](tcp::socket s) {
          std::make_shared<Conn>(std::move(s), ssl.get(), deps)->run();
        }) {}
  TlsContextSlot ssl;
  std::shared_ptr<const InternalApiDeps> deps;
  Acceptor acceptor;
};

InternalApi::InternalApi(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> ssl, const std::string& bind,
                         uint16_t port, InternalApiDeps deps)
    : impl_(std::make_shared<Impl>(ioc, std::move(ssl), bind, port, std::move(deps))) {}
InternalApi::~InternalApi() { stop(); }
uint16_t InternalApi::port() const { return impl_->acceptor.port(); }
void InternalApi::start() { impl_->acceptor.start(); }
void InternalApi::stop() { impl_->acceptor.stop(); }
void InternalApi::set_ssl_context(std::shared_ptr<asio::ssl::context> ctx) { impl_->ssl.set(std::move(ctx)); }

}  // namespace cg::gateway
