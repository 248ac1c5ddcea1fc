// Shared by the libFuzzer targets: quiet logging and invariant checks that crash (so libFuzzer
// keeps the input) instead of throwing.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/log.hpp"

namespace cg::fuzz {

// Logging is process-wide: only errors would still be written (the parsers fuzzed here log nothing).
inline void quiet_logs() { cg::log::init(cg::log::Level::error, cg::log::Format::text); }

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant violated at %s:%d: %s\n", file, line, what);
  std::abort();
}

}  // namespace cg::fuzz

#define FUZZ_CHECK(cond)                                      \
  do {                                                        \
    if (!(cond)) ::cg::fuzz::fail(#cond, __FILE__, __LINE__); \
  } while (0)
