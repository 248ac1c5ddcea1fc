// Standard base64 with padding (Go's []byte JSON encoding).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace cg {
std::string base64_encode(std::string_view in);
// Appends the encoding of `in` to `out` (one allocation, no temporary).
void base64_append(std::string& out, std::string_view in);
// Strict: no whitespace, length a multiple of 4, valid alphabet and padding. nullopt on error.
std::optional<std::string> base64_decode(std::string_view in);
}  // namespace cg
