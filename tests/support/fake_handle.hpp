// A fake AgentHandle for registry and status tests: fixed identity and times, records closes and sends.
#pragma once
#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <vector>

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
  using cg::session::AgentHandle::close;
  void close(uint16_t code, std::string reason, cg::session::CloseCause cause) override {
    closing_ = true;
    close_code_ = code;
  }
  void set_draining() override { draining_ = true; }
  bool draining() const override { return draining_; }
  bool has_capability(std::string_view c) const override { return capabilities_.count(std::string(c)) > 0; }
  bool send_text(std::shared_ptr<const std::string> frame) override {
    if (closing_ || refuse_sends_) return false;
    ++sent_;
    std::lock_guard lk(frames_mu_);
    frames_.push_back(*frame);
    return true;
  }
  void set_capabilities(std::set<std::string> c) { capabilities_ = std::move(c); }  // before it is shared
  std::vector<std::string> frames() const {  // the text frames sent, in order
    std::lock_guard lk(frames_mu_);
    return frames_;
  }
  void set_closing(bool c) { closing_ = c; }
  void set_refuse_sends(bool r) { refuse_sends_ = r; }  // send_text fails as with a full write queue
  int close_code() const { return close_code_; }  // 0 until close() was called

 private:
  uint64_t serial_;
  std::string id_, type_, plane_;
  cg::SysTime connected_at_, last_seen_;
  cg::tls::PeerChain peer_;
  std::atomic<bool> closing_{false}, refuse_sends_{false}, draining_{false};
  std::atomic<int> close_code_{0};
  std::atomic<int> sent_{0};
  std::set<std::string> capabilities_;
  mutable std::mutex frames_mu_;
  std::vector<std::string> frames_;
};

}  // namespace cg::testing
