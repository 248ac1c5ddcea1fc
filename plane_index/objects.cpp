#include "plane_index/objects.hpp"

#include <openssl/evp.h>

#include <cctype>

namespace cg::plane {
namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// A value for an error message: quoted, control and non-ASCII bytes as \xNN, at most 80 characters.
std::string quoted(std::string_view v) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  size_t shown = 0;
  for (char ch : v) {
    if (shown++ == 80) {
      out += "...";
      break;
    }
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '\\' || c == '\'') {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out + "'";
}

bool b64_decode_strict(const std::string& in, std::string& out) {
  std::string s;
  for (char c : in)
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  if (s.size() % 4 != 0) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return false;
  out.assign(s.size() / 4 * 3, '\0');
  if (s.empty()) return true;
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  if (n < 0) return false;
  size_t pad = (s.back() == '=') + (s.size() > 1 && s[s.size() - 2] == '=');
  out.resize(static_cast<size_t>(n) - pad);
  return true;
}

const nlohmann::json* field(const nlohmann::json& obj, const char* name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_string(const nlohmann::json& obj, const char* name, std::string& out, std::string& err, const std::string& path) {
  const auto* f = field(obj, name);
  if (!f) return true;
  if (!f->is_string()) {
    err = path + name + " must be a string";
    return false;
  }
  out = f->get<std::string>();
  return true;
}

ParsedObject parse_secret(const nlohmann::json& obj, const nlohmann::json& meta) {
  ParsedObject r;
  SecretObj s;
  s.name = meta.value("name", "");
  if (!get_string(meta, "namespace", s.ns, r.error, "metadata.")) return r;
  if (s.ns.empty()) s.ns = "default";
  if (r.error = dns1123_subdomain_problem("metadata.name", s.name); !r.error.empty()) return r;
  if (r.error = dns1123_label_problem("metadata.namespace", s.ns); !r.error.empty()) return r;
  if (const auto* rv = field(meta, "resourceVersion"); rv && rv->is_string()) s.resource_version = rv->get<std::string>();
  if (const auto* d = field(obj, "data")) {
    if (!d->is_object()) {
      r.error = "Secret data must be a map";
      return r;
    }
    for (auto it = d->begin(); it != d->end(); ++it) {
      if (it->is_null()) continue;
      if (!it->is_string()) {
        r.error = "Secret data." + it.key() + " must be a base64 string";
        return r;
      }
      std::string dec;
      if (!b64_decode_strict(it->get<std::string>(), dec)) {
        r.error = "Secret data." + it.key() + " is not valid base64";
        return r;
      }
      s.data[it.key()] = dec;
    }
  }
  if (const auto* sd = field(obj, "stringData")) {
    if (!sd->is_object()) {
      r.error = "Secret stringData must be a map";
      return r;
    }
    for (auto it = sd->begin(); it != sd->end(); ++it) {
      if (!it->is_string()) {
        r.error = "Secret stringData." + it.key() + " must be a string";
        return r;
      }
      s.data[it.key()] = it->get<std::string>();
    }
  }
  r.secret = std::move(s);
  return r;
}
}  // namespace

bool is_dns1123_label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!lower_alnum(s.front()) || !lower_alnum(s.back())) return false;
  for (char c : s)
    if (!lower_alnum(c) && c != '-') return false;
  return true;
}

bool is_dns1123_subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (size_t start = 0;;) {
    size_t dot = s.find('.', start);
    std::string_view part = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty() || !lower_alnum(part.front()) || !lower_alnum(part.back())) return false;
    for (char c : part)
      if (!lower_alnum(c) && c != '-') return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

std::string dns1123_subdomain_problem(std::string_view field, std::string_view v) {
  if (is_dns1123_subdomain(v)) return {};
  std::string head = std::string(field) + " " + quoted(v) + " is invalid: ";
  if (v.size() > 253) return head + "must be no more than 253 characters";
  return head +
         "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
         "and must start and end with an alphanumeric character";
}

std::string dns1123_label_problem(std::string_view field, std::string_view v) {
  if (is_dns1123_label(v)) return {};
  std::string head = std::string(field) + " " + quoted(v) + " is invalid: ";
  if (v.size() > 63) return head + "must be no more than 63 characters";
  return head +
         "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
         "and must start and end with an alphanumeric character";
}

