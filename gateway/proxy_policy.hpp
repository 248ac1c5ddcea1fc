// Proxy access policy (--proxy-policy-file): which internal API caller, identified by its verified
// client certificate, may use which method on which proxied path. The decision is pure:
// parse_policy (YAML → Policy) and evaluate (policy, caller, method, target, canonical path →
// decision with the deciding rule's name), tested in tests/gateway/proxy_rules_test.cpp.
// PolicyFile holds the file's current policy and reloads it on change (docs/operations.md,
// "Proxy policy").
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "common/control_timer.hpp"
#include "common/thread_annotations.hpp"

struct x509_st;

namespace cg::gateway {

enum class PolicyAction { allow, deny };

// Who is calling: taken from the internal API connection's client certificate after the TLS
// handshake verified it. `verified` is false without a certificate (--internal-mtls=false).
struct CallerIdentity {
  bool verified = false;
  std::string common_name;  // subject CN
  std::vector<std::string> dns_names;  // subjectAltName DNS entries
  std::vector<std::string> uris;  // subjectAltName URI entries
};
// Reads CN, SAN DNS and SAN URI names (as UTF-8; invalid bytes become U+FFFD). nullptr: anonymous.
CallerIdentity identity_from_certificate(x509_st* cert);
// For log lines: {"commonName": ..., "dnsNames": [...], "uris": [...]} or "anonymous".
nlohmann::json identity_json(const CallerIdentity& id);

// One entry of a rule's `callers`: every field given must match (exact string comparison); a
// DNS or URI field matches when any of the certificate's SAN entries of that kind equals it.
struct CallerSelector {
  std::optional<std::string> common_name, dns_name, uri;
};

// A path pattern: '/'-separated segments. A segment `*` matches one segment, `*` inside a segment
// matches any characters within it (`secret*`), a segment `**` matches zero or more segments.
struct PathPattern {
  std::string text;
  std::vector<std::string> segments;
};

struct PolicyRule {
  std::string name;
  PolicyAction action = PolicyAction::deny;
  std::vector<CallerSelector> callers;  // empty: every caller, anonymous included
  std::vector<std::string> methods;  // empty: every method (upper case)
  std::vector<std::string> targets;  // empty: every target (k8s, monitoring, logs)
  std::vector<PathPattern> paths;  // at least one
};

// Rules in file order; the first rule that matches decides; no match: default_action.
struct Policy {
  PolicyAction default_action = PolicyAction::allow;
  std::vector<PolicyRule> rules;
};

struct PolicyDecision {
  PolicyAction action = PolicyAction::allow;
  std::string rule;  // the deciding rule's name, or "default" when no rule matched
};

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0.
size_t utf8_sequence_length(std::string_view s, size_t i);

class PolicyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses and validates a policy document; throws PolicyError naming the line and field at fault.
// Unknown keys are errors (a misspelt `callers` must not silently match every caller).
Policy parse_policy(std::string_view yaml_text);

// Compiles one pattern (throws PolicyError: must start with '/', no empty, '.' or '..' segments,
// no '?', '#', '%', '\', control bytes; '**' only as a whole segment; no trailing '/').
PathPattern compile_path_pattern(std::string_view text);
// `path` is a canonical resource path (canonicalize_proxy_path in proxy_rules.hpp): it starts
// with '/', has no empty segments and no trailing '/'.
bool match_path_pattern(const PathPattern& p, std::string_view path);
bool caller_matches(const CallerSelector& s, const CallerIdentity& id);

PolicyDecision evaluate(const Policy& policy, const CallerIdentity& caller, std::string_view method, std::string_view target,
                        std::string_view canonical_path);

// The policy file and its reload: the file's content hash is checked every `poll`; a changed
// content is parsed once it has read the same on two consecutive checks (a file caught half
// written is not loaded). A file that does not parse (or cannot be read) is refused with an error
// log line and cluster_gateway_proxy_policy_reloads_total{result="error"}; the last good policy
// stays in force. The checks run on a ControlTimer on `control` (the gateway's control thread).
class PolicyFile {
 public:
  // Loads the file now; throws PolicyError (with the path) when it cannot be read or parsed.
  PolicyFile(const boost::asio::any_io_executor& control, std::string path,
             std::chrono::milliseconds poll = std::chrono::seconds(1));
  ~PolicyFile();
  PolicyFile(const PolicyFile&) = delete;
  PolicyFile& operator=(const PolicyFile&) = delete;

  void start();  // the first check one `poll` from now, then every `poll`
  void stop();  // idempotent; a check in progress has finished when it returns
  std::shared_ptr<const Policy> current() const;
  const std::string& path() const { return path_; }
  // Counters for tests and logs: policies applied (the first load counts) and refused files.
  uint64_t applied() const;
  uint64_t refused() const;

 private:
  void tick();  // on the timer's strand
  void check_once() CG_EXCLUDES(mu_);

  std::string path_;
  std::chrono::milliseconds poll_;
  // Guards current_ and the counters (read from io threads and tests) and the hashes.
  mutable cg::Mutex mu_;
  std::shared_ptr<const Policy> current_ CG_GUARDED_BY(mu_);
  std::string applied_hash_ CG_GUARDED_BY(mu_), seen_hash_ CG_GUARDED_BY(mu_), refused_hash_ CG_GUARDED_BY(mu_);
  uint64_t applied_ CG_GUARDED_BY(mu_) = 0, refused_ CG_GUARDED_BY(mu_) = 0;
  ControlTimer timer_;
};

}  // namespace cg::gateway
