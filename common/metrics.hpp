// Prometheus metrics (prometheus-cpp core registry, served by the gateway's own health listener).
// Names follow Prometheus conventions: cluster_gateway_ prefix, _total counters, base units.
// No label takes unbounded values: plane_id is bounded by the plane CRs (a session exists only
// for a configured plane); request ids, certificate serials and peer-supplied strings never
// become labels.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace cg::metrics {

// Agent sessions.
void session_opened(const std::string& plane_type, const std::string& plane_id);
// reason: the label of the session's close cause (session::metric_label(CloseCause)), never derived from text.
void session_closed(const std::string& plane_type, const std::string& plane_id, std::string_view reason);
// result: accepted | rejected; reason: ok | not_found | bad_request | no_client_certificate | no_crs |
// not_authorized | not_websocket | header_too_large | tls_handshake_failed | limit | handshake_timeout |
// request_not_read | forwarded_untrusted_source | forwarded_ambiguous | forwarded_header_malformed
void handshake(const std::string& result, const std::string& reason);
// Connections waiting for a TLS handshake slot (--max-concurrent-handshakes).
void handshakes_waiting(int64_t n);
// An agent's TLS handshake resumed a session the gateway kept (authorized again before the upgrade).
void tls_resumed();
// Internal API TLS handshakes (result: accepted | rejected).
void internal_handshake(const std::string& result);
// accept() failures by listener (agent | internal | health) and reason (emfile | enfile | enobufs | other).
void accept_error(const std::string& listener, const std::string& reason);
// reason: unknown_authority | expired | not_yet_valid | no_client_auth | insecure_algorithm | ca_not_loaded | other,
// the label of the verifier's failure enum (tls::metric_label(tls::VerifyFailure)), never derived from text.
void cr_verification_failure(const std::string& plane_type, std::string_view reason);
void cr_verification_cache(bool hit);  // cluster_gateway_cr_verification_cache_total{result}
void heartbeat_rtt(double seconds);
void bytes_in(uint64_t n);
void bytes_out(uint64_t n);
void frames_dropped(const std::string& reason);  // invalid | unknown_request | wrong_session | unknown_stream

// Tunnel.
void tunnel_request(const std::string& plane_type, int code, const std::string& target, double seconds);
void tunnel_inflight(int delta);
// Streams (kind: http | exec | wirelogs; reason: completed | agent_error | caller_gone | connection_closed |
// timeout | flow_control | too_slow | send_failed).
void stream_opened(const std::string& kind);
void stream_ended(const std::string& kind, const std::string& reason);
void stream_bytes(const std::string& direction, uint64_t n);  // to_caller | to_agent
// limit: sessions | plane_sessions | pending_per_session | streams_per_session | connections_<listener>
void limit_refused(const std::string& limit);
// Requests refused before routing (listener: internal | health; reason: malformed | no_host |
// transfer_encoding | header_too_large | body_too_large | request_id | target).
void http_request_rejected(const std::string& listener, const std::string& reason);
// Connections a listener closed before any request (reason: limit | no_first_byte).
void connection_closed_early(const std::string& listener, const std::string& reason);
// An exception escaped a handler and ended one connection (where: io_loop | agent_frame | internal_api).
void handler_exception(const std::string& where);
// /api/proxy paths refused before any rule (reason: a row of kPathFormRules in gateway/proxy_rules.cpp),
// requests denied by a deny-list or policy rule (rule: builtin:<name>, a policy rule's name, or
// default), and --proxy-policy-file loads (result: ok | error).
void proxy_path_rejected(const std::string& reason);
void proxy_policy_denied(const std::string& rule);
void proxy_policy_reload(const std::string& result);

// Status writing and plane sources.
void status_write(const std::string& result);  // ok | error | gone
void plane_source_event(const std::string& source, const std::string& event);  // e.g. kubernetes/relist
void ca_reload(const std::string& result);  // ok | error (plane CR CA bundles)
// Several replicas: a forwarded request's result (answered | unreachable), a received directory update's status.
void mesh_forward(const std::string& result);
void mesh_update(unsigned status);
void tls_reload(const std::string& result);  // ok | error (server certificate, internal CA)
void plane_document_rejected();

// Values computed at scrape time (earliest agent certificate expiry, ...).
void set_scrape_hook(std::function<void()> hook);
void set_earliest_agent_cert_expiry(double seconds_from_now, bool any);

// Text exposition format (version 0.0.4).
std::string serialize();

}  // namespace cg::metrics
