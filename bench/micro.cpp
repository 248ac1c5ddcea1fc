// bench-micro: in-process costs on the tunnel's hot path (Google Benchmark; driven by
// `bench/run --modes micro`, see docs/benchmarks.md). No network, no threads: one frame at a time.
//
//   agent_response/N   what the gateway does with an agent's HTTPTunnelResponse text frame whose body
//                      is N bytes: classify_agent_frame (streaming JSON parse, long base64 strings past
//                      the lexer) + decode_tunnel_response (checks, base64 decode of the body)
//   classify/N         classify_agent_frame alone on the same frame
//   base64_decode/N    cg::base64_decode of the body's base64 text
//   encode_request/N   encode_tunnel_request: the gateway's HTTPTunnelRequest frame for an N-byte body
//   sim_responder/N    cluster-agent-sim's per-request work on that request frame (parse, respond()
//                      with base64 decode and encode, serialize); part of the tunnel's measured latency
//
// Bytes processed are the frame's bytes (the base64 text for base64_decode). Every benchmark checks
// its result once before timing and stops with an error if it is wrong.
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "bench/json_body.hpp"
#include "common/base64.hpp"
#include "responder.hpp"
#include "session/frames.hpp"
#include "session/tunnel.hpp"

namespace {

using cg::session::AgentFrame;
using cg::session::FrameKind;
using cg::session::TunnelReply;
using cg::session::TunnelRequest;

constexpr const char* kRequestId = "0b7f0e52-5c43-4c35-9bd9-1a1b8f8a2d11";

using cg::bench::make_body;  // bench/json_body.hpp

// The frame cluster-agent-sim sends back for a POST echo (201, its headers, the body as base64).
std::string response_frame(const std::string& body) {
  return std::string(R"({"requestID":")") + kRequestId +
         R"(","statusCode":201,"headers":{"Content-Type":["application/json"],"X-Agent-Index":["0"]},"body":")" +
         cg::base64_encode(body) + "\"}";
}

TunnelRequest request_for(const std::string& body) {
  TunnelRequest r;
  r.target = "k8s";
  r.method = "POST";
  r.path = "/api/v1/namespaces/default/configmaps";
  r.headers = {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}};
  r.body = body;
  r.gateway_request_id = "gw-0123456789abcdef";
  return r;
}

bool decode(std::string_view frame, TunnelReply& out) {
  AgentFrame f = cg::session::classify_agent_frame(frame);
  if (f.kind != FrameKind::response) return false;
  std::string err;
  return cg::session::decode_tunnel_response(f, out, err);
}

void agent_response(benchmark::State& state) {
  const std::string body = make_body(static_cast<size_t>(state.range(0)));
  const std::string frame = response_frame(body);
  TunnelReply check;
  if (!decode(frame, check) || check.body != body || check.status_code != 201) {
    state.SkipWithError("the frame did not decode to the body");
    return;
  }
  for (auto _ : state) {
    TunnelReply r;
    benchmark::DoNotOptimize(decode(frame, r));
    benchmark::DoNotOptimize(r.body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(frame.size()));
  state.counters["frameBytes"] = static_cast<double>(frame.size());
}

void classify(benchmark::State& state) {
  const std::string frame = response_frame(make_body(static_cast<size_t>(state.range(0))));
  if (cg::session::classify_agent_frame(frame).kind != FrameKind::response) {
    state.SkipWithError("the frame was not classified as a response");
    return;
  }
  for (auto _ : state) {
    AgentFrame f = cg::session::classify_agent_frame(frame);
    benchmark::DoNotOptimize(f.body_b64.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(frame.size()));
  state.counters["frameBytes"] = static_cast<double>(frame.size());
}

void base64_decode(benchmark::State& state) {
  const std::string body = make_body(static_cast<size_t>(state.range(0)));
  const std::string text = cg::base64_encode(body);
  auto check = cg::base64_decode(text);
  if (!check || *check != body) {
    state.SkipWithError("base64_decode did not give the body back");
    return;
  }
  for (auto _ : state) {
    auto out = cg::base64_decode(text);
    benchmark::DoNotOptimize(out->data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
  state.counters["frameBytes"] = static_cast<double>(text.size());
}

void encode_request(benchmark::State& state) {
  const TunnelRequest req = request_for(make_body(static_cast<size_t>(state.range(0))));
  const std::string frame = cg::session::encode_tunnel_request(kRequestId, req);
  if (frame.find(cg::base64_encode(req.body)) == std::string::npos) {
    state.SkipWithError("the request frame does not carry the body");
    return;
  }
  for (auto _ : state) {
    std::string out = cg::session::encode_tunnel_request(kRequestId, req);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(frame.size()));
  state.counters["frameBytes"] = static_cast<double>(frame.size());
}

void sim_responder(benchmark::State& state) {
  const std::string body = make_body(static_cast<size_t>(state.range(0)));
  const std::string frame = cg::session::encode_tunnel_request(kRequestId, request_for(body));
  auto one = [&] { return cg::sim::dump_reply(cg::sim::respond(cg::sim::parse_frame(frame), "tun", 0)); };
  TunnelReply check;
  if (!decode(one(), check) || check.body != body) {
    state.SkipWithError("the simulator's reply does not echo the body");
    return;
  }
  for (auto _ : state) {
    std::string out = one();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(frame.size()));
  state.counters["frameBytes"] = static_cast<double>(frame.size());
}

// 1 KiB: the tunnel mode's latency body; 1 MiB: its throughput body.
BENCHMARK(agent_response)->Arg(1 << 10)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK(classify)->Arg(1 << 10)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK(base64_decode)->Arg(1 << 10)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK(encode_request)->Arg(1 << 10)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK(sim_responder)->Arg(1 << 10)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
