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

std::string exception_text(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
  }
  return "unknown exception";
}

}  // namespace cg
