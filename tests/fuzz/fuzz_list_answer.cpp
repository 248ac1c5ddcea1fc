// A Kubernetes LIST answer: decode_list_answer, then parse_object on every item (with apiVersion and
// kind filled in as the informer does).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kube/watch_event.hpp"
#include "plane_index/objects.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace cg::plane;
using namespace cg::kube;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  ListAnswer a = decode_list_answer(body);
  if (!a.error.empty()) {
    FUZZ_CHECK(a.items.empty() && a.resource_version.empty());
    return 0;
  }
  bool secret = size & 1;
  for (auto& item : a.items) {
    if (item.is_object()) {
      if (!item.contains("apiVersion")) item["apiVersion"] = secret ? "v1" : "openchoreo.dev/v1alpha1";
      if (!item.contains("kind")) item["kind"] = secret ? "Secret" : "ClusterDataPlane";
    }
    ParsedObject p = parse_object(item);
    FUZZ_CHECK(p.error.empty() == (p.cr.has_value() || p.secret.has_value()));
  }
  return 0;
}
