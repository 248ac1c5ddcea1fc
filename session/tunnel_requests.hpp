// The Tunnel's request/reply half: requests sent to an agent and waiting for its HTTPTunnelResponse,
// by hop requestID and by session serial. Only the asked session may answer; a timeout, a cancel or
// the session's end decides a request as well; whichever comes first wins (`done` runs exactly once,
// always posted). Internal to session/: callers use Tunnel (session/tunnel.hpp).
#pragma once
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "common/thread_annotations.hpp"
#include "session/tunnel.hpp"

namespace cg::session {

// How a table reports what an agent did wrong (rate-limited per connection by the Tunnel).
using AgentWarn = std::function<void(const AgentHandle&, std::string_view msg, const nlohmann::json& fields)>;

class RequestTable {
 public:
  RequestTable(boost::asio::io_context& ioc, SessionRegistry& registry, size_t max_per_session, AgentWarn warn);
  ~RequestTable();
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;

  // Tunnel::send (see its contract).
  std::string send(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                   const TunnelRequest& req, Duration timeout, std::function<void(TunnelReply)> done);
  void cancel(const std::string& id);
  // An HTTPTunnelResponse frame from `s` (not a stream's): the request is looked up before its body is
  // decoded, so a reply nobody waits for costs no decoding; a malformed one ends the request with 502.
  void on_reply(AgentHandle& s, AgentFrame& f);
  // The session ended: every request pending on it fails with connection_closed.
  void session_lost(uint64_t serial);
  bool contains(const std::string& id) const CG_EXCLUDES(mu_);
  size_t size() const CG_EXCLUDES(mu_);

 private:
  struct Pending;
  void complete(const std::string& id, TunnelReply reply, const AgentHandle* from) CG_EXCLUDES(mu_);
  bool expects_reply(const std::string& id, const AgentHandle& from) CG_EXCLUDES(mu_);

  boost::asio::io_context& ioc_;
  SessionRegistry& registry_;
  const size_t max_per_session_;
  AgentWarn warn_;
  // Guards both maps and each request's timer (Pending::timer). Order: RequestTable::mu_ ->
  // LogLimiter::mu_ (warn_ in complete()); no callback runs under it.
  mutable cg::Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending_ CG_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::set<std::string>> by_session_ CG_GUARDED_BY(mu_);
};

}  // namespace cg::session
