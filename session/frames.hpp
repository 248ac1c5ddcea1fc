// Classification of the text frames an agent sends (upstream §4.3, replicated exactly).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace cg::session {

enum class FrameKind { stream_chunk, response, invalid };

struct AgentFrame {
  FrameKind kind = FrameKind::invalid;
  std::string request_id;
  nlohmann::json body;  // the parsed object (stream_chunk and response)
  std::string error;    // why the frame is invalid
};

// 1. JSON with a non-empty requestID and (data present and not null, or isClose true) → stream chunk.
// 2. Else a response: bad JSON or empty requestID → invalid; otherwise a response.
// JSON nesting deeper than 64 levels is refused without recursion blow-up.
AgentFrame classify_agent_frame(std::string_view text);
// The same with string members of at least `lift_from` bytes taken past the JSON lexer (see
// common/json_lift.hpp); the result does not depend on it (tests and fuzzing compare).
inline constexpr size_t kLiftStringsFrom = 1024;
AgentFrame classify_agent_frame(std::string_view text, size_t lift_from);

}  // namespace cg::session
