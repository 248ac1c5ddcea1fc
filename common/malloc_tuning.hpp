// Process-wide glibc malloc settings for processes that move large messages (the gateway, and the
// agent simulator that stands in for upstream's Go agent in tests and benchmarks).
#pragma once

namespace cg {

// Large messages (a 1 MiB body is about 1.4 MB of base64 in a tunnel frame, read into a growing buffer
// and decoded into another) are allocated and freed many times a second. With glibc's defaults such
// blocks are mmap'ed, or the arena's free top is trimmed once they are freed, so every message faults
// fresh zeroed pages in again (on a virtual machine each fault is expensive). After this call, blocks
// up to 4 MiB come from the arenas and up to 32 MiB of free top is kept per arena: the gateway's CPU
// for 1 MiB requests fell by about 40%, idle memory per session did not change (docs/benchmarks.md).
// An operator's own GLIBC_TUNABLES for malloc take precedence (then nothing is changed). Call it first
// in main(), before any thread is started.
void tune_malloc_for_large_messages();

}  // namespace cg
