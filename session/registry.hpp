// The registry of live agent sessions, behind an interface so that a multi-replica registry
// (reports from other gateways summed in) can replace the local one without touching callers.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "tls/verifier.hpp"

namespace cg::session {

// What status needs to know about the sessions authorized for one CR. Summable across replicas:
// counts add, earliest/latest take min/max.
struct SessionReport {
  int connected_agents = 0;
  std::optional<SysTime> last_seen;           // latest inbound frame or pong among the sessions
  std::optional<SysTime> earliest_connected;  // earliest connectedAt among the sessions
  std::optional<SysTime> last_rise;           // when the count last went 0 → ≥1
  std::optional<SysTime> last_zero;           // when the count last went ≥1 → 0
  SessionReport& operator+=(const SessionReport& o);
};

// A live agent connection, implemented by the session layer. All methods are thread-safe.
class AgentHandle {
 public:
  virtual ~AgentHandle() = default;
  virtual uint64_t serial() const = 0;
  virtual const std::string& connection_id() const = 0;
  virtual const std::string& plane_type() const = 0;
  virtual const std::string& plane_id() const = 0;
  virtual SysTime connected_at() const = 0;
  virtual SysTime last_seen() const = 0;
  virtual const tls::PeerChain& peer() const = 0;
  virtual bool closing() const = 0;
  // Whether the agent announced this capability token on its upgrade request.
  virtual bool has_capability(std::string_view) const { return false; }
  // Starts a WebSocket close handshake with this code and reason (asynchronous).
  virtual void close(uint16_t code, std::string reason) = 0;
  // Queues one text frame; false when the session is closing or its write queue is full.
  virtual bool send_text(std::shared_ptr<const std::string> frame) = 0;
};

struct RegistryEvent {
  enum class Type { connected, disconnected, authorization_changed } type;
  std::string plane_type;
  std::string plane_id;
  std::string connection_id;
  std::set<std::string> crs;  // CR auth keys whose sessions changed
};

struct SessionView {
  std::shared_ptr<AgentHandle> handle;
  std::set<std::string> authorized;
};

class SessionRegistry {
 public:
  using Listener = std::function<void(const RegistryEvent&)>;
  virtual ~SessionRegistry() = default;
  // Returns false (and registers nothing) once close_admission() was called: the gateway is draining.
  virtual bool add(std::shared_ptr<AgentHandle> h, std::set<std::string> authorized) = 0;
  // From now on add() refuses new sessions and pick() picks none (shutdown): an upgrade that
  // completes during the drain is closed by its session instead of slipping past the drain
  // unannounced, and no new request starts on a session that got GOAWAY.
  virtual void close_admission() = 0;
  // Returns false when the session was not (or no longer) registered: removal happens once.
  virtual bool remove(const AgentHandle& h) = 0;
  // Replaces the session's authorized CR set; returns (granted, revoked) keys.
  virtual std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h,
                                                                                 std::set<std::string> authorized) = 0;
  virtual std::vector<SessionView> sessions_of(const std::string& plane_type, const std::string& plane_id) const = 0;
  virtual std::vector<SessionView> all() const = 0;
  virtual size_t size() const = 0;
  // CR-specific report (sessions authorized for plane_type + auth key).
  virtual SessionReport report(const std::string& plane_type, const std::string& cr_key) const = 0;
  // Plane-level report (every session of plane_type/plane_id).
  virtual SessionReport plane_report(const std::string& plane_type, const std::string& plane_id) const = 0;
  // Round-robin among live, non-closing sessions authorized for the CR (and, when `capability` is
  // not empty, announcing it). Empty when none; then `plane_has_sessions` tells "no agent at all"
  // (502) from "none authorized" (403), and `*authorized_exists` (if given) tells "authorized
  // sessions exist, none with the capability".
  virtual std::shared_ptr<AgentHandle> pick(const std::string& plane_type, const std::string& plane_id,
                                            const std::string& cr_key, bool& plane_has_sessions,
                                            std::string_view capability = {}, bool* authorized_exists = nullptr) = 0;
  virtual void subscribe(Listener l) = 0;
};

std::unique_ptr<SessionRegistry> make_local_registry();

}  // namespace cg::session
