// An agent driven by a test: its own thread reads gateway frames and answers them with a handler.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "tests/support/ws_client.hpp"

namespace cg::testing {

class TestAgent {
 public:
  // Returns the frames to send in answer to one gateway frame (none: stay silent).
  using Handler = std::function<std::vector<nlohmann::json>(const nlohmann::json& frame)>;
  TestAgent(std::unique_ptr<WsClient> ws, Handler h);
  ~TestAgent();
  // Closes the TCP connection abruptly from the agent thread.
  void kill();
  std::vector<nlohmann::json> received() const;
  size_t received_count() const;

  // A handler answering every request with 200 and a JSON body naming `who`.
  static Handler echo(const std::string& who);

 private:
  std::unique_ptr<WsClient> ws_;
  Handler handler_;
  std::atomic<bool> stop_{false}, kill_{false};
  mutable std::mutex mu_;
  std::vector<nlohmann::json> received_;
  std::thread thread_;
};

}  // namespace cg::testing
