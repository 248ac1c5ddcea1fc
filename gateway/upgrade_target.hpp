// The agent listener's pre-upgrade decision on `GET /ws?planeID=&planeType=`: a pure function of the
// request target, separate from I/O so that it can be fuzzed on its own (tests/fuzz/fuzz_upgrade_target).
// Its answers are asserted end to end in tests/gateway (upstream's 400/404 bodies).
#pragma once
#include <string>

namespace cg::gateway {

// Pre-upgrade decision for one request.
struct UpgradeDecision {
  unsigned status = 0;  // 0: accept; otherwise the HTTP status to answer
  std::string body;  // exact plain-text body (with Go's trailing newline)
  std::string plane_type, plane_id;
};
// Checks path and query as upstream does: 404 for other paths, 400 for missing/invalid parameters.
UpgradeDecision check_upgrade_target(const std::string& target);

}  // namespace cg::gateway
