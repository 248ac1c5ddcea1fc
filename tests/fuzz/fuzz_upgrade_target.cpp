// The agent listener's request target (`GET /ws?planeID=&planeType=`): check_upgrade_target.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gateway/upgrade_target.hpp"
#include "plane_index/plane_types.hpp"
#include "tests/fuzz/fuzz_util.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string target(reinterpret_cast<const char*>(data), size);
  cg::gateway::UpgradeDecision d = cg::gateway::check_upgrade_target(target);
  if (d.status == 0) {
    FUZZ_CHECK(d.body.empty());
    FUZZ_CHECK(!d.plane_id.empty());
    FUZZ_CHECK(cg::plane::is_valid_plane_type(d.plane_type));
  } else {
    FUZZ_CHECK(d.status == 400 || d.status == 404);
    // The listener logs the body without its trailing newline and answers it as is.
    FUZZ_CHECK(!d.body.empty() && d.body.back() == '\n');
  }
  return 0;
}
