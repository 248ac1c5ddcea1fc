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
  std::optional<SysTime> last_seen;  // latest inbound frame or pong among the sessions
  std::optional<SysTime> earliest_connected;  // earliest connectedAt among the sessions
  std::optional<SysTime> last_rise;  // when the count last went 0 → ≥1
  std::optional<SysTime> last_zero;  // when the count last went ≥1 → 0
  // Several replicas: the gateway itself moved these agents (GOAWAY of a drain or of the rebalancer);
  // they are expected back, at another replica, before this time. A status writer holds a
  // connected → disconnected write until then (the agents are not lost, they are on their way).
  std::optional<SysTime> moving_until;
  SessionReport& operator+=(const SessionReport& o);
};

// Why a session closed. Decided once, when the close starts; logs and metrics read it from here
// (never from the reason text).
enum class CloseCause : uint8_t {
  agent_closed,  // the agent sent a close frame
  connection_lost,  // TCP or TLS ended without a close frame (reset, end of stream, TLS error)
  heartbeat_timeout,  // no pong within --heartbeat-timeout
  revoked,  // re-verification left the session no CR: close 1008
  certificate_expired,  // the agent's client certificate expired: close 1008
  shutdown,  // the gateway is shutting down (GOAWAY, then close 1001)
  message_too_big,  // an inbound message over --max-message-size: close 1009
  write_failed,  // writing to the agent failed
  gateway_closed,  // any other close the gateway started (reconnect, notify `deleted`: 1001)
};
// For logs (`cause` field): the enumerator's name.
std::string_view to_string(CloseCause c);
// The `reason` label of cluster_gateway_agent_sessions_closed_total: heartbeat_timeout, agent_closed,
// gateway_closed (every close code the gateway sends: 1008, 1001), message_too_big, write_failed,
// connection_lost.
std::string_view metric_label(CloseCause c);

// Why SessionRegistry::pick() found no session for a request, most telling first.
enum class PickMiss : uint8_t {
  none,  // a session was picked
  // Sessions authorized for the CR (with the capability) exist, but none can take a new request
  // here: each got GOAWAY (draining) or, with several replicas, they are at other replicas. The
  // agent is moving or elsewhere: nothing was sent, and the request may go where it is now.
  moving,
  not_capable,  // authorized sessions exist, none announcing the capability (501)
  // The plane has live sessions (here or, with several replicas, at another one), none authorized
  // for the CR (403). Only sessions authorized for at least one CR count: a closing one, or one
  // re-verification just left without a CR (it is closed right after), is on its way out, and
  // upstream answers 502 once it is gone.
  not_authorized,
  no_agent,  // no live session of the plane at all (502)
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
  // Every capability token it announced (the mesh's session directory).
  virtual std::set<std::string> capabilities() const { return {}; }
  // GOAWAY was sent to it (the rebalancer): it is never picked for a new request again, here or
  // through another replica, while it finishes what it has and the agent reconnects elsewhere.
  virtual void set_draining() {}
  virtual bool draining() const { return false; }
  // Starts closing with a WebSocket close frame of this code and reason. The session leaves
  // routing and status before this returns (SessionRegistry::begin_close); the close handshake and
  // the socket's teardown follow asynchronously. Only the first close of a session counts.
  virtual void close(uint16_t code, std::string reason, CloseCause cause) = 0;
  void close(uint16_t code, std::string reason) { close(code, std::move(reason), CloseCause::gateway_closed); }
  // Queues one text frame; false when the session is closing or its write queue is full.
  virtual bool send_text(std::shared_ptr<const std::string> frame) = 0;
};

struct RegistryEvent {
  enum class Type { connected, disconnected, authorization_changed } type;
  std::string plane_type;
  std::string plane_id;
  std::string connection_id;
  std::set<std::string> crs;  // CR auth keys whose sessions changed
  std::optional<CloseCause> cause;  // disconnected: why the session closed
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
  // The session started closing (any cause). From now on it is neither picked nor counted: not in
  // report(), plane_report(), sessions_of(), all(), nor as a plane session for pick()'s 403-vs-502
  // decision; its CRs' tracks record the leave (last_zero) and listeners get its `disconnected`
  // event now. It still counts in size() until remove() (its socket is not closed yet).
  // Returns false when the session is not registered or already closing: this happens once.
  virtual bool begin_close(const AgentHandle& h, CloseCause cause) = 0;
  // Forgets the session (its socket is closed). One that was not closing yet goes through
  // begin_close(connection_lost) first. Returns false when the session was not (or no longer)
  // registered: removal happens once.
  virtual bool remove(const AgentHandle& h) = 0;
  // Replaces the session's authorized CR set; returns (granted, revoked) keys. No-op for a closing
  // session.
  virtual std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const AgentHandle& h,
                                                                                 std::set<std::string> authorized) = 0;
  virtual std::vector<SessionView> sessions_of(const std::string& plane_type, const std::string& plane_id) const = 0;
  // How many live sessions sessions_of() would return, without copying them: O(1), for the
  // per-plane admission limit checked on every upgrade.
  virtual size_t plane_session_count(const std::string& plane_type, const std::string& plane_id) const = 0;
  // Live (not closing) sessions.
  virtual std::vector<SessionView> all() const = 0;
  // Registered sessions, closing ones included (shutdown waits for this to reach 0).
  virtual size_t size() const = 0;
  // CR-specific report (sessions authorized for plane_type + auth key). O(1): the count, the earliest
  // connectedAt and the latest inbound frame are kept per CR as sessions join, leave and are heard,
  // so a status write costs the same on a plane with 10,000 sessions as on one with one. last_seen is
  // the latest frame heard from any session while it was authorized for the CR (the CRD's
  // lastHeartbeatTime: "when the control plane last received any communication from an agent"), set
  // only while the CR has sessions.
  virtual SessionReport report(const std::string& plane_type, const std::string& cr_key) const = 0;
  // The session received a frame or pong at `at` (its last_seen()). Sessions call it at most once per
  // second of `at` (the resolution of status times), so that report() needs no scan of the sessions.
  // No-op for a session that is not registered or is closing.
  virtual void heard(const AgentHandle& h, SysTime at) = 0;
  // Plane-level report (every session of plane_type/plane_id).
  virtual SessionReport plane_report(const std::string& plane_type, const std::string& plane_id) const = 0;
  // Round-robin among live, non-closing, non-draining sessions authorized for the CR (and, when
  // `capability` is not empty, announcing it). Empty when none; then `miss` tells why (PickMiss).
  virtual std::shared_ptr<AgentHandle> pick(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                            PickMiss& miss, std::string_view capability = {}) = 0;
  virtual void subscribe(Listener l) = 0;
  // Planes (planeType, planeID) with at least one live session (GET /api/v1/planes/status). The
  // mesh's registry adds the planes of the other replicas.
  virtual std::set<std::pair<std::string, std::string>> planes() const;
  // Whether any live session of the plane exists (here, or with the mesh at any replica).
  virtual bool plane_has_sessions(const std::string& plane_type, const std::string& plane_id) const {
    return plane_session_count(plane_type, plane_id) > 0;
  }
};

std::unique_ptr<SessionRegistry> make_local_registry();

}  // namespace cg::session
