// The text frames an agent sends (upstream §4.3): classification and the members the gateway reads.
//
// Every byte is untrusted. The frame is read with a streaming (SAX) JSON parser that keeps only the
// members the tunnel uses (requestID, statusCode, headers, body, data, isClose, stream, streamId,
// error.message); every other value is checked for syntax and dropped as it is read, so a message
// costs at most its own size in kept strings (body/data stay base64 text until the request id is
// known) plus the bounded header list below, whatever its shape. There is no DOM.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cg::session {

enum class FrameKind { stream_chunk, response, invalid };

// How a member appeared in the frame.
enum class Member : uint8_t { absent, null, value, wrong_type };

// Caps on what an agent's response head may carry (names and values together, and entries).
inline constexpr size_t kMaxAgentHeaderBytes = 64 * 1024;
inline constexpr size_t kMaxAgentHeaderCount = 512;
inline constexpr size_t kMaxAgentHeaderName = 8 * 1024;  // one field name

struct AgentFrame {
  FrameKind kind = FrameKind::invalid;
  std::string request_id;
  std::string error;  // why the frame is invalid

  Member status_code = Member::absent;  // value: an integer (any range; see status_code_value)
  int64_t status_code_value = 0;  // clamped to [-1, 100000] so that range checks stay simple
  Member headers = Member::absent;  // value: an object
  bool header_member_not_array = false;  // some headers member was not an array
  bool headers_over_limit = false;  // over kMaxAgentHeaderBytes / kMaxAgentHeaderCount / kMaxAgentHeaderName
  std::vector<std::pair<std::string, std::string>> header_list;  // string values only, in order
  Member body = Member::absent;  // value: a string (base64, not yet decoded)
  std::string body_b64;
  Member data = Member::absent;  // value: a string (base64, not yet decoded)
  std::string data_b64;
  bool is_close = false;  // "isClose": true
  bool stream = false;  // "stream": true (a stream head)
  int stream_id = 0;  // "streamId" when an integer in int range, else 0
  std::string error_message;  // "error": {"message": "..."} when a string
};

// 1. JSON with a non-empty requestID and (data present and not null, or isClose true) → stream chunk.
// 2. Else a response: bad JSON, not an object, or an empty/missing/non-string requestID → invalid.
// JSON nested deeper than 64 levels is refused without recursion.
AgentFrame classify_agent_frame(std::string_view text);

}  // namespace cg::session
