// The simulator's streams: HTTP streams for stream-capable gateways (watch, logs follow; flow
// control by credit), and upstream's exec and wirelogs (hubble) stream protocols. All calls run on
// the owning agent's strand.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/net.hpp"
#include "common/time.hpp"

namespace cg::sim {

struct StreamOptions {
  Duration interval = std::chrono::milliseconds(200);  // between generated events/lines/flows
  size_t flood_chunk = 16 * 1024;  // logs follow of container "flood"
  // --stream-overrun: >0: right after the head of a flow-controlled HTTP stream, one data chunk of
  // window + overrun bytes (more than the gateway allows before any credit).
  size_t overrun = 0;
};

class SimStreams {
 public:
  using Send = std::function<void(std::string)>;
  SimStreams(net::asio::any_io_executor ex, StreamOptions opts, std::string plane_id, int agent_index, Send send);
  ~SimStreams();
  // True when the message was a stream matter (init, chunk, credit, streamed request) and was handled.
  bool handle(const nlohmann::json& msg);
  // The agent's outbound queue drained below its low mark: blocked producers may go on.
  void writable();
  // The connection went away: every stream ends silently.
  void reset();
  size_t open() const { return streams_.size(); }

 private:
  struct Stream;
  void start_http(const nlohmann::json& req);
  void start_exec(const nlohmann::json& init);
  void start_hubble(const nlohmann::json& init);
  void produce(const std::shared_ptr<Stream>& s);
  void emit(const std::shared_ptr<Stream>& s, const std::string& data, int stream_id = 0);
  void finish(const std::string& id, const std::string& error);
  void on_stdin(const std::shared_ptr<Stream>& s, const std::string& data);

  net::asio::any_io_executor ex_;
  StreamOptions opts_;
  std::string plane_id_;
  int index_;
  Send send_;
  std::map<std::string, std::shared_ptr<Stream>> streams_;

 public:
  size_t* queued_bytes = nullptr;  // the agent's outbound queue size (producers pause above 1 MiB)
};

}  // namespace cg::sim
