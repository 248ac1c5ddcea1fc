// run_io: an exception that escapes one handler ends that handler only; the loop runs the rest.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <stdexcept>
#include <thread>

#include "common/metrics.hpp"
#include "gateway/io_loop.hpp"

namespace {
double exceptions_counted() {
  auto text = cg::metrics::serialize();
  const std::string key = "cluster_gateway_handler_exceptions_total{where=\"io_loop\"} ";
  auto p = text.find(key);
  return p == std::string::npos ? 0 : std::stod(text.substr(p + key.size()));
}
}  // namespace

TEST_CASE("an exception escaping a handler ends that handler, not the io loop", "[gateway][containment]") {
  boost::asio::io_context ioc;
  const double before = exceptions_counted();
  auto held = std::make_shared<int>(7);  // what the throwing handler holds (its connection, in the gateway)
  std::weak_ptr<int> watch = held;
  int ran_after = 0;
  boost::asio::post(ioc, [h = std::move(held)] { throw std::runtime_error("bad input"); });
  boost::asio::post(ioc, [&] { ++ran_after; });
  boost::asio::post(ioc, [] { throw 42; });  // not even a std::exception
  boost::asio::post(ioc, [&] { ++ran_after; });
  std::thread t([&] { cg::gateway::run_io(ioc); });  // returns once the queue is empty
  t.join();
  CHECK(ran_after == 2);
  CHECK(watch.expired());  // the throwing handler's state was released (its connection closed)
  CHECK(exceptions_counted() == before + 2);
}
