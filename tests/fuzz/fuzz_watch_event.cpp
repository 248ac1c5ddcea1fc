// One line of a Kubernetes watch stream: decode_watch_event, then what the informer does with an
// ADDED/MODIFIED/DELETED event's object: fill in apiVersion/kind and parse_object.
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
  std::string_view line(reinterpret_cast<const char*>(data), size);
  WatchEvent ev = decode_watch_event(line);
  if (ev.gone) {
    FUZZ_CHECK(ev.type == "ERROR" && ev.error.empty());
    return 0;
  }
  if (!ev.error.empty()) return 0;
  FUZZ_CHECK(ev.type != "ERROR");
  FUZZ_CHECK(ev.object.is_object());
  FUZZ_CHECK(ev.resource_version == meta_string(ev.object, "resourceVersion"));
  if (ev.type != "ADDED" && ev.type != "MODIFIED" && ev.type != "DELETED") return 0;
  // The informer of a plane kind or of Secrets fills in the type when the object lacks it.
  bool secret = !line.empty() && (line.size() & 1);
  if (!ev.object.contains("apiVersion")) ev.object["apiVersion"] = secret ? "v1" : "openchoreo.dev/v1alpha1";
  if (!ev.object.contains("kind")) ev.object["kind"] = secret ? "Secret" : "DataPlane";
  ParsedObject p = parse_object(ev.object);
  FUZZ_CHECK(p.error.empty() == (p.cr.has_value() || p.secret.has_value()));
  if (p.cr) FUZZ_CHECK(p.cr->spec.is_object() && !p.cr->plane_id.empty());
  return 0;
}
