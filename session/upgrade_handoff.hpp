// The concrete handoff from the agent listener to the session (Beast types; .cpp files only).
#pragma once
#include "common/net.hpp"
#include "session/agent_session.hpp"
#include "session/lean_tls.hpp"

namespace cg::session {
struct UpgradeHandoff {
  UpgradeHandoff(LeanTls&& s, net::UpgradeRequest&& r) : stream(std::move(s)), request(std::move(r)) {}
  LeanTls stream;
  net::UpgradeRequest request;
};
}  // namespace cg::session
