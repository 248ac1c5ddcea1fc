// Large JSON string members without the JSON library's per-character work.
//
// Tunnel frames carry bodies as base64 strings (upstream's HTTPTunnelRequest/Response "body", stream
// chunks' "data"): a 1 MiB body is a 1.4 MB string that nlohmann's lexer copies one character at a
// time. lift_long_strings() finds the top-level members whose string value is long and needs no
// unescaping (printable ASCII without '"' or '\'), and hands back the frame without those values
// (each replaced by "") plus views of the raw values, so that only the small rest goes through the
// JSON parser and each long value is one memcpy. The result is exactly what a full parse gives.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cg {

struct LiftedJson {
  std::string rest;  // the text with lifted values as ""
  std::vector<std::pair<std::string, std::string_view>> members;  // key → raw value (views into the input)
};

// True when at least one member was lifted (then `out` is filled); false when the text is not a JSON
// object this scanner can take apart exactly (malformed, escaped keys, a key that occurs twice, no
// long plain string) — parse the original text then.
bool lift_long_strings(std::string_view text, size_t min_len, LiftedJson& out);

// Puts the lifted values back into the object parsed from `rest`.
void restore_lifted(nlohmann::json& obj, const LiftedJson& lifted);

// Serializes `obj` with one more string member `key` whose value `raw` needs no escaping (base64):
// the value is appended as is instead of going through the serializer's escaping.
std::string dump_with_plain_member(const nlohmann::json& obj, std::string_view key, std::string_view raw);

}  // namespace cg
