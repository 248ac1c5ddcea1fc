// Random identifiers: UUIDv4 (connection and tunnel request ids) and hex tokens.
#pragma once
#include <string>

namespace cg {
std::string uuid_v4();
std::string random_hex(size_t bytes);  // 2*bytes lowercase hex chars
}  // namespace cg
