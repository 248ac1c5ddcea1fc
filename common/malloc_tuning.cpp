#include "common/malloc_tuning.hpp"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace cg {

void tune_malloc_for_large_messages() {
  const char* t = std::getenv("GLIBC_TUNABLES");
  if (t && std::strstr(t, "glibc.malloc.")) return;
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

}  // namespace cg
