// The Tunnel's stream half: open streams (http watch/follow, exec and wirelogs upgrades) by
// requestID and by session serial, each driven by its StreamMachine (session/stream_machine.hpp).
// Internal to session/: callers use Tunnel (session/tunnel.hpp), whose comment holds the contract.
#pragma once
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "common/thread_annotations.hpp"
#include "session/tunnel.hpp"
#include "session/tunnel_requests.hpp"

namespace cg::session {

class StreamTable {
 public:
  // `id_in_use` says whether a requestID is taken by a pending request (a stream may not reuse it);
  // it is called under mu_ (order: StreamTable::mu_ -> RequestTable::mu_).
  StreamTable(boost::asio::io_context& ioc, SessionRegistry& registry, size_t max_per_session, AgentWarn warn,
              std::function<bool(const std::string&)> id_in_use);
  ~StreamTable();
  StreamTable(const StreamTable&) = delete;
  StreamTable& operator=(const StreamTable&) = delete;

  std::string open(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key, StreamRequest req,
                   std::function<void(StreamEvent)> on_event);
  // A head, answer or chunk from `s` for one of its streams; false when no stream has that id.
  bool on_frame(AgentHandle& s, AgentFrame& frame);
  bool send(const std::string& id, const std::string& data, int stream_id);
  void consumed(const std::string& id, size_t n);
  void close(const std::string& id);
  // The session ended: each of its streams ends (session lost).
  void session_lost(uint64_t serial);
  size_t size() const CG_EXCLUDES(mu_);

 private:
  struct Stream;
  // Feeds one input to a stream's machine under mu_ and applies the actions (no-op for an unknown id).
  template <class Input>
  void drive(const std::string& id, Input&& input) CG_EXCLUDES(mu_);
  // Applying a machine's actions is two steps: apply_locked() does the bookkeeping and posts the
  // events of a stream that goes on, under mu_ (so events are posted in the order decided); the
  // caller then releases mu_ and apply_unlocked() sends the frames for the agent, counts and logs,
  // and posts the last events of a stream that ended.
  void apply_locked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions& a) CG_REQUIRES(mu_);
  void apply_unlocked(const std::string& id, const std::shared_ptr<Stream>& st, StreamActions a) CG_EXCLUDES(mu_);
  static void post_events(const std::shared_ptr<Stream>& st, std::vector<StreamEvent> events);

  boost::asio::io_context& ioc_;
  SessionRegistry& registry_;
  const size_t max_per_session_;
  AgentWarn warn_;
  std::function<bool(const std::string&)> id_in_use_;
  // Guards both maps and each stream's machine and first-answer timer (Stream::machine,
  // Stream::timer). Order: StreamTable::mu_ -> RequestTable::mu_ (id_in_use_ in open()); warnings
  // and callbacks run after it is released.
  mutable cg::Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Stream>> streams_ CG_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::set<std::string>> by_session_ CG_GUARDED_BY(mu_);
};

}  // namespace cg::session
