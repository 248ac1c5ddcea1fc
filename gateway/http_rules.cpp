#include "gateway/http_rules.hpp"

#include <cctype>

#include "common/ids.hpp"

namespace cg::gateway {
using namespace cg::net;

const char* to_string(RequestFault f) {
  switch (f) {
    case RequestFault::malformed: return "malformed";
    case RequestFault::no_host: return "no_host";
    case RequestFault::transfer_encoding: return "transfer_encoding";
    case RequestFault::header_too_large: return "header_too_large";
    case RequestFault::body_too_large: return "body_too_large";
    case RequestFault::target: return "target";
  }
  return "malformed";
}

std::optional<FramingProblem> framing_problem_of(const http::request_header<>& req) {
  const size_t hosts = req.count(http::field::host);
  if (req.version() >= 11 && hosts != 1)
    return FramingProblem{RequestFault::no_host, hosts == 0 ? "missing Host header" : "more than one Host header"};
  const size_t tes = req.count(http::field::transfer_encoding);
  if (tes == 0) return std::nullopt;
  std::string_view te = tes == 1 ? std::string_view(req[http::field::transfer_encoding]) : std::string_view();
  while (!te.empty() && (te.front() == ' ' || te.front() == '\t')) te.remove_prefix(1);
  while (!te.empty() && (te.back() == ' ' || te.back() == '\t')) te.remove_suffix(1);
  if (!beast::iequals(te, "chunked"))
    return FramingProblem{RequestFault::transfer_encoding,
                          "unsupported Transfer-Encoding: only a single \"chunked\" is accepted"};
  if (req.count(http::field::content_length) > 0)
    return FramingProblem{RequestFault::transfer_encoding, "both Transfer-Encoding and Content-Length"};
  return std::nullopt;
}

namespace {
// Go's tokenListContainsValue: comma-separated tokens, trimmed, compared case-insensitively.
bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t c = list.find(',');
    std::string_view t = list.substr(0, c);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (t.size() == token.size()) {
      bool eq = true;
      for (size_t i = 0; i < t.size() && eq; ++i)
        eq = std::tolower(static_cast<unsigned char>(t[i])) == std::tolower(static_cast<unsigned char>(token[i]));
      if (eq) return true;
    }
    if (c == std::string_view::npos) break;
    list.remove_prefix(c + 1);
  }
  return false;
}

bool is_base64_16(std::string_view k) {
  if (k.size() != 24 || k.substr(22) != "==") return false;
  for (size_t i = 0; i < 22; ++i) {
    char c = k[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/')) return false;
  }
  return true;
}

}  // namespace

std::optional<UpgradeRefusal> websocket_upgrade_refusal(const UpgradeHeaders& h) {
  auto bad = [](unsigned status, const char* text) { return UpgradeRefusal{status, text}; };
  if (!has_token(h.connection, "upgrade")) return bad(400, "Bad Request");
  if (!has_token(h.upgrade, "websocket")) return bad(400, "Bad Request");
  if (h.method != "GET") return bad(405, "Method Not Allowed");
  if (!has_token(h.version, "13")) return bad(400, "Bad Request");
  if (!is_base64_16(h.key)) return bad(400, "Bad Request");
  return std::nullopt;
}

std::string gateway_request_id(std::string_view v) {
  bool plain = !v.empty() && v.size() <= 128;
  for (unsigned char c : v) plain = plain && c > 0x20 && c < 0x7f;
  if (plain) return std::string(v);
  return "gw-" + random_hex(8);
}

bool peer_left(const beast::error_code& ec) {
  static const auto& http_category = http::make_error_code(http::error::bad_version).category();
  if (ec.category() != http_category) return true;  // TLS, socket, timeout, eof
  return ec == http::error::end_of_stream || ec == http::error::partial_message;
}

}  // namespace cg::gateway
