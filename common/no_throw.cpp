#include "common/no_throw.hpp"

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg {

void report_cleanup_exception(const char* where, const char* what) noexcept {
  try {
    log::error("cleanup failed", {{"where", where}, {"error", what}});
    metrics::handler_exception(where);
  } catch (...) {
    // Logging itself failed (out of memory): nothing more can be done without risking the process.
  }
}

}  // namespace cg
