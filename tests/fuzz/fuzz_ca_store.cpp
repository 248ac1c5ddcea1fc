// A CR's clientCA bundle (PEM or base64-encoded PEM): CaStore::from_bundle.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_util.hpp"
#include "tls/ca_store.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bundle(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto store = cg::tls::CaStore::from_bundle(bundle, error);
  if (!store) {
    FUZZ_CHECK(!error.empty());
    return 0;
  }
  FUZZ_CHECK(error.empty());
  FUZZ_CHECK(store->store() != nullptr);
  FUZZ_CHECK(store->cert_count() > 0);
  FUZZ_CHECK(store->subjects().size() == store->cert_count());
  FUZZ_CHECK(store->fingerprint().size() == 64);
  return 0;
}
