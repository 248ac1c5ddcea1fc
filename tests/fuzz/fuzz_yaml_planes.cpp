// One file of the --planes-dir source: parse_yaml_documents (YAML → JSON, then parse_object for
// each document). Whatever is accepted must be usable downstream: the file source dumps each CR's
// spec to JSON to assign generations, and the index, status writer and logs dump names, planeIDs and
// annotations, so accepted text must be valid UTF-8 (nlohmann::json::dump throws otherwise).
#include <cstddef>
#include <cstdint>
#include <string>

#include "plane_index/file_source.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace cg::plane;

namespace {
bool dumps(const nlohmann::json& j) {
  try {
    (void)j.dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  FileParse fp = parse_yaml_documents(text);
  if (!fp.file_error.empty()) {
    FUZZ_CHECK(fp.docs.empty());
    return 0;
  }
  for (const auto& d : fp.docs) {
    FUZZ_CHECK(d.error.empty() == (d.cr.has_value() || d.secret.has_value()));
    FUZZ_CHECK(!(d.cr && d.secret));
    if (d.cr) {
      const PlaneCR& cr = *d.cr;
      FUZZ_CHECK(!cr.ref.name.empty() && !cr.plane_id.empty() && cr.generation >= 1);
      FUZZ_CHECK(cr.spec.is_object());
      FUZZ_CHECK(dumps(cr.spec) && dumps(cr.status));
      nlohmann::json meta = {{"name", cr.ref.name},
                             {"namespace", cr.ref.ns},
                             {"planeID", cr.plane_id},
                             {"annotations", cr.annotations},
                             {"displayName", cr.display_name()}};
      if (cr.ca_value) meta["ca"] = *cr.ca_value;
      if (cr.ca_secret) meta["secret"] = {cr.ca_secret->name, cr.ca_secret->ns, cr.ca_secret->key};
      if (cr.obs_ref) meta["obs"] = {cr.obs_ref->kind, cr.obs_ref->name};
      FUZZ_CHECK(dumps(meta));
    }
    if (d.secret) {
      FUZZ_CHECK(!d.secret->name.empty() && !d.secret->ns.empty());
      FUZZ_CHECK(dumps({d.secret->name, d.secret->ns}));  // data values are bytes: not dumped
    }
  }
  return 0;
}
