// The pure pieces split out of the internal API connection: what the agent is asked for a wirelogs
// or exec route (gateway/route_requests.*) and the Server-Sent Event framing of stream data
// (gateway/stream_relay.*).
#include <catch2/catch.hpp>

#include "gateway/route_requests.hpp"
#include "gateway/stream_relay.hpp"

using cg::gateway::ExecRoute;
using cg::gateway::WirelogsRoute;

TEST_CASE("sse_event: one data line per payload line, ended by a blank line") {
  using cg::gateway::sse_event;
  CHECK(sse_event("{\"a\":1}") == "data: {\"a\":1}\n\n");
  CHECK(sse_event("one\ntwo") == "data: one\ndata: two\n\n");
  // One trailing newline is the payload's end, not an empty line; CR before LF is dropped.
  CHECK(sse_event("one\n") == "data: one\n\n");
  CHECK(sse_event("one\r\ntwo\r\n") == "data: one\ndata: two\n\n");
  CHECK(sse_event("one\n\n") == "data: one\ndata: \n\n");
  CHECK(sse_event("") == "data: \n\n");
}

TEST_CASE("route_requests: wirelogs asks hubble for an upgraded /wirelogs stream") {
  WirelogsRoute r;
  r.plane_type = "dataplane";
  r.plane_id = "dp1";
  r.cr_key = "org/dp";
  r.ns = "team a";
  r.environment = "dev&test";
  auto sr = cg::gateway::wirelogs_stream_request(r, "req-1", std::chrono::seconds(7));
  CHECK(sr.mode == cg::session::StreamRequest::Mode::upgrade);
  CHECK(sr.kind == "wirelogs");
  CHECK(sr.upgrade_proto == "hubble/v1");
  CHECK(sr.request.target == "hubble");
  CHECK(sr.request.method == "GET");
  CHECK(sr.request.path == "/wirelogs");
  CHECK(sr.request.gateway_request_id == "req-1");
  CHECK(sr.first_timeout == std::chrono::seconds(7));
  // Empty project and component are left out; values are percent-encoded.
  CHECK(sr.request.query == "namespace=team%20a&environment=dev%26test");
  r.project = "p";
  r.component = "c";
  CHECK(cg::gateway::wirelogs_stream_request(r, "", {}).request.query ==
        "namespace=team%20a&environment=dev%26test&project=p&component=c");
}

TEST_CASE("route_requests: exec path and query in upstream's parameter order") {
  ExecRoute r;
  r.pod_namespace = "ns1";
  r.pod_name = "pod-0";
  CHECK(cg::gateway::exec_path(r) == "/api/v1/namespaces/ns1/pods/pod-0/exec");
  CHECK(cg::gateway::exec_query(r) == "stdout=true&stderr=true");
  r.stdin_ = "true";
  r.tty = "false";
  r.container = "main";
  r.command = {"sh", "-c", "echo a b"};
  CHECK(cg::gateway::exec_query(r) ==
        "stdout=true&stderr=true&stdin=true&tty=false&container=main&command=sh&command=-c&command=echo%20a%20b");
}
