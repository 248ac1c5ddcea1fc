#include "responder.hpp"

#include <openssl/evp.h>

#include <regex>

#include "common/json_lift.hpp"

namespace cg::sim {
using cg::dump_with_plain_member;
using cg::lift_long_strings;
using cg::LiftedJson;
using cg::restore_lifted;

std::string b64encode(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string b64decode(const std::string& in) {
  if (in.empty() || in.size() % 4) return {};
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return {};
  size_t pad = (in.back() == '=') + (in.size() > 1 && in[in.size() - 2] == '=');
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

nlohmann::json parse_frame(std::string_view text) {
  LiftedJson lifted;
  if (!lift_long_strings(text, 1024, lifted)) return nlohmann::json::parse(text, nullptr, false);
  auto j = nlohmann::json::parse(lifted.rest, nullptr, false);
  if (j.is_object()) restore_lifted(j, lifted);
  return j;
}

std::string dump_reply(nlohmann::json reply) {
  auto b = reply.find("body");
  if (b == reply.end() || !b->is_string() || b->get_ref<const std::string&>().size() < 1024) return reply.dump();
  std::string body = std::move(b->get_ref<std::string&>());  // base64: nothing to escape
  reply.erase(b);
  return dump_with_plain_member(reply, "body", body);
}

bool parse_reply_fault(const std::string& s, ReplyFault& out) {
  static const std::pair<const char*, ReplyFault> names[] = {{"none", ReplyFault::none},
                                                             {"bad-base64", ReplyFault::bad_base64},
                                                             {"wrong-types", ReplyFault::wrong_types},
                                                             {"body-on-204", ReplyFault::body_on_204},
                                                             {"crlf-header", ReplyFault::crlf_header},
                                                             {"crlf-header-name", ReplyFault::crlf_header_name}};
  for (const auto& [n, f] : names)
    if (s == n) {
      out = f;
      return true;
    }
  return false;
}

void apply_fault(nlohmann::json& reply, ReplyFault fault) {
  switch (fault) {
    case ReplyFault::none: return;
    case ReplyFault::bad_base64: reply["body"] = "!!not base64!!"; return;
    case ReplyFault::wrong_types: reply["statusCode"] = std::to_string(reply.value("statusCode", 200)); return;
    case ReplyFault::body_on_204:
      reply["statusCode"] = 204;
      if (!reply.contains("body") || !reply["body"].is_string() || reply["body"].get<std::string>().empty())
        reply["body"] = b64encode("a body on 204");
      return;
    case ReplyFault::crlf_header: reply["headers"]["X-Sim"] = nlohmann::json::array({"a\r\nSet-Cookie: evil=1"}); return;
    case ReplyFault::crlf_header_name: reply["headers"]["X-Sim\r\nSet-Cookie"] = nlohmann::json::array({"evil=1"}); return;
  }
}

namespace {
nlohmann::json status_body(int code, const std::string& reason, const std::string& msg) {
  return {{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
          {"status", "Failure"}, {"message", msg},     {"reason", reason},
          {"code", code}};
}
}  // namespace

nlohmann::json respond(const nlohmann::json& req, const std::string& plane_id, int agent_index) {
  nlohmann::json res = {{"requestID", req.value("requestID", "")}};
  const std::string target = req.value("target", "");
  const std::string method = req.value("method", "GET");
  const std::string path = req.value("path", "/");
  if (target != "k8s") {
    res["statusCode"] = 404;
    res["error"] = {{"code", 404}, {"message", "unknown target: " + target}};
    return res;
  }
  int code = 200;
  nlohmann::json body;
  static const std::regex pods_re("^/api/v1/namespaces/([a-z0-9-]+)/pods/?$");
  static const std::regex pod_re("^/api/v1/namespaces/([a-z0-9-]+)/pods/([a-z0-9.-]+)$");
  static const std::regex list_re("^/api/v1/(namespaces/[a-z0-9-]+/)?(secrets|serviceaccounts)/?$");
  std::smatch m;
  if (path == "/version") {
    body = {{"major", "1"}, {"minor", "31"}, {"gitVersion", "v1.31.0-agent-sim"}, {"platform", "linux/amd64"}};
  } else if (path == "/healthz" || path == "/readyz") {
    res["statusCode"] = 200;
    res["headers"] = {{"Content-Type", {"text/plain; charset=utf-8"}}};
    res["body"] = b64encode("ok");
    return res;
  } else if (method == "GET" && std::regex_match(path, m, pods_re)) {
    nlohmann::json items = nlohmann::json::array();
    for (int i = 0; i < 2; ++i) {
      items.push_back({{"apiVersion", "v1"},
                       {"kind", "Pod"},
                       {"metadata", {{"name", plane_id + "-worker-" + std::to_string(i)}, {"namespace", m[1].str()}}},
                       {"spec", {{"nodeName", "sim-node-" + std::to_string(agent_index)}}},
                       {"status", {{"phase", "Running"}}}});
    }
    body = {{"apiVersion", "v1"}, {"kind", "PodList"}, {"metadata", {{"resourceVersion", "1"}}}, {"items", items}};
  } else if (method == "GET" && std::regex_match(path, m, pod_re)) {
    body = {{"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", m[2].str()}, {"namespace", m[1].str()}}},
            {"status", {{"phase", "Running"}}}};
  } else if (method == "GET" && std::regex_match(path, m, list_re)) {
    // Empty lists (tests of the proxy deny-list and policy: the request reached the agent).
    body = {{"apiVersion", "v1"},
            {"kind", m[2].str() == "secrets" ? "SecretList" : "ServiceAccountList"},
            {"metadata", {{"resourceVersion", "1"}}},
            {"items", nlohmann::json::array()}};
  } else if (method == "POST" || method == "PUT" || method == "PATCH") {
    // Echo: the decoded request body comes back, so tests can check body round trips.
    std::string in = req.contains("body") && req["body"].is_string() ? b64decode(req["body"].get<std::string>()) : "";
    res["statusCode"] = method == "POST" ? 201 : 200;
    res["headers"] = {{"Content-Type", {"application/json"}}, {"X-Agent-Index", {std::to_string(agent_index)}}};
    if (!in.empty()) res["body"] = b64encode(in);
    return res;
  } else {
    code = 404;
    body = status_body(404, "NotFound", "the server could not find the requested resource");
  }
  res["statusCode"] = code;
  res["headers"] = {{"Content-Type", {"application/json"}}, {"X-Agent-Index", {std::to_string(agent_index)}}};
  res["body"] = b64encode(body.dump());
  return res;
}

}  // namespace cg::sim
