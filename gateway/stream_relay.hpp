// One stream from an agent to a caller of the internal API: watch / logs follow (chunked HTTP) and
// wirelogs (Server-Sent Events). Opens the stream on the tunnel and relays its events to the caller
// until it ends or the caller leaves, with flow control: data is written one chunk at a time and
// credited back to the agent as each write completes, so the agent session never waits for this
// caller. No Beast here: the caller's connection is written through CallerIo (caller_io.cpp).
#pragma once
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "common/time.hpp"
#include "session/tunnel.hpp"

namespace cg::gateway {

class CallerIo;
class Wakeup;
enum class Next;
enum class Surface;

// One Server-Sent Event carrying `payload` (one "data:" line per line; a trailing newline and CRs
// before newlines dropped).
std::string sse_event(std::string_view payload);

// Where a stream goes: the plane, CR and target it was checked for, and the request's log fields.
struct StreamTarget {
  std::string plane_type, plane_id, cr_key, target;
  nlohmann::json log_fields;  // requestID, planeType, planeID, cr, target
};

class StreamRelay : public std::enable_shared_from_this<StreamRelay> {
 public:
  using Spawn = std::function<void(boost::asio::awaitable<void>)>;
  StreamRelay(CallerIo& io, session::Tunnel& tunnel, StreamTarget target);
  ~StreamRelay();
  // Opens the stream and relays it; what the connection does next. `spawn` runs the caller watch.
  boost::asio::awaitable<Next> run(session::StreamRequest sr, Surface surface, const Spawn& spawn);

 private:
  boost::asio::awaitable<Next> ended(session::StreamEvent ev, Surface surface);
  bool head_written(bool ok, int status);  // after writing the head: logs it when `ok`
  Next caller_gone(const std::string& why);
  nlohmann::json fields(nlohmann::json extra = nlohmann::json::object()) const;
  double seconds() const;

  CallerIo& io_;
  session::Tunnel& tunnel_;
  StreamTarget target_;
  std::string hop_id_;
  std::chrono::steady_clock::time_point started_{};
  std::deque<session::StreamEvent> events_;  // the stream's events not yet relayed
  std::unique_ptr<Wakeup> wake_;  // an event arrived, or the caller left
  // Whether the caller has the response head; its status then (for the metric).
  enum class Head { not_sent, sent } head_ = Head::not_sent;
  int head_status_ = 0;
};

}  // namespace cg::gateway