ParsedObject parse_object(const nlohmann::json& obj) {
  ParsedObject r;
  if (!obj.is_object()) {
    r.error = "document is not a mapping";
    return r;
  }
  std::string api, kind;
  if (!get_string(obj, "apiVersion", api, r.error, "") || !get_string(obj, "kind", kind, r.error, "")) return r;
  if (kind.empty()) {
    r.error = "kind is missing";
    return r;
  }
  const auto* meta = field(obj, "metadata");
  if (!meta || !meta->is_object()) {
    r.error = "metadata is missing";
    return r;
  }
  std::string name;
  if (!get_string(*meta, "name", name, r.error, "metadata.")) return r;
  if (name.empty()) {
    r.error = "metadata.name is missing";
    return r;
  }
  if (kind == "Secret") {
    if (api != "v1") {
      r.error = "Secret must have apiVersion v1, not '" + api + "'";
      return r;
    }
    return parse_secret(obj, *meta);
  }
  auto k = kind_from_name(kind);
  if (!k) {
    r.error = "unsupported kind '" + kind + "' (expected one of the six plane kinds or Secret)";
    return r;
  }
  if (api != kApiVersion) {
    r.error = kind + " must have apiVersion " + std::string(kApiVersion) + ", not '" + api + "'";
    return r;
  }
  PlaneCR cr;
  cr.ref.kind = *k;
  cr.ref.name = name;
  std::string ns;
  if (!get_string(*meta, "namespace", ns, r.error, "metadata.")) return r;
  if (info(*k).cluster_scoped) ns.clear();  // ignored for cluster-scoped kinds, as the API server does
  else if (ns.empty()) ns = "default";
  if (r.error = dns1123_subdomain_problem("metadata.name", name); !r.error.empty()) return r;
  if (!ns.empty()) {
    if (r.error = dns1123_label_problem("metadata.namespace", ns); !r.error.empty()) return r;
  }
  cr.ref.ns = ns;
  if (const auto* g = field(*meta, "generation")) {
    if (!g->is_number_integer() || g->get<int64_t>() < 1) {
      r.error = "metadata.generation must be a positive integer";
      return r;
    }
    cr.generation = g->get<int64_t>();
  }
  if (const auto* rv = field(*meta, "resourceVersion"); rv && rv->is_string()) cr.resource_version = rv->get<std::string>();
  if (const auto* ann = field(*meta, "annotations")) {
    if (!ann->is_object()) {
      r.error = "metadata.annotations must be a map";
      return r;
    }
    for (auto it = ann->begin(); it != ann->end(); ++it)
      if (it->is_string()) cr.annotations[it.key()] = it->get<std::string>();
  }
  const auto* spec = field(obj, "spec");
  if (spec && !spec->is_object()) {
    r.error = "spec must be a mapping";
    return r;
  }
  if (spec) cr.spec = *spec;
  std::string plane_id;
  if (spec && !get_string(*spec, "planeID", plane_id, r.error, "spec.")) return r;
  cr.plane_id_explicit = !plane_id.empty();
  cr.plane_id = plane_id.empty() ? name : plane_id;
  if (spec) {
    if (const auto* ca = field(*spec, "clusterAgent")) {
      if (!ca->is_object()) {
        r.error = "spec.clusterAgent must be a mapping";
        return r;
      }
      if (const auto* cca = field(*ca, "clientCA")) {
        if (!cca->is_object()) {
          r.error = "spec.clusterAgent.clientCA must be a mapping";
          return r;
        }
        cr.has_client_ca = true;
        std::string v;
        if (!get_string(*cca, "value", v, r.error, "spec.clusterAgent.clientCA.")) return r;
        if (!v.empty()) cr.ca_value = v;
        if (const auto* skr = field(*cca, "secretKeyRef")) {
          if (!skr->is_object()) {
            r.error = "spec.clusterAgent.clientCA.secretKeyRef must be a mapping";
            return r;
          }
          SecretKeyRef ref;
          const std::string p = "spec.clusterAgent.clientCA.secretKeyRef.";
          if (!get_string(*skr, "name", ref.name, r.error, p) || !get_string(*skr, "namespace", ref.ns, r.error, p) ||
              !get_string(*skr, "key", ref.key, r.error, p))
            return r;
          cr.ca_secret = ref;
        }
      }
    }
    if (const auto* o = field(*spec, "observabilityPlaneRef")) {
      if (!o->is_object()) {
        r.error = "spec.observabilityPlaneRef must be a mapping";
        return r;
      }
      ObservabilityRef ref;
      if (!get_string(*o, "kind", ref.kind, r.error, "spec.observabilityPlaneRef.") ||
          !get_string(*o, "name", ref.name, r.error, "spec.observabilityPlaneRef."))
        return r;
      cr.obs_ref = ref;
    }
  }
  if (const auto* st = field(obj, "status")) cr.status = *st;
  r.cr = std::move(cr);
  return r;
}

}  // namespace cg::plane
