#include "common/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "common/thread_annotations.hpp"

namespace cg::metrics {
namespace {
using namespace prometheus;

struct M {
  std::shared_ptr<Registry> reg = std::make_shared<Registry>();
  Family<Gauge>& sessions =
      BuildGauge().Name("cluster_gateway_agent_sessions").Help("Live agent sessions by plane").Register(*reg);
  Family<Counter>& sessions_closed = BuildCounter()
                                         .Name("cluster_gateway_agent_sessions_closed_total")
                                         .Help("Agent sessions ended, by reason class")
                                         .Register(*reg);
  Family<Counter>& handshakes = BuildCounter()
                                    .Name("cluster_gateway_agent_handshakes_total")
                                    .Help("Agent connection attempts by result and reason")
                                    .Register(*reg);
  Family<Counter>& verify_fail = BuildCounter()
                                     .Name("cluster_gateway_cr_verification_failures_total")
                                     .Help("Per-CR certificate verification failures by reason")
                                     .Register(*reg);
  Family<Counter>& verify_cache = BuildCounter()
                                      .Name("cluster_gateway_cr_verification_cache_total")
                                      .Help("Per-CR certificate verifications answered from the cache (hit) or done (miss)")
                                      .Register(*reg);
  Counter& verify_cache_hit = verify_cache.Add({{"result", "hit"}});
  Counter& verify_cache_miss = verify_cache.Add({{"result", "miss"}});
  Family<Histogram>& rtt = BuildHistogram()
                               .Name("cluster_gateway_heartbeat_rtt_seconds")
                               .Help("WebSocket ping to pong round-trip time")
                               .Register(*reg);
  Histogram& rtt_h =
      rtt.Add({}, Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  Family<Counter>& bytes = BuildCounter()
                               .Name("cluster_gateway_agent_bytes_total")
                               .Help("WebSocket payload bytes exchanged with agents")
                               .Register(*reg);
  Counter& bytes_in = bytes.Add({{"direction", "in"}});
  Counter& bytes_out = bytes.Add({{"direction", "out"}});
  Family<Counter>& dropped = BuildCounter()
                                 .Name("cluster_gateway_agent_frames_dropped_total")
                                 .Help("Frames from agents that were dropped, by reason")
                                 .Register(*reg);
  Family<Counter>& tunnel = BuildCounter()
                                .Name("cluster_gateway_tunnel_requests_total")
                                .Help("Proxied requests by plane type, HTTP code and target")
                                .Register(*reg);
  Family<Histogram>& tunnel_lat = BuildHistogram()
                                      .Name("cluster_gateway_tunnel_request_duration_seconds")
                                      .Help("Proxied request latency through the agent tunnel")
                                      .Register(*reg);
  Family<Gauge>& inflight_f =
      BuildGauge().Name("cluster_gateway_tunnel_requests_in_flight").Help("Proxied requests waiting for an agent").Register(*reg);
  Gauge& inflight = inflight_f.Add({});
  Family<Gauge>& hs_waiting_f = BuildGauge()
                                    .Name("cluster_gateway_agent_handshakes_waiting")
                                    .Help("Agent connections waiting for a TLS handshake slot")
                                    .Register(*reg);
  Gauge& hs_waiting = hs_waiting_f.Add({});
  Counter& tls_resumed =
      BuildCounter()
          .Name("cluster_gateway_agent_tls_resumptions_total")
          .Help("Agent TLS handshakes that resumed a kept session (each authorized again against the current CRs)")
          .Register(*reg)
          .Add({});
  Family<Counter>& status =
      BuildCounter().Name("cluster_gateway_status_writes_total").Help("Status writes onto plane CRs by result").Register(*reg);
  Family<Counter>& source = BuildCounter()
                                .Name("cluster_gateway_plane_source_events_total")
                                .Help("Plane source events (watch restarts, relists, rescans)")
                                .Register(*reg);
  Family<Counter>& ca =
      BuildCounter().Name("cluster_gateway_ca_reloads_total").Help("CA bundle (re)loads for plane CRs by result").Register(*reg);
  Family<Counter>& mesh_forwards = BuildCounter()
                                       .Name("cluster_gateway_mesh_forwarded_requests_total")
                                       .Help("Internal API requests forwarded one hop to another replica, by result")
                                       .Register(*reg);
  Family<Counter>& mesh_updates = BuildCounter()
                                      .Name("cluster_gateway_mesh_directory_updates_total")
                                      .Help("Session directory updates received from peers, by answer status")
                                      .Register(*reg);
  Family<Counter>& tls = BuildCounter()
                             .Name("cluster_gateway_tls_reloads_total")
                             .Help("Server certificate / internal CA reloads by result")
                             .Register(*reg);
  Family<Counter>& rejected_docs = BuildCounter()
                                       .Name("cluster_gateway_plane_documents_rejected_total")
                                       .Help("Plane documents rejected by the plane source (file or Kubernetes)")
                                       .Register(*reg);
  Family<Gauge>& expiry_f = BuildGauge()
                                .Name("cluster_gateway_agent_certificate_expiry_seconds")
                                .Help("Seconds until the earliest live agent certificate expires (absent without sessions)")
                                .Register(*reg);
  Family<Gauge>& streams = BuildGauge()
                               .Name("cluster_gateway_tunnel_streams")
                               .Help("Open tunnel streams by kind (http, exec, wirelogs)")
                               .Register(*reg);
  Family<Counter>& stream_bytes = BuildCounter()
                                      .Name("cluster_gateway_tunnel_stream_bytes_total")
                                      .Help("Stream payload bytes by direction (to_caller, to_agent)")
                                      .Register(*reg);
  Family<Counter>& streams_ended = BuildCounter()
                                       .Name("cluster_gateway_tunnel_streams_ended_total")
                                       .Help("Ended tunnel streams by kind and reason")
                                       .Register(*reg);
  Family<Counter>& limits = BuildCounter()
                                .Name("cluster_gateway_limit_refusals_total")
                                .Help("Requests, streams or sessions refused by a configured limit")
                                .Register(*reg);
  Family<Counter>& internal_hs = BuildCounter()
                                     .Name("cluster_gateway_internal_handshakes_total")
                                     .Help("Internal API TLS handshakes by result")
                                     .Register(*reg);
  Family<Counter>& accept_errs = BuildCounter()
                                     .Name("cluster_gateway_accept_errors_total")
                                     .Help("Failed accept() calls by listener and reason (the listener pauses 100ms)")
                                     .Register(*reg);
  Family<Counter>& http_rejected = BuildCounter()
                                       .Name("cluster_gateway_http_requests_rejected_total")
                                       .Help("HTTP requests refused before routing, by listener and reason")
                                       .Register(*reg);
  Family<Counter>& closed_early =
      BuildCounter()
          .Name("cluster_gateway_connections_closed_early_total")
          .Help("Connections closed before any request, by listener and reason (limit, no_first_byte)")
          .Register(*reg);
  Family<Counter>& exceptions = BuildCounter()
                                    .Name("cluster_gateway_handler_exceptions_total")
                                    .Help("Exceptions that ended one connection (never the process), by where they were caught")
                                    .Register(*reg);
  Family<Counter>& proxy_path = BuildCounter()
                                    .Name("cluster_gateway_proxy_path_rejected_total")
                                    .Help("Proxy requests refused (400) for a path the agent would reinterpret, by reason")
                                    .Register(*reg);
  Family<Counter>& proxy_denied = BuildCounter()
                                      .Name("cluster_gateway_proxy_policy_denied_total")
                                      .Help("Proxy requests refused (403) by a deny-list or proxy policy rule")
                                      .Register(*reg);
  Family<Counter>& proxy_policy =
      BuildCounter().Name("cluster_gateway_proxy_policy_reloads_total").Help("Proxy policy file loads by result").Register(*reg);
  Family<Gauge>& build = BuildGauge().Name("cluster_gateway_build_info").Help("Build information").Register(*reg);
  cg::Mutex hook_mu;
  std::function<void()> hook CG_GUARDED_BY(hook_mu);

  M() { build.Add({{"version", CG_VERSION}}).Set(1); }
};

M& m() {
  static M* inst = new M();  // never destroyed: metrics may be touched during static destruction
  return *inst;
}

const std::vector<double>& latency_buckets() {
  static const std::vector<double> b{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return b;
}
}  // namespace

void session_opened(const std::string& t, const std::string& id) {
  m().sessions.Add({{"plane_type", t}, {"plane_id", id}}).Increment();
}
void session_closed(const std::string& t, const std::string& id, std::string_view reason) {
  m().sessions.Add({{"plane_type", t}, {"plane_id", id}}).Decrement();
  m().sessions_closed.Add({{"plane_type", t}, {"reason", std::string(reason)}}).Increment();
}
void handshake(const std::string& result, const std::string& reason) {
  m().handshakes.Add({{"result", result}, {"reason", reason}}).Increment();
}
void cr_verification_failure(const std::string& t, std::string_view reason) {
  m().verify_fail.Add({{"plane_type", t}, {"reason", std::string(reason)}}).Increment();
}
void cr_verification_cache(bool hit) { (hit ? m().verify_cache_hit : m().verify_cache_miss).Increment(); }
void heartbeat_rtt(double s) { m().rtt_h.Observe(s); }
void bytes_in(uint64_t n) { m().bytes_in.Increment(static_cast<double>(n)); }
void bytes_out(uint64_t n) { m().bytes_out.Increment(static_cast<double>(n)); }
void frames_dropped(const std::string& reason) { m().dropped.Add({{"reason", reason}}).Increment(); }
void tunnel_request(const std::string& t, int code, const std::string& target, double s) {
  m().tunnel.Add({{"plane_type", t}, {"code", std::to_string(code)}, {"target", target}}).Increment();
  m().tunnel_lat.Add({{"plane_type", t}}, latency_buckets()).Observe(s);
}
void tunnel_inflight(int d) { m().inflight.Increment(d); }
void stream_opened(const std::string& kind) { m().streams.Add({{"kind", kind}}).Increment(); }
void stream_ended(const std::string& kind, const std::string& reason) {
  m().streams.Add({{"kind", kind}}).Decrement();
  m().streams_ended.Add({{"kind", kind}, {"reason", reason}}).Increment();
}
void stream_bytes(const std::string& direction, uint64_t n) {
  m().stream_bytes.Add({{"direction", direction}}).Increment(static_cast<double>(n));
}
void handshakes_waiting(int64_t n) { m().hs_waiting.Set(static_cast<double>(n)); }
void tls_resumed() { m().tls_resumed.Increment(); }
void internal_handshake(const std::string& r) { m().internal_hs.Add({{"result", r}}).Increment(); }
void accept_error(const std::string& l, const std::string& r) {
  m().accept_errs.Add({{"listener", l}, {"reason", r}}).Increment();
}
void limit_refused(const std::string& limit) { m().limits.Add({{"limit", limit}}).Increment(); }
void http_request_rejected(const std::string& l, const std::string& r) {
  m().http_rejected.Add({{"listener", l}, {"reason", r}}).Increment();
}
void connection_closed_early(const std::string& l, const std::string& r) {
  m().closed_early.Add({{"listener", l}, {"reason", r}}).Increment();
}
void handler_exception(const std::string& w) { m().exceptions.Add({{"where", w}}).Increment(); }
void proxy_path_rejected(const std::string& r) { m().proxy_path.Add({{"reason", r}}).Increment(); }
void proxy_policy_denied(const std::string& r) { m().proxy_denied.Add({{"rule", r}}).Increment(); }
void proxy_policy_reload(const std::string& r) { m().proxy_policy.Add({{"result", r}}).Increment(); }
void status_write(const std::string& r) { m().status.Add({{"result", r}}).Increment(); }
void plane_source_event(const std::string& src, const std::string& ev) {
  m().source.Add({{"source", src}, {"event", ev}}).Increment();
}
void ca_reload(const std::string& r) { m().ca.Add({{"result", r}}).Increment(); }
void mesh_forward(const std::string& r) { m().mesh_forwards.Add({{"result", r}}).Increment(); }
void mesh_update(unsigned status) { m().mesh_updates.Add({{"code", std::to_string(status)}}).Increment(); }
void tls_reload(const std::string& r) { m().tls.Add({{"result", r}}).Increment(); }
void plane_document_rejected() { m().rejected_docs.Add({}).Increment(); }
void set_scrape_hook(std::function<void()> h) {
  M& mm = m();
  cg::MutexLock lk(mm.hook_mu);
  mm.hook = std::move(h);
}
void set_earliest_agent_cert_expiry(double s, bool any) {
  auto& g = m().expiry_f.Add({});
  if (any) g.Set(s);
  else m().expiry_f.Remove(&g);
}

std::string serialize() {
  {
    M& mm = m();
    cg::MutexLock lk(mm.hook_mu);
    if (mm.hook) mm.hook();
  }
  return TextSerializer().Serialize(m().reg->Collect());
}

}  // namespace cg::metrics
