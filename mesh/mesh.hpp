// Several replicas (docs/architecture.md, "Replicas"): this replica's part of the mesh.
//
// * Publishing: the local registry's changes are batched every 100 ms into deltas (sessions up and
//   down, the per-CR and per-plane reports that changed) and POSTed to every peer's mesh port
//   (/mesh/v1/directory, mTLS with --mesh-ca-cert both ways, kept-alive connections); a heartbeat
//   every second when nothing changed; a snapshot first and whenever the peer asks for a resync.
// * Receiving: the mesh listener hands each POST to receive(), which applies it to the Directory;
//   a replica not heard from for the lease duration (or, with Kubernetes, whose Lease expired) is
//   dropped from routing and from the status sum.
// * Forwarding: an internal API request for a CR without a local session goes one hop to a replica
//   holding one (fewest requests in flight from here first), over the same kept-alive connections.
// * Leadership of the status writer: with static peers, the live replica with the smallest id (after
//   hearing every peer or one lease duration after start); with Kubernetes, a Lease (set_leader()).
//
// Everything timed runs on a ControlTimer on the control executor; the HTTP client's callbacks are
// posted back to it.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/time.hpp"
#include "mesh/directory.hpp"
#include "mesh/summing_registry.hpp"
#include "session/registry.hpp"

namespace boost::asio {
class io_context;
class any_io_executor;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace cg::mesh {

struct PeerAddress {
  std::string host;  // name or address (IPv6 without brackets)
  uint16_t port = 0;
  std::string replica;  // known from Kubernetes (the pod's name); empty for static peers until it answers
  bool operator==(const PeerAddress&) const = default;
  bool operator<(const PeerAddress& o) const { return std::tie(host, port, replica) < std::tie(o.host, o.port, o.replica); }
};
// "host:port,host:port" ([v6]:port allowed); throws std::invalid_argument naming the bad entry.
std::vector<PeerAddress> parse_peers(const std::string& list);

// The mesh CA (verifies peers) and this replica's certificate chain and key, all PEM.
struct Credentials {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

struct MeshOptions {
  std::string replica_id;
  std::string ca_pem;  // verifies peers
  std::string cert_pem;  // this replica's certificate chain (client side of its requests)
  std::string key_pem;
  std::string server_name;  // peers' certificates are checked against it; empty: each peer's host
  Duration lease_duration = std::chrono::seconds(15);
  Duration publish_interval = std::chrono::milliseconds(100);
  // A heartbeat goes to a peer that got no update for this long; a peer heard from by no update for
  // `silent_after` is silent: forwarded requests to it are given up (a cut link, a frozen process),
  // and it is not picked while another replica holding the agent is heard from.
  Duration heartbeat_interval = std::chrono::milliseconds(250);
  Duration silent_after = std::chrono::milliseconds(800);
  // How often every report known is computed again (lastSeen moves without events).
  Duration report_scan_interval = std::chrono::seconds(1);
  // Static peers: the replica waits to hear every one of them (or one lease duration) before it
  // may lead; leadership then follows the smallest live replica id. false: set_leader() decides.
  bool static_leadership = true;
  size_t expected_peers = 0;
  // The rebalancer: every lease duration, a replica holding more than its fair share (all agents /
  // live replicas) by more than this fraction sends GOAWAY to the excess, one per publish interval;
  // one still open `shed_close_after` later is closed with 1001. Negative: off.
  double rebalance_margin = 0.25;
  Duration shed_close_after = std::chrono::seconds(3);
  // Agents this replica moves (GOAWAY of the rebalancer or of a drain) are expected back at another
  // replica within this time (after their close): until then their CRs are reported `moving`, and the
  // status writer does not write them disconnected.
  Duration move_grace = std::chrono::seconds(5);
};

// A request relayed to another replica, and its answer.
struct ForwardRequest {
  std::string method;
  std::string target;  // the caller's request target (/api/proxy/…)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  Duration timeout{};
};
struct ForwardReply {
  int status = 0;  // 0: no answer (error says why)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string error;
  std::string replica;  // who was asked
  // false: the request never left this replica (no connection to the replica could be had), so it
  // may go another way.
  bool sent = true;
};

// Response header names (upstream's): the replica the caller reached, and the one whose agent served it.
inline constexpr const char* kEntryPodHeader = "X-Cluster-Gateway-Entry-Pod";
inline constexpr const char* kServedByHeader = "X-Cluster-Gateway-Served-By";
// On a replica's refusal of a forwarded request that it did not act on (it is draining, or the
// agent has just left it): the entry replica sends the request elsewhere.
inline constexpr const char* kDrainingHeader = "X-Cluster-Gateway-Draining";
inline constexpr const char* kDirectoryPath = "/mesh/v1/directory";

class Mesh {
 public:
  Mesh(boost::asio::io_context& ioc, const boost::asio::any_io_executor& control, session::SessionRegistry& local,
       MeshOptions opts);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  const std::string& replica_id() const;
  // The summing view for status and the plane endpoints (local sessions + other replicas' reports).
  session::SessionRegistry& registry();
  const Directory& directory() const;

