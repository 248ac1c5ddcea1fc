#include "gateway/internal_api.hpp"


#include <boost/url/parse.hpp>

#include "common/ids.hpp"
#include "common/log.hpp"
#include "common/metrics.hpp"
#include "common/net.hpp"
#include "gateway/acceptor.hpp"
#include "gateway/authorizer.hpp"
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
        return;
      }
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
      std::vector<std::string> seg;
      std::string rest = path_.substr(std::string("/api/v1/planes/").size());
      size_t pos = 0;
      while (true) {
        size_t n = rest.find('/', pos);
        seg.push_back(rest.substr(pos, n == std::string::npos ? std::string::npos : n - pos));
        if (n == std::string::npos) break;
        pos = n + 1;
      }
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
    if (path_.rfind("/api/exec/", 0) == 0 || path_.rfind("/api/wirelogs/", 0) == 0)
      return error(501, "exec and wirelogs streams are not supported by this gateway yet", false);
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
    if (check_.streaming) {
      log::info("HTTP streaming proxy request refused (not supported)",
                {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
                 {"cr", check_.cr_key}, {"path", check_.path}, {"query", query_}});
      return error(501, kStreamingNotSupported, false);
    }
    read_body([self = shared_from_this()] { self->proxy_send(); });
  }

  void proxy_send() {
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
    started_ = std::chrono::steady_clock::now();
    log::info("HTTP proxy request received",
              {{"requestID", gateway_request_id_}, {"planeType", check_.plane_type}, {"planeID", check_.plane_id},
               {"cr", check_.cr_key}, {"target", check_.target}, {"path", check_.path}, {"method", method_}});
    waiting_ = true;
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
    if (watching_ || !waiting_) return;
    watching_ = true;
    stream_.async_read_some(buf_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) {
        if (self->waiting_) {
          log::info("caller went away; request cancelled", {{"requestID", self->gateway_request_id_}, {"hopRequestID", self->hop_id_}});
          self->caller_gone_ = true;
          self->deps_->tunnel.cancel(self->hop_id_);
        }
        return;
      }
      self->buf_.commit(n);  // pipelined bytes: kept for the next request
      if (self->waiting_) self->watch_caller();
      else if (self->resume_after_watch_) self->read_header();
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
      case O::cancelled:
        return;  // the caller is gone
    }
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
