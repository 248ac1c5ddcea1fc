// A control io_context run by one thread, as the gateway's (gateway/gateway.cpp): unit tests give
// its executor to the components that take one (PolicyFile, FilePlaneSource, KubePlaneSource,
// StatusWriter). Declare it before the component so that the component stops first.
#pragma once
#include <optional>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace cg::testing {

class ControlThread {
 public:
  ControlThread() : work_(ioc_.get_executor()), thread_([this] { ioc_.run(); }) {}
  ~ControlThread() {
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  ControlThread(const ControlThread&) = delete;
  ControlThread& operator=(const ControlThread&) = delete;
  boost::asio::any_io_executor executor() { return ioc_.get_executor(); }

 private:
  boost::asio::io_context ioc_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
};

}  // namespace cg::testing
