// Where the agent listener takes an agent's client certificate chain from (--agent-auth-mode, as
// upstream PR #4340): the TLS handshake (mtls), or a header set by a trusted TLS-terminating proxy
// (forwarded-header: AWS ALB's X-Amzn-Mtls-Clientcert, Envoy/Istio's X-Forwarded-Client-Cert),
// accepted only from the proxy source ranges of --agent-auth-trusted-proxies. Either way the chain
// is then verified per CR exactly like a handshake certificate. Pure code: no I/O.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cg::gateway {

enum class AgentAuthMode { mtls, forwarded_header };
// "mtls" or "" (upstream treats an empty mode as mtls), "forwarded-header"; nullopt otherwise.
std::optional<AgentAuthMode> parse_agent_auth_mode(std::string_view s);
const char* to_string(AgentAuthMode m);

// upstream's DefaultForwardedHeaderName (Envoy/Istio).
inline constexpr const char* kDefaultForwardedHeader = "X-Forwarded-Client-Cert";

// --- trusted proxy source ranges -------------------------------------------------------------------
struct IpRange {
  bool v6 = false;
  std::array<uint8_t, 16> addr{};  // network address (first 4 bytes for IPv4)
  unsigned prefix = 0;  // bits
};
// A comma-separated list of CIDRs or single addresses ("10.0.0.0/8, 192.168.1.5, fc00::/7"); a bare
// address is a /32 or /128; host bits below the prefix are dropped (as Go's net.ParseCIDR does).
// Returns nullopt with `error` naming the bad entry.
std::optional<std::vector<IpRange>> parse_ip_ranges(std::string_view list, std::string& error);
// Whether the textual address (as Asio prints a peer: "10.1.2.3", "::1", "::ffff:10.1.2.3") lies in
// one of `ranges`. An IPv4-mapped IPv6 address is matched as the IPv4 address.
bool ip_in_ranges(const std::vector<IpRange>& ranges, std::string_view address);

// --- the forwarded certificate chain ---------------------------------------------------------------
struct ForwardedChain {
  std::string pem;  // the certificates found, leaf first, re-encoded as PEM (CERTIFICATE blocks only)
  std::string error;  // why none could be taken (empty when `pem` is set)
};
// Go's url.PathUnescape: %XX decoded, '+' kept; nullopt when a '%' is not followed by two hex digits.
std::optional<std::string> path_unescape(std::string_view s);
// Parses a forwarded header value exactly as upstream's parseForwardedCertChain (PR #4340), after the
// caller trimmed it:
//  - starting with "-----BEGIN": the whole value is URL-encoded PEM (AWS ALB), leaf first;
//  - otherwise Envoy's XFCC: the first comma-separated element (quote-aware) of `;`-separated
//    key=value pairs; its Chain (preferred) or Cert value, quotes stripped, is URL-encoded PEM.
// The PEM is URL-decoded (left as is when it is not valid %-encoding) and every CERTIFICATE block
// must parse; other blocks and text between blocks are skipped; at least one certificate.
ForwardedChain parse_forwarded_cert_chain(std::string_view value);

}  // namespace cg::gateway
