// The simulator's built-in backend: answers HTTP tunnel requests as a tiny Kubernetes API would.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace cg::sim {

// Builds the HTTPTunnelResponse (upstream §4.2) for one HTTPTunnelRequest.
nlohmann::json respond(const nlohmann::json& request, const std::string& plane_id, int agent_index);

// What the agent does with one text frame from the gateway: parse it (long base64 strings past the
// JSON lexer, as Go's decoder is fast on them) and serialize its answer (the body appended as is).
// parse_frame gives a discarded value for bad JSON.
nlohmann::json parse_frame(std::string_view text);
std::string dump_reply(nlohmann::json reply);

// Rude replies (--reply-fault): what the agent breaks in an HTTPTunnelResponse it would send.
enum class ReplyFault {
  none,
  bad_base64,  // "body" is not base64
  wrong_types,  // "statusCode" is a string ("200"), as a careless agent in another language might send
  body_on_204,  // status 204 with a body
  crlf_header,  // a header value with CR/LF (response splitting: "a\r\nSet-Cookie: evil=1")
  crlf_header_name,  // a header name with CR/LF
};
// Parses the flag value (bad-base64, wrong-types, body-on-204, crlf-header, crlf-header-name, none).
bool parse_reply_fault(const std::string& s, ReplyFault& out);
// Breaks `reply` (an HTTPTunnelResponse built by respond()) as `fault` says.
void apply_fault(nlohmann::json& reply, ReplyFault fault);

std::string b64encode(const std::string& in);
std::string b64decode(const std::string& in);

}  // namespace cg::sim
