// JSON text from peer-supplied data: nlohmann's dump() throws on invalid UTF-8 (type_error 316),
// and any string here may carry a caller's or an agent's bytes. Invalid sequences become U+FFFD.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace cg {
inline std::string to_json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace cg
