// What the agent is asked for a routed internal API request (pure: no I/O, no Beast): the wirelogs
// stream request, and the pod exec path and query (upstream's parameter order).
#pragma once
#include <string>

#include "common/time.hpp"
#include "gateway/internal_routes.hpp"
#include "session/tunnel.hpp"

namespace cg::gateway {

// GET hubble /wirelogs?namespace=…&environment=…[&project=…][&component=…], upgraded to hubble/v1.
session::StreamRequest wirelogs_stream_request(const WirelogsRoute& r, const std::string& gateway_request_id,
                                               Duration first_timeout);

// /api/v1/namespaces/{ns}/pods/{pod}/exec
std::string exec_path(const ExecRoute& r);
// stdout=true&stderr=true[&stdin=…][&tty=…][&container=…]{&command=…}
std::string exec_query(const ExecRoute& r);

}  // namespace cg::gateway
