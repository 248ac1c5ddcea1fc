#include "tests/support/test_agent.hpp"

#include "common/base64.hpp"

namespace cg::testing {

TestAgent::TestAgent(std::unique_ptr<WsClient> ws, Handler h) : ws_(std::move(ws)), handler_(std::move(h)) {
  thread_ = std::thread([this] {
    std::string msg;
    while (!stop_) {
      if (kill_) {
        ws_.reset();  // abrupt close of the socket
        return;
      }
      if (!ws_->read(msg, std::chrono::milliseconds(20))) {
        if (ws_->closed()) return;
        continue;
      }
      auto j = nlohmann::json::parse(msg, nullptr, false);
      {
        std::lock_guard lk(mu_);
        received_.push_back(j);
      }
      for (const auto& out : handler_(j)) ws_->write(out.dump());
    }
  });
}

TestAgent::~TestAgent() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void TestAgent::kill() { kill_ = true; }

std::vector<nlohmann::json> TestAgent::received() const {
  std::lock_guard lk(mu_);
  return received_;
}

size_t TestAgent::received_count() const {
  std::lock_guard lk(mu_);
  return received_.size();
}

TestAgent::Handler TestAgent::echo(const std::string& who) {
  return [who](const nlohmann::json& req) -> std::vector<nlohmann::json> {
    nlohmann::json body = {
        {"agent", who}, {"method", req.value("method", "")}, {"path", req.value("path", "")}, {"query", req.value("query", "")}};
    if (req.contains("body")) body["bodyBytes"] = base64_decode(req["body"].get<std::string>()).value_or("").size();
    return {{{"requestID", req.value("requestID", "")},
             {"statusCode", 200},
             {"headers", {{"Content-Type", {"application/json"}}, {"X-Agent", {who}}}},
             {"body", base64_encode(body.dump())}}};
  };
}

}  // namespace cg::testing
