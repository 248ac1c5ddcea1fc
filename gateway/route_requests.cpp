#include "gateway/route_requests.hpp"

#include <boost/url/url.hpp>

namespace cg::gateway {

session::StreamRequest wirelogs_stream_request(const WirelogsRoute& r, const std::string& gateway_request_id,
                                               Duration first_timeout) {
  boost::urls::url q;
  q.params().append({"namespace", r.ns});
  q.params().append({"environment", r.environment});
  if (!r.project.empty()) q.params().append({"project", r.project});
  if (!r.component.empty()) q.params().append({"component", r.component});
  session::StreamRequest sr;
  sr.mode = session::StreamRequest::Mode::upgrade;
  sr.kind = "wirelogs";
  sr.request.target = "hubble";
  sr.request.method = "GET";
  sr.request.path = "/wirelogs";
  sr.request.query = std::string(q.encoded_query());
  sr.request.gateway_request_id = gateway_request_id;
  sr.upgrade_proto = "hubble/v1";
  sr.first_timeout = first_timeout;
  return sr;
}

std::string exec_path(const ExecRoute& r) { return "/api/v1/namespaces/" + r.pod_namespace + "/pods/" + r.pod_name + "/exec"; }

std::string exec_query(const ExecRoute& r) {
  boost::urls::url q;
  q.params().append({"stdout", "true"});
  q.params().append({"stderr", "true"});
  if (!r.stdin_.empty()) q.params().append({"stdin", r.stdin_});
  if (!r.tty.empty()) q.params().append({"tty", r.tty});
  if (!r.container.empty()) q.params().append({"container", r.container});
  for (const auto& c : r.command) q.params().append({"command", c});
  return std::string(q.encoded_query());
}

}  // namespace cg::gateway
