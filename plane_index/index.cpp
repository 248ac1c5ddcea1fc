#include "plane_index/index.hpp"
#include "common/json_text.hpp"

#include "common/log.hpp"
#include "common/metrics.hpp"

namespace cg::plane {
namespace {

std::string secret_key(const std::string& ns, const std::string& name) { return ns + "/" + name; }

// Everything status and authorization depend on, to decide whether a CR changed.
struct Fingerprint {
  std::string plane_id;
  std::string ca;
  std::string status_inputs;
};

Fingerprint fingerprint(const CrEntry& e) {
  Fingerprint f;
  f.plane_id = e.cr.plane_id;
  f.ca = e.ca ? e.ca->fingerprint() : "error:" + e.ca_error;
  nlohmann::json s = {{"gen", e.cr.generation},
                      {"problems", e.spec_problems},
                      {"obs", e.observability_problem},
                      {"display", e.cr.display_name()},
                      {"ca", f.ca},
                      {"planeID", e.cr.plane_id}};
  f.status_inputs = to_json_text(s);
  return f;
}
}  // namespace

void PlaneIndex::add_listener(Listener l) {
  cg::MutexLock lk(mu_);
  listeners_.push_back(std::move(l));
}

void PlaneIndex::replace(const PlaneWorld& world) {
  std::map<std::string, const SecretObj*> secrets;
  for (const auto& s : world.secrets) secrets[secret_key(s.ns, s.name)] = &s;

  std::set<std::string> cluster_obs;
  std::set<std::string> ns_obs;
  for (const auto& c : world.crs) {
    if (c.ref.kind == Kind::ClusterObservabilityPlane) cluster_obs.insert(c.ref.name);
    if (c.ref.kind == Kind::ObservabilityPlane) ns_obs.insert(c.ref.ns + "/" + c.ref.name);
  }

  std::map<CrRef, std::shared_ptr<const CrEntry>> next;
  std::map<std::string, std::shared_ptr<const tls::CaStore>> next_cache;
  std::map<std::string, std::shared_ptr<const tls::CaStore>> old_cache;
  {
    cg::MutexLock lk(mu_);
    old_cache = ca_cache_;
  }
  auto load_bundle = [&](const std::string& bundle, std::string& err) -> std::shared_ptr<const tls::CaStore> {
    if (auto it = next_cache.find(bundle); it != next_cache.end()) return it->second;
    if (auto it = old_cache.find(bundle); it != old_cache.end()) {
      next_cache[bundle] = it->second;
      return it->second;
    }
    auto st = tls::CaStore::from_bundle(bundle, err);
    metrics::ca_reload(st ? "ok" : "error");
    if (st) next_cache[bundle] = st;
    return st;
  };

  for (const auto& c : world.crs) {
    auto e = std::make_shared<CrEntry>();
    e->cr = c;
    const auto& ki = info(c.ref.kind);
    // Spec validity.
    if (!is_valid_plane_id(c.plane_id)) {
      e->spec_problems.push_back((c.plane_id_explicit ? "spec.planeID '" : "planeID (from metadata.name) '") + c.plane_id +
                                 "' is invalid: it must be at most 63 characters and match "
                                 "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    }
    bool is_obs_kind = c.ref.kind == Kind::ObservabilityPlane || c.ref.kind == Kind::ClusterObservabilityPlane;
    if (c.obs_ref && !is_obs_kind) {
      const std::string kind = c.obs_ref->kind.empty() ? "ClusterObservabilityPlane" : c.obs_ref->kind;
      bool kind_ok = kind == "ClusterObservabilityPlane" || (!ki.cluster_scoped && kind == "ObservabilityPlane");
      if (!kind_ok) {
        e->spec_problems.push_back("spec.observabilityPlaneRef.kind '" + kind + "' is invalid: " + std::string(ki.name) +
                                   (ki.cluster_scoped ? " can only reference a ClusterObservabilityPlane"
                                                      : " can reference an ObservabilityPlane or a ClusterObservabilityPlane"));
      } else if (c.obs_ref->name.empty()) {
        e->spec_problems.push_back("spec.observabilityPlaneRef.name is required");
      } else if (kind == "ClusterObservabilityPlane" && !cluster_obs.count(c.obs_ref->name)) {
        e->observability_problem = "ClusterObservabilityPlane '" + c.obs_ref->name + "' not found";
      } else if (kind == "ObservabilityPlane" && !ns_obs.count(c.ref.ns + "/" + c.obs_ref->name)) {
        e->observability_problem = "ObservabilityPlane '" + c.ref.ns + "/" + c.obs_ref->name + "' not found";
      }
    }
    // CA bundle.
    using tls::CaState;
    if (!c.has_client_ca) {
      e->ca_error = "spec.clusterAgent.clientCA is not set";
      e->ca_state = CaState::not_configured;
    } else if (c.ca_value) {
      e->ca = load_bundle(*c.ca_value, e->ca_error);
      if (!e->ca) e->ca_error = "clientCA.value: " + e->ca_error;
      e->ca_state = e->ca ? CaState::loaded : CaState::unparseable;
    } else if (c.ca_secret) {
      const auto& r = *c.ca_secret;
      std::string ns = r.ns.empty() ? c.ref.ns : r.ns;
      if (r.name.empty() || r.key.empty()) {
        e->ca_error = "clientCA.secretKeyRef needs both name and key";
      } else if (ns.empty()) {
        e->ca_error = "clientCA.secretKeyRef.namespace is required for the cluster-scoped " + std::string(ki.name);
      } else if (auto bad_name = dns1123_subdomain_problem("clientCA.secretKeyRef.name", r.name); !bad_name.empty()) {
        e->ca_error = bad_name;  // never looked up, never part of an API path
      } else if (auto bad_ns = dns1123_label_problem("clientCA.secretKeyRef.namespace", ns); !bad_ns.empty()) {
        e->ca_error = bad_ns;
      } else if (auto it = secrets.find(secret_key(ns, r.name)); it == secrets.end()) {
        e->ca_error = "secret " + ns + "/" + r.name + " not found";
      } else if (auto kt = it->second->data.find(r.key); kt == it->second->data.end()) {
        e->ca_error = "key '" + r.key + "' not found in secret " + ns + "/" + r.name;
      } else if (kt->second.empty()) {
        e->ca_error = "key '" + r.key + "' in secret " + ns + "/" + r.name + " is empty";
      } else {
        e->ca = load_bundle(kt->second, e->ca_error);
        if (!e->ca) e->ca_error = "secret " + ns + "/" + r.name + " key '" + r.key + "': " + e->ca_error;
        e->ca_state = e->ca ? CaState::loaded : CaState::unparseable;
      }
    } else {
      e->ca_error = "clientCA sets neither value nor secretKeyRef";
    }
    next[c.ref] = std::move(e);
  }

  IndexChange change;
  std::vector<Listener> listeners;
  {
    cg::MutexLock lk(mu_);
    for (const auto& [ref, e] : next) {
      auto it = crs_.find(ref);
      Fingerprint nf = fingerprint(*e);
      if (it == crs_.end()) {
        change.changed.insert(ref);
        change.planes.insert({ref.plane_type(), e->cr.plane_id});
        continue;
      }
      Fingerprint of = fingerprint(*it->second);
      if (of.status_inputs != nf.status_inputs) change.changed.insert(ref);
      if (of.plane_id != nf.plane_id || of.ca != nf.ca) {
        change.planes.insert({ref.plane_type(), e->cr.plane_id});
        change.planes.insert({ref.plane_type(), it->second->cr.plane_id});
      }
    }
    for (const auto& [ref, e] : crs_) {
      if (!next.count(ref)) {
        change.removed.insert(ref);
        change.planes.insert({ref.plane_type(), e->cr.plane_id});
      }
    }
    crs_ = std::move(next);
    ca_cache_ = std::move(next_cache);
    by_plane_.clear();
    for (const auto& [ref, e] : crs_) by_plane_[{ref.plane_type(), e->cr.plane_id}].push_back(ref);
    bool first = !synced_;
    synced_ = true;
    if (first || !change.changed.empty() || !change.removed.empty() || !change.planes.empty()) ++version_;
    change.version = version_;
    listeners = listeners_;
  }
  if (change.changed.empty() && change.removed.empty() && change.planes.empty()) return;
  for (const auto& ref : change.changed) {
    auto e = find(ref);
    if (!e) continue;
    nlohmann::json f = {{"cr", ref.auth_key()},
                        {"kind", std::string(info(ref.kind).name)},
                        {"planeType", ref.plane_type()},
                        {"planeID", e->cr.plane_id},
                        {"generation", e->cr.generation}};
    if (e->ca) {
      f["caCertificates"] = e->ca->cert_count();
      f["caFingerprint"] = e->ca->fingerprint().substr(0, 16);
    } else {
      f["reason"] = e->ca_error;
    }
    if (!e->spec_problems.empty()) f["specProblems"] = e->spec_problems;
    log::info(e->ca ? "plane CR loaded" : "plane CR loaded without a usable client CA", f);
  }
  for (const auto& ref : change.removed)
    log::info("plane CR removed",
              {{"cr", ref.auth_key()}, {"kind", std::string(info(ref.kind).name)}, {"planeType", ref.plane_type()}});
  for (const auto& l : listeners) l(change);
}

std::vector<tls::Anchor> PlaneIndex::anchors(const std::string& plane_type, const std::string& plane_id) const {
  std::vector<tls::Anchor> out;
  cg::MutexLock lk(mu_);
  auto bp = by_plane_.find({plane_type, plane_id});
  if (bp == by_plane_.end()) return out;
  // Cluster-scoped kinds first, then namespaced ones (all_kinds() order is cluster, namespaced).
  for (const auto& ki : all_kinds()) {
    if (ki.plane_type != plane_type) continue;
    for (const auto& ref : bp->second) {  // in CrRef order, as crs_ iterates
      if (ref.kind != ki.kind) continue;
      const auto& e = crs_.at(ref);
      out.push_back({ref.auth_key(), e->ca, e->ca_error, e->ca_state});
    }
  }
  return out;
}

std::vector<std::shared_ptr<const CrEntry>> PlaneIndex::all() const {
  cg::MutexLock lk(mu_);
  std::vector<std::shared_ptr<const CrEntry>> out;
  out.reserve(crs_.size());
  for (const auto& [_, e] : crs_) out.push_back(e);
  return out;
}

std::shared_ptr<const CrEntry> PlaneIndex::find(const CrRef& ref) const {
  cg::MutexLock lk(mu_);
  auto it = crs_.find(ref);
  return it == crs_.end() ? nullptr : it->second;
}

uint64_t PlaneIndex::version() const {
  cg::MutexLock lk(mu_);
  return version_;
}

bool PlaneIndex::synced() const {
  cg::MutexLock lk(mu_);
  return synced_;
}

}  // namespace cg::plane
