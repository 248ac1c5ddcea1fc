// Destructors and other cleanup that must not throw (an exception leaving a destructor ends the
// process): no_throw("where", [&] { stop(); }) runs the cleanup, and if it throws anyway (an
// allocation in a post(), a system error), logs "cleanup failed" with `where` and counts it in
// cluster_gateway_handler_exceptions_total{where}. clang-tidy's bugprone-exception-escape checks that
// nothing else can escape (scripts/lint).
#pragma once
#include <exception>
#include <string>

namespace cg {

// What a caught exception says (its what(), or "unknown exception"), for the log line of a
// coroutine's completion handler that ends one connection.
std::string exception_text(const std::exception_ptr& e);

// Logs and counts an exception caught during cleanup; never throws itself.
void report_cleanup_exception(const char* where, const char* what) noexcept;

template <class F>
void no_throw(const char* where, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    report_cleanup_exception(where, e.what());
  } catch (...) {
    report_cleanup_exception(where, "unknown exception");
  }
}

}  // namespace cg
