#include <malloc.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/log.hpp"
#include "gateway/gateway.hpp"

namespace {
// Large messages (a 1 MiB body is about 1.4 MB of base64 in a tunnel frame, read into a growing buffer
// and decoded into another) are allocated and freed many times a second. With glibc's defaults such
// blocks are mmap'ed, or the arena's free top is trimmed once they are freed, so every message faults
// fresh zeroed pages in again (on a virtual machine each fault is expensive). Here blocks up to 4 MiB
// come from the arenas and up to 32 MiB of free top is kept per arena: the gateway's CPU for 1 MiB
// requests fell by about a third, idle memory per session did not change (docs/benchmarks.md). An
// operator's own GLIBC_TUNABLES for malloc take precedence. Runs before any thread is started.
void tune_malloc() {
  const char* t = std::getenv("GLIBC_TUNABLES");
  if (t && std::strstr(t, "glibc.malloc.")) return;
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
}
}  // namespace

int main(int argc, char** argv) {
  tune_malloc();
  cg::gateway::Config cfg;
  const auto cli = cg::gateway::parse_cli(argc, argv, cfg);
  if (cli.action != cg::gateway::CliAction::run) return cli.exit_code();
  cg::log::init(cfg.log_level, cfg.log_format);
  for (const auto& w : cli.warnings) cg::log::warn("configuration warning", {{"reason", w}});

  // Block the signals in every thread; the main thread waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  cg::gateway::Gateway gw(cfg);
  try {
    gw.start();
  } catch (const std::exception& e) {
    cg::log::error("startup failed", {{"reason", e.what()}});
    std::cerr << "cluster-gateway: " << e.what() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  cg::log::info("signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  gw.shutdown();
  return 0;
}
