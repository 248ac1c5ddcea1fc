// What the caller of /api/proxy receives from an agent's answer: the HTTP response built from a
// TunnelReply or a stream head. Agent data is untrusted; decode_tunnel_response() has already
// refused what cannot be HTTP (1xx, bodies on 204/304, bad header names, CR/LF/NUL in values, oversized
// heads), and here framing and hop-by-hop headers (RFC 9110 §7.6.1) never pass from the agent to the
// caller: the gateway frames the response itself. Include from .cpp files only (Beast types).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/net.hpp"
#include "session/tunnel.hpp"

namespace cg::gateway {

using ProxyResponse = net::http::response<net::http::string_body>;
using StreamHead = net::http::response<net::http::empty_body>;

// The complete answer to a proxied request (no body for HEAD, 204 and 304). Never throws for a reply
// that decode_tunnel_response() accepted.
std::shared_ptr<ProxyResponse> make_proxy_response(session::TunnelReply&& reply, bool head_request);

// The head of a streamed answer (chunked; the caller's connection closes at its end).
std::shared_ptr<StreamHead> make_stream_head(int status, const std::vector<std::pair<std::string, std::string>>& headers);

// What a caller hears when a request or stream ends without the agent's answer: one table for the
// three surfaces of the internal API (upstream's texts). `status` 0: no answer (the caller is gone).
enum class Surface { proxy, http_stream, sse };
struct FailureAnswer {
  unsigned status = 0;
  std::string message;  // the plain-text body, without its newline
  const char* log_msg = "";
  std::string reason;  // the log line's reason field
};
FailureAnswer failure_answer(Surface surface, session::TunnelReply::Outcome outcome, const std::string& agent_error,
                             const std::string& plane, const std::string& cr_key);

// A plain-text error as every listener answers it: "<message>\n", text/plain; charset=utf-8, nosniff.
std::shared_ptr<ProxyResponse> make_text_error(unsigned status, std::string_view message);

}  // namespace cg::gateway
