// WebSocket text frames from an agent: classify_agent_frame (with and without lifting long strings), then decode_tunnel_response for the
// frames classified as responses (what Tunnel::on_text does before looking up the request).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "session/frames.hpp"
#include "session/tunnel.hpp"
#include "tests/fuzz/fuzz_util.hpp"

using namespace cg::session;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cg::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  AgentFrame f = classify_agent_frame(text);
  // Long strings taken past the JSON lexer (every plain string, with threshold 0) change nothing.
  AgentFrame all = classify_agent_frame(text, 0), none = classify_agent_frame(text, SIZE_MAX);
  FUZZ_CHECK(all.kind == none.kind && f.kind == none.kind);
  FUZZ_CHECK(all.request_id == none.request_id && all.error.empty() == none.error.empty());
  if (none.kind != FrameKind::invalid) FUZZ_CHECK(all.body == none.body && f.body == none.body);
  switch (f.kind) {
    case FrameKind::invalid:
      FUZZ_CHECK(!f.error.empty());
      return 0;
    case FrameKind::stream_chunk:
      FUZZ_CHECK(!f.request_id.empty() && f.body.is_object());
      return 0;
    case FrameKind::response: break;
  }
  FUZZ_CHECK(!f.request_id.empty() && f.body.is_object() && f.error.empty());
  TunnelReply r;
  std::string err;
  if (decode_tunnel_response(f.body, r, err)) {
    FUZZ_CHECK(r.status_code >= 100 && r.status_code <= 999);
  } else {
    FUZZ_CHECK(!err.empty());
  }
  return 0;
}
