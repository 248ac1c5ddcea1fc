#include <csignal>
#include <iostream>

#include "common/log.hpp"
#include "common/malloc_tuning.hpp"
#include "gateway/gateway.hpp"

int main(int argc, char** argv) {
  cg::tune_malloc_for_large_messages();
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
