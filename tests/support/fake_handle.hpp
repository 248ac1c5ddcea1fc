// A fake AgentHandle for registry and status tests: fixed identity and times, records closes and sends.
#pragma once
#include <atomic>
#include <string>

#include "session/registry.hpp"

namespace cg::testing {

class FakeHandle final : public cg::session::AgentHandle {
 public:
  FakeHandle(uint64_t serial, std::string plane_type, std::string plane_id, cg::SysTime connected_at, cg::SysTime last_seen)
      : serial_(serial),
        id_("conn-" + std::to_string(serial)),
        type_(std::move(plane_type)),
        plane_(std::move(plane_id)),
        connected_at_(connected_at),
        last_seen_(last_seen) {}
  uint64_t serial() const override { return serial_; }
  const std::string& connection_id() const override { return id_; }
  const std::string& plane_type() const override { return type_; }
  const std::string& plane_id() const override { return plane_; }
  cg::SysTime connected_at() const override { return connected_at_; }
  cg::SysTime last_seen() const override { return last_seen_; }
  const cg::tls::PeerChain& peer() const override { return peer_; }
  bool closing() const override { return closing_; }
  void close(uint16_t code, std::string reason) override {
    closing_ = true;
    close_code_ = code;
  }
  bool send_text(std::shared_ptr<const std::string> frame) override {
    if (closing_) return false;
    ++sent_;
    return true;
  }
  void set_closing(bool c) { closing_ = c; }

 private:
  uint64_t serial_;
  std::string id_, type_, plane_;
  cg::SysTime connected_at_, last_seen_;
  cg::tls::PeerChain peer_;
  std::atomic<bool> closing_{false};
  std::atomic<int> close_code_{0};
  std::atomic<int> sent_{0};
};

}  // namespace cg::testing
