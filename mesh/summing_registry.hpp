// The registry as the rest of the gateway sees it with several replicas: this replica's own sessions
// (routing, sessions_of, all, …: local only) plus the other replicas' reports from the session
// directory, summed per CR and per plane (status, the plane status endpoints, 403-vs-502).
#pragma once
#include <functional>
#include <vector>

#include "common/thread_annotations.hpp"
#include "mesh/directory.hpp"
#include "session/registry.hpp"

namespace cg::mesh {

// A replica that started at `started` holds, until `until`, the connected → disconnected write of a
// summed report that shows nothing since its start (no agent now, and no rise or fall seen after
// `started`): agents a replica drained before this one started (its own previous instance, in a
// rolling restart) may still be on their way, and the reports that said so died with that replica.
// A report with any evidence since the start (an agent now, or a fall this replica's view saw) is
// left alone, so a close observed after the start is written as promptly as ever. Pure.
void hold_unseen_since_start(session::SessionReport& r, SysTime started, SysTime until);

class SummingRegistry final : public session::SessionRegistry {
 public:
  // `local_moving`: until when this replica's agents of a CR (scope cr: auth key; plane: planeID) are
  // moving (MeshOptions; empty: never).
  using Moving = std::function<std::optional<SysTime>(ReportScope, const std::string& plane_type, const std::string& key)>;
  // `start_window`: for this long after construction, summed CR and plane reports go through
  // hold_unseen_since_start (zero: never).
  SummingRegistry(session::SessionRegistry& local, const Directory& dir, Moving local_moving = {},
                  Duration start_window = Duration::zero())
      : local_(local), dir_(dir), local_moving_(std::move(local_moving)), start_window_(start_window) {}

  bool add(std::shared_ptr<session::AgentHandle> h, std::set<std::string> authorized) override {
    return local_.add(std::move(h), std::move(authorized));
  }
  void close_admission() override { local_.close_admission(); }
  bool begin_close(const session::AgentHandle& h, session::CloseCause cause) override { return local_.begin_close(h, cause); }
  bool remove(const session::AgentHandle& h) override { return local_.remove(h); }
  std::pair<std::set<std::string>, std::set<std::string>> set_authorized(const session::AgentHandle& h,
                                                                         std::set<std::string> authorized) override {
    return local_.set_authorized(h, std::move(authorized));
  }
  std::vector<session::SessionView> sessions_of(const std::string& t, const std::string& id) const override {
    return local_.sessions_of(t, id);
  }
  size_t plane_session_count(const std::string& t, const std::string& id) const override {
    return local_.plane_session_count(t, id);
  }
  std::vector<session::SessionView> all() const override { return local_.all(); }
  size_t size() const override { return local_.size(); }
  void heard(const session::AgentHandle& h, SysTime at) override { local_.heard(h, at); }
  session::SessionReport report(const std::string& plane_type, const std::string& cr_key) const override;
  session::SessionReport plane_report(const std::string& plane_type, const std::string& plane_id) const override;
  // Local sessions only (forwarding to another replica is the internal API's decision). When none
  // is picked, `miss` is the most telling of the local and the other replicas' reasons
  // (Directory::pick_miss: `moving` when one of them holds a session for the CR, draining or not).
  std::shared_ptr<session::AgentHandle> pick(const std::string& plane_type, const std::string& plane_id,
                                             const std::string& cr_key, session::PickMiss& miss,
                                             std::string_view capability = {}) override;
  void subscribe(Listener l) override CG_EXCLUDES(mu_);
  std::set<std::pair<std::string, std::string>> planes() const override;
  bool plane_has_sessions(const std::string& plane_type, const std::string& plane_id) const override;

  // The directory changed (updates applied, replicas dropped): listeners get one
  // authorization_changed event per plane type with the CRs concerned.
  void remote_changed(const DirectoryChange& change) CG_EXCLUDES(mu_);

 private:
  session::SessionRegistry& local_;
  const Directory& dir_;
  Moving local_moving_;
  const Duration start_window_;
  const SysTime started_ = std::chrono::system_clock::now();
  session::SessionReport held(session::SessionReport r) const;
  mutable cg::Mutex mu_;  // a leaf: guards the listener list (listeners are called without it)
  std::vector<std::shared_ptr<Listener>> listeners_ CG_GUARDED_BY(mu_);
};

}  // namespace cg::mesh
