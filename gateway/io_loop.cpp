#include "gateway/io_loop.hpp"

#include <boost/asio/io_context.hpp>
#include <exception>

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::gateway {

void run_io(boost::asio::io_context& ioc) {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      metrics::handler_exception("io_loop");
      log::error("exception escaped an io handler; the connection it served is closed", {{"reason", e.what()}});
    } catch (...) {
      metrics::handler_exception("io_loop");
      log::error("exception escaped an io handler; the connection it served is closed", {{"reason", "unknown exception"}});
    }
  }
}

}  // namespace cg::gateway
