// Keeps live sessions' authorizations in step with the plane index: when a plane's CRs or CAs
// change, every session of that plane is re-verified; CRs are granted or revoked, and a session
// left with none is closed with WebSocket code 1008.
#pragma once
#include <string>

#include "plane_index/index.hpp"
#include "session/registry.hpp"

namespace cg::gateway {

struct ReverifyResult {
  size_t granted = 0;
  size_t revoked = 0;
  size_t closed = 0;
};

ReverifyResult reverify_plane(plane::PlaneIndex& index, session::SessionRegistry& registry, const std::string& plane_type,
                              const std::string& plane_id);

}  // namespace cg::gateway
