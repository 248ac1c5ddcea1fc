#include "mesh/summing_registry.hpp"

#include <algorithm>
#include <map>

namespace cg::mesh {

void hold_unseen_since_start(session::SessionReport& r, SysTime started, SysTime until) {
  const bool seen =
      r.connected_agents > 0 || (r.last_rise && *r.last_rise >= started) || (r.last_zero && *r.last_zero >= started);
  if (seen) return;
  r.moving_until = r.moving_until ? std::max(*r.moving_until, until) : until;
}

session::SessionReport SummingRegistry::held(session::SessionReport r) const {
  if (start_window_ > Duration::zero()) {
    const auto until = started_ + std::chrono::duration_cast<SysTime::duration>(start_window_);
    if (std::chrono::system_clock::now() < until) hold_unseen_since_start(r, started_, until);
  }
  return r;
}

session::SessionReport SummingRegistry::report(const std::string& plane_type, const std::string& cr_key) const {
  auto parts = dir_.reports(plane_type, cr_key, ReportScope::cr);
  parts.push_back(local_.report(plane_type, cr_key));
  if (local_moving_) parts.back().moving_until = local_moving_(ReportScope::cr, plane_type, cr_key);
  return held(parts.size() == 1 ? parts.front() : sum_reports(parts));
}

session::SessionReport SummingRegistry::plane_report(const std::string& plane_type, const std::string& plane_id) const {
  auto parts = dir_.reports(plane_type, plane_id, ReportScope::plane);
  parts.push_back(local_.plane_report(plane_type, plane_id));
  if (local_moving_) parts.back().moving_until = local_moving_(ReportScope::plane, plane_type, plane_id);
  return held(parts.size() == 1 ? parts.front() : sum_reports(parts));
}

std::shared_ptr<session::AgentHandle> SummingRegistry::pick(const std::string& plane_type, const std::string& plane_id,
                                                            const std::string& cr_key, session::PickMiss& miss,
                                                            std::string_view capability) {
  auto h = local_.pick(plane_type, plane_id, cr_key, miss, capability);
  if (!h) miss = std::min(miss, dir_.pick_miss(plane_type, plane_id, cr_key, capability));
  return h;
}

void SummingRegistry::subscribe(Listener l) {
  auto shared = std::make_shared<Listener>(std::move(l));
  {
    cg::MutexLock lk(mu_);
    listeners_.push_back(shared);
  }
  local_.subscribe([shared](const session::RegistryEvent& ev) { (*shared)(ev); });
}

std::set<std::pair<std::string, std::string>> SummingRegistry::planes() const {
  auto out = local_.planes();
  auto remote = dir_.planes();
  out.insert(remote.begin(), remote.end());
  return out;
}

bool SummingRegistry::plane_has_sessions(const std::string& plane_type, const std::string& plane_id) const {
  return local_.plane_has_sessions(plane_type, plane_id) || dir_.plane_has_sessions(plane_type, plane_id);
}

void SummingRegistry::remote_changed(const DirectoryChange& change) {
  std::map<std::string, session::RegistryEvent> by_type;
  for (const auto& [type, key] : change.crs) {
    auto& ev = by_type[type];
    ev.type = session::RegistryEvent::Type::authorization_changed;
    ev.plane_type = type;
    ev.crs.insert(key);
  }
  if (by_type.empty()) return;
  std::vector<std::shared_ptr<Listener>> ls;
  {
    cg::MutexLock lk(mu_);
    ls = listeners_;
  }
  for (const auto& [_, ev] : by_type)
    for (const auto& l : ls) (*l)(ev);
}

}  // namespace cg::mesh