  void start();
  // Shutting down: the next updates say `draining` (peers stop picking this replica's sessions), and
  // every local agent (GOAWAY within `window`) is reported moving for window + move_grace.
  void drain(Duration window);
  // Sends `bye` to every peer (best effort, bounded by `deadline`) and stops.
  void stop(std::chrono::steady_clock::time_point deadline);

  // The peers (static list, or the ready EndpointSlice endpoints): links to new ones start with a
  // snapshot, links to removed ones end. Any thread.
  void set_peers(const std::vector<PeerAddress>& peers);
  // Kubernetes: the replicas whose Lease is held (nullopt: liveness from the links alone). Any thread.
  void set_alive(std::optional<std::set<std::string>> alive);
  // Kubernetes: the status-writer Lease's outcome (only without static_leadership). Any thread.
  void set_leader(bool leading);

  // POST /mesh/v1/directory from a peer: the status and the JSON body to answer.
  struct Answer {
    unsigned status = 200;
    std::string body;
  };
  Answer receive(std::string_view body);

  // A replica holding a session of the plane authorized for the CR (with the capability), never one
  // in `exclude`; the one with the fewest requests in flight from here. nullopt: none.
  std::optional<std::string> pick_peer(const std::string& plane_type, const std::string& plane_id, const std::string& cr_key,
                                       std::string_view capability, const std::set<std::string>& exclude = {});
  // Relays the request to `replica` (callback posted, exactly once; on an io thread).
  void forward(const std::string& replica, ForwardRequest req, std::function<void(ForwardReply)> done);
  // A request sent to `replica` over another connection than forward()'s (a caller connection's own
  // link) counts as in flight, for pick_peer, while the returned token lives. Null: no link to it.
  std::shared_ptr<void> count_forward(const std::string& replica);

  // Where a replica's mesh listener is, and the name its certificate must carry (streams and exec
  // are relayed over a connection of their own). nullopt: no link to it.
  struct Route {
    std::string host;
    uint16_t port = 0;
    std::string server_name;
  };
  std::optional<Route> route_to(const std::string& replica) const;
  // TLS client context for those connections: the mesh CA, this replica's peer certificate.
  std::shared_ptr<boost::asio::ssl::context> client_tls() const;
  // A renewed mesh certificate (or CA): new connections to peers use it, requests already sent
  // finish on their connections. Throws (and changes nothing) when the material does not load. Any
  // thread.
  void set_credentials(Credentials c);

  // Whether this replica knows where the agents are: every peer's directory has arrived (or one
  // lease duration passed since start). Until then a request that finds no agent waits, and /ready
  // says not ready.
  bool synced() const;
  // Within shed_close_after + move_grace of this replica's start: agents a replica drained before
  // this one started (a rolling restart) may still be on their way, and this replica never saw the
  // reports that counted them. A request finding no agent then waits for one (as for an agent known
  // to be moving) instead of failing at once; and the summing registry holds the disconnected write of
  // a CR it has seen nothing of since the start (hold_unseen_since_start).
  bool just_started() const;

  // Whether the replica's updates still arrive (a heartbeat is due every 250 ms): false once none came
  // for `silent_after` (800 ms) counted from `since` or from the last update, whichever is later. A
  // forwarded request to a replica that fell silent (a cut link, a frozen process) is given up then
  // instead of waiting for its timeout; `since` is the moment it was sent, so a replica picked while
  // already quiet still gets the whole interval.
  bool responsive(const std::string& replica, std::chrono::steady_clock::time_point since = {}) const;

  // The peers' replica ids (those that answered or that Kubernetes named).
  std::vector<std::string> peer_replicas() const;

  bool leader() const;
  // Called on the control strand whenever leadership changes (also once at start when it is gained).
  void on_leadership(std::function<void(bool)> fn);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cg::mesh
