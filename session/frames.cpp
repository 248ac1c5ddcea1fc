#include "session/frames.hpp"

#include "common/json_lift.hpp"

namespace cg::session {

AgentFrame classify_agent_frame(std::string_view text) { return classify_agent_frame(text, kLiftStringsFrom); }

AgentFrame classify_agent_frame(std::string_view text, size_t lift_from) {
  AgentFrame f;
  // Long base64 bodies skip the JSON lexer (one memcpy each instead of a character at a time).
  LiftedJson lifted;
  const bool lift = lift_long_strings(text, lift_from, lifted);
  if (lift) text = lifted.rest;
  int depth = 0;
  bool too_deep = false;
  auto cb = [&](int d, nlohmann::json::parse_event_t ev, nlohmann::json&) {
    (void)ev;
    depth = d;
    if (d > 64) too_deep = true;
    return !too_deep;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const std::exception& e) {
    f.error = too_deep ? "JSON nested deeper than 64 levels" : std::string("invalid JSON: ") + e.what();
    return f;
  }
  if (too_deep) {
    f.error = "JSON nested deeper than 64 levels";
    return f;
  }
  if (!j.is_object()) {
    f.error = "frame is not a JSON object";
    return f;
  }
  if (lift) restore_lifted(j, lifted);
  auto rid = j.find("requestID");
  if (rid != j.end() && rid->is_string()) f.request_id = rid->get<std::string>();
  if (!f.request_id.empty()) {
    auto data = j.find("data");
    auto close = j.find("isClose");
    bool has_data = data != j.end() && !data->is_null();
    bool is_close = close != j.end() && close->is_boolean() && close->get<bool>();
    if (has_data || is_close) {
      f.kind = FrameKind::stream_chunk;
      f.body = std::move(j);
      return f;
    }
  }
  if (f.request_id.empty()) {
    f.error = "frame has no requestID";
    return f;
  }
  f.kind = FrameKind::response;
  f.body = std::move(j);
  return f;
}

}  // namespace cg::session
