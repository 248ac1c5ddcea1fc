#include "streams.hpp"

#include <boost/url/parse.hpp>
#include <regex>

#include "common/log.hpp"
#include "responder.hpp"

namespace cg::sim {
using namespace cg::net;

struct SimStreams::Stream {
  enum class Kind { watch, logs, exec, hubble } kind;
  std::string id;
  bool flow_controlled = false;
  int64_t credit = 0;
  bool flood = false;
  bool waiting_timer = false;
  bool multiline = false;
  uint64_t seq = 0;
  std::string ns, pod;
  std::unique_ptr<asio::steady_timer> timer;
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

namespace {
std::map<std::string, std::vector<std::string>> query_params(const std::string& q) {
  std::map<std::string, std::vector<std::string>> out;
  const std::string target = "/?" + q;  // the view below points into it
  auto u = boost::urls::parse_uri_reference(target);
  if (!u) return out;
  for (auto p : u->params()) out[p.key].push_back(p.value);
  return out;
}
std::string first(const std::map<std::string, std::vector<std::string>>& q, const std::string& k) {
  auto it = q.find(k);
  return it == q.end() || it->second.empty() ? std::string() : it->second.front();
}
}  // namespace

SimStreams::SimStreams(asio::any_io_executor ex, StreamOptions opts, std::string plane_id, int agent_index, Send send)
    : ex_(std::move(ex)), opts_(opts), plane_id_(std::move(plane_id)), index_(agent_index), send_(std::move(send)) {}
SimStreams::~SimStreams() { reset(); }

void SimStreams::reset() {
  for (auto& [_, s] : streams_)
    if (s->timer) s->timer->cancel();
  streams_.clear();
}

bool SimStreams::handle(const nlohmann::json& j) {
  const std::string rid = j.value("requestID", "");
  if (rid.empty()) return false;
  if (j.contains("credit")) {
    auto it = streams_.find(rid);
    if (it == streams_.end()) return true;
    if (j["credit"].is_number_integer()) it->second->credit += j["credit"].get<int64_t>();
    produce(it->second);
    return true;
  }
  if (j.value("isUpgrade", false)) {
    if (streams_.count(rid)) {
      send_(nlohmann::json({{"requestID", rid}, {"data", b64encode("duplicate stream requestID")}, {"isClose", true}}).dump());
      return true;
    }
    if (j.value("target", "") == "hubble") start_hubble(j);
    else start_exec(j);
    return true;
  }
  if ((j.contains("data") && !j["data"].is_null()) || j.value("isClose", false)) {
    auto it = streams_.find(rid);
    if (it == streams_.end()) return true;  // unknown stream: ignore
    auto s = it->second;
    if (j.value("isClose", false)) {
      log::debug("stream closed by the gateway", {{"requestID", rid}});
      if (s->timer) s->timer->cancel();
      streams_.erase(it);
      return true;
    }
    on_stdin(s, j["data"].is_string() ? b64decode(j["data"].get<std::string>()) : std::string());
    return true;
  }
  if (j.value("stream", false)) {
    start_http(j);
    return true;
  }
  return false;
}

void SimStreams::writable() {
  std::vector<std::shared_ptr<Stream>> all;
  for (auto& [_, s] : streams_) all.push_back(s);
  for (auto& s : all)
    if (!s->waiting_timer) produce(s);
}

void SimStreams::start_http(const nlohmann::json& req) {
  static const std::regex pods_re("^/api/v1/namespaces/([a-z0-9-]+)/pods/?$");
  static const std::regex log_re("^/api/v1/namespaces/([a-z0-9-]+)/pods/([a-z0-9.-]+)/log$");
  const std::string id = req.value("requestID", "");
  const std::string path = req.value("path", "");
  const std::string query = req.value("query", "");
  auto q = query_params(query);
  std::smatch m;
  auto s = std::make_shared<Stream>();
  s->id = id;
  s->flow_controlled = req.contains("window");
  s->credit = req.value("window", int64_t{0});
  if (req.value("method", "GET") == "GET" && std::regex_match(path, m, pods_re) && first(q, "watch") == "true") {
    s->kind = Stream::Kind::watch;
    s->ns = m[1].str();
    auto ts = first(q, "timeoutSeconds");
    if (!ts.empty()) s->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(std::atoi(ts.c_str()));
    send_(nlohmann::json({{"requestID", id},
                          {"statusCode", 200},
                          {"stream", true},
                          {"headers", {{"Content-Type", {"application/json"}}, {"X-Agent-Index", {std::to_string(index_)}}}}})
              .dump());
  } else if (req.value("method", "GET") == "GET" && std::regex_match(path, m, log_re) && first(q, "follow") == "true") {
    s->kind = Stream::Kind::logs;
    s->ns = m[1].str();
    s->pod = m[2].str();
    s->flood = first(q, "container") == "flood";
    send_(nlohmann::json({{"requestID", id},
                          {"statusCode", 200},
                          {"stream", true},
                          {"headers", {{"Content-Type", {"text/plain"}}, {"X-Agent-Index", {std::to_string(index_)}}}}})
              .dump());
  } else {
    // Not a stream this backend can serve: a complete answer (404 and friends), as a real API server would.
    send_(respond(req, plane_id_, index_).dump());
    return;
  }
  streams_[id] = s;
  if (s->flow_controlled && opts_.overrun > 0) {
    // A rude agent: one chunk beyond the window, before any credit could have arrived.
    const size_t n = static_cast<size_t>(std::max<int64_t>(s->credit, 0)) + opts_.overrun;
    std::string data;
    data.reserve(n + 80);
    while (data.size() < n) data += "overrun line " + std::to_string(data.size()) + " " + std::string(48, 'o') + "\n";
    data.resize(n);
    log::info("sending more than the stream window", {{"requestID", id}, {"window", s->credit}, {"bytes", n}});
    emit(s, data);
  }
  produce(s);
}

void SimStreams::start_exec(const nlohmann::json& init) {
  static const std::regex exec_re("^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$");
  const std::string id = init.value("requestID", "");
  std::smatch m;
  const std::string path = init.value("path", "");
  if (!std::regex_match(path, m, exec_re)) {
    send_(nlohmann::json({{"requestID", id}, {"data", b64encode("invalid exec path: " + path)}, {"isClose", true}}).dump());
    return;
  }
  auto q = query_params(init.value("query", ""));
  std::vector<std::string> cmd = q.count("command") ? q["command"] : std::vector<std::string>{"/bin/sh"};
  auto s = std::make_shared<Stream>();
  s->kind = Stream::Kind::exec;
  s->id = id;
  s->ns = m[1].str();
  s->pod = m[2].str();
  s->flow_controlled = init.contains("window");
  s->credit = init.value("window", int64_t{0});
  streams_[id] = s;
  // Upstream's agent: a "started" chunk (0x01, streamId 1) as soon as the exec runs.
  emit(s, std::string(1, '\x01'), 1);
  if (cmd[0] == "echo") {
    std::string out;
    for (size_t i = 1; i < cmd.size(); ++i) out += (i > 1 ? " " : "") + cmd[i];
    emit(s, "\x01" + out + "\n", 1);
    finish(id, "");
  } else if (cmd[0] == "exit") {
    finish(id, "command terminated with non-zero exit code: " + (cmd.size() > 1 ? cmd[1] : std::string("1")));
  }
  // Anything else behaves like `cat`: stdin comes back on stdout until stdin ends.
}

void SimStreams::on_stdin(const std::shared_ptr<Stream>& s, const std::string& data) {
  if (s->kind != Stream::Kind::exec || data.empty()) return;
  const char ch = data[0];
  if (ch == 0) {
    if (data.size() == 1) return finish(s->id, "");  // stdin EOF ends the command
    emit(s, "\x01" + data.substr(1), 1);
  } else if (ch == 3) {
    auto r = nlohmann::json::parse(data.substr(1), nullptr, false);
    if (r.is_object())
      emit(s, "\x02resized to " + std::to_string(r.value("width", 0)) + "x" + std::to_string(r.value("height", 0)) + "\n", 2);
  }
}

void SimStreams::start_hubble(const nlohmann::json& init) {
  const std::string id = init.value("requestID", "");
  auto q = query_params(init.value("query", ""));
  const std::string ns = first(q, "namespace"), env = first(q, "environment");
  if (ns.empty() || env.empty()) {
    send_(nlohmann::json({{"requestID", id}, {"data", b64encode("namespace and environment are required")}, {"isClose", true}})
              .dump());
    return;
  }
  if (ns == "reject") {
    send_(nlohmann::json({{"requestID", id}, {"data", b64encode("hubble relay unavailable")}, {"isClose", true}}).dump());
    return;
  }
  auto s = std::make_shared<Stream>();
  s->kind = Stream::Kind::hubble;
  s->id = id;
  s->ns = ns;
  s->multiline = first(q, "project") == "multiline";
  s->flow_controlled = init.contains("window");
  s->credit = init.value("window", int64_t{0});
  streams_[id] = s;
  // Upstream's agent: an empty sentinel chunk once the relay stream is open.
  send_(nlohmann::json({{"requestID", id}, {"data", ""}}).dump());
  produce(s);
}

void SimStreams::emit(const std::shared_ptr<Stream>& s, const std::string& data, int stream_id) {
  nlohmann::json j = {{"requestID", s->id}, {"data", b64encode(data)}};
  if (stream_id) j["streamId"] = stream_id;
  if (s->flow_controlled) s->credit -= static_cast<int64_t>(data.size());
  send_(j.dump());
}

void SimStreams::finish(const std::string& id, const std::string& error) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  if (it->second->timer) it->second->timer->cancel();
  streams_.erase(it);
  nlohmann::json j = {{"requestID", id}, {"isClose", true}};
  j["data"] = error.empty() ? nlohmann::json(nullptr) : nlohmann::json(b64encode(error));
  send_(j.dump());
}

void SimStreams::produce(const std::shared_ptr<Stream>& s) {
  if (!streams_.count(s->id) || s->kind == Stream::Kind::exec || s->waiting_timer) return;
  if (s->deadline && std::chrono::steady_clock::now() >= *s->deadline) return finish(s->id, "");
  while (true) {
    if (queued_bytes && *queued_bytes > (1u << 20)) return;  // writable() resumes
    std::string data;
    if (s->kind == Stream::Kind::logs && s->flood) {
      data.reserve(opts_.flood_chunk);
      while (data.size() + 80 < opts_.flood_chunk)
        data += "flood line " + std::to_string(++s->seq) + " from " + s->pod + " " + std::string(40, 'x') + "\n";
    } else if (s->kind == Stream::Kind::logs) {
      data = "log line " + std::to_string(++s->seq) + " from " + s->pod + " on " + plane_id_ + "\n";
    } else if (s->kind == Stream::Kind::watch) {
      ++s->seq;
      const int pod = static_cast<int>((s->seq - 1) % 2);
      nlohmann::json ev = {{"type", s->seq <= 2 ? "ADDED" : "MODIFIED"},
                           {"object",
                            {{"apiVersion", "v1"},
                             {"kind", "Pod"},
                             {"metadata",
                              {{"name", plane_id_ + "-worker-" + std::to_string(pod)},
                               {"namespace", s->ns},
                               {"resourceVersion", std::to_string(s->seq)}}},
                             {"status", {{"phase", "Running"}}}}}};
      data = ev.dump() + "\n";
    } else {
      ++s->seq;
      nlohmann::json flow = {{"flow",
                              {{"time", format_rfc3339_nano(std::chrono::system_clock::now())},
                               {"verdict", "FORWARDED"},
                               {"seq", s->seq},
                               {"source", {{"namespace", s->ns}, {"pod_name", plane_id_ + "-worker-0"}}},
                               {"destination", {{"namespace", s->ns}, {"pod_name", plane_id_ + "-worker-1"}}}}}};
      data = s->multiline ? flow.dump(2) : flow.dump();
    }
    if (s->flow_controlled && s->credit < static_cast<int64_t>(data.size())) {
      s->seq--;  // regenerated when credit arrives
      return;
    }
    emit(s, data);
    if (!(s->kind == Stream::Kind::logs && s->flood)) break;
  }
  // Paced streams: the next event after the interval (an initial burst for watches: both ADDED).
  if (s->kind == Stream::Kind::watch && s->seq < 2) return produce(s);
  if (!s->timer) s->timer = std::make_unique<asio::steady_timer>(ex_);
  s->waiting_timer = true;
  s->timer->expires_after(opts_.interval);
  std::weak_ptr<Stream> w = s;
  s->timer->async_wait([this, w](beast::error_code ec) {
    auto st = w.lock();
    if (ec || !st) return;
    st->waiting_timer = false;
    produce(st);
  });
}

}  // namespace cg::sim
