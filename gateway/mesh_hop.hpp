// Several replicas: one caller connection's own keep-alive connection to another replica's mesh
// listener, for plain (not streamed) forwarded requests. It lives on the caller connection's strand
// and its coroutine uses it directly: the request is written and the answer read without handing
// the work to another strand and back (each hand-off can wake another I/O thread; see the
// forwarding figures in docs/benchmarks.md). Opened by the first request forwarded to a replica,
// kept for the next ones to the same replica with the same TLS context, replaced otherwise, closed
// with the caller connection. Streams (watch, logs -f, exec, wirelogs) use a relay of their own
// (gateway/mesh_relay.*).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>

#include <boost/asio/awaitable.hpp>

#include "gateway/mesh_relay.hpp"
#include "mesh/mesh.hpp"

namespace cg::gateway {

// Largest answer body a replica may send back for a forwarded request (as the peer client before).
inline constexpr uint64_t kMaxForwardedAnswer = 256u << 20;
// Links of their own that the caller connections of one replica hold at once (to all replicas
// together), as many as the shared pool's connections to one peer: the serving replica's mesh
// listener caps its connections (--max-internal-connections), and a caller connection beyond this
// forwards over the shared pool.
inline constexpr int64_t kMaxHopLinks = 256;

class MeshHop {
 public:
  // `links` counts the links held by every MeshHop of the replica (at most kMaxHopLinks).
  MeshHop(const boost::asio::any_io_executor& ex, std::shared_ptr<std::atomic<int64_t>> links);
  ~MeshHop();
  MeshHop(const MeshHop&) = delete;
  MeshHop& operator=(const MeshHop&) = delete;

  // Sends `req` to the replica at `t` (with X-Cluster-Gateway-Entry-Pod: t.entry) and reads its
  // answer: status 0 and `error` when there is none (`sent` false when no link could be opened or
  // none was free: the request never left, and may go over the shared pool). `req.timeout` bounds the whole exchange,
  // `t.connect_timeout` a new connection's TCP and TLS set-up. On a kept connection that the replica
  // closed in the meantime, the request is sent once more on a new connection when it cannot have
  // been acted on twice: its write failed, or its method is GET, HEAD or OPTIONS and nothing came back.
  // One exchange at a time, on the caller connection's strand.
  boost::asio::awaitable<mesh::ForwardReply> exchange(const MeshRelayTarget& t, const mesh::ForwardRequest& req);
  // Ends the exchange under way (its answer: status 0, error "aborted: <why>") by closing the
  // connection. Without one under way, only closes the connection. On the strand.
  void abort(const char* why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cg::gateway
