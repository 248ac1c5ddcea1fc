// Bounded parsing: what reading one agent message costs in heap, whatever the message's shape.
// Global operator new/delete are replaced in this test executable to measure the peak of live heap
// bytes while classify_agent_frame (and decode_tunnel_response) run.
#include <catch2/catch.hpp>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "common/base64.hpp"
#include "session/frames.hpp"
#include "session/tunnel.hpp"

namespace {
std::atomic<bool> g_track{false};
std::atomic<long long> g_live{0}, g_peak{0};

void note_alloc(void* p) {
  if (!p || !g_track.load(std::memory_order_relaxed)) return;
  long long now = g_live.fetch_add(static_cast<long long>(malloc_usable_size(p))) + static_cast<long long>(malloc_usable_size(p));
  long long peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void note_free(void* p) {
  if (!p || !g_track.load(std::memory_order_relaxed)) return;
  g_live.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
}

struct Peak {
  Peak() {
    g_live = 0;
    g_peak = 0;
    g_track = true;
  }
  ~Peak() { g_track = false; }
  long long peak() const { return g_peak.load(); }
};
}  // namespace

void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  note_alloc(p);
  return p;
}
void operator delete(void* p) noexcept {
  note_free(p);
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  note_free(p);
  std::free(p);
}
// Every other replaceable form too, so that no allocation comes from the sanitizer's own operator new
// and is then freed here (ASan reports that as alloc-dealloc-mismatch). Aligned forms are left alone:
// they pair with each other.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  void* p = std::malloc(n ? n : 1);
  note_alloc(p);
  return p;
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { operator delete(p); }
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { operator delete(p); }

using cg::session::classify_agent_frame;
using cg::session::FrameKind;

TEST_CASE("an agent message costs at most its size in heap, whatever its shape", "[session][frames][memory]") {
  constexpr size_t kSlack = 128 * 1024;  // parser state, the bounded header list, small strings
  SECTION("millions of tiny values (the 56x amplification of a DOM parse)") {
    std::string text = R"({"requestID":"r1","statusCode":200,"x":[)";
    for (int i = 0; i < 1000000; ++i) text += "[],{},0,";
    text += "null]}";
    Peak p;
    auto f = classify_agent_frame(text);
    CHECK(f.kind == FrameKind::response);
    CHECK(p.peak() < static_cast<long long>(kSlack));
  }
  SECTION("tens of thousands of tiny headers are capped") {
    std::string text = R"({"requestID":"r1","statusCode":200,"headers":{)";
    for (int i = 0; i < 200000; ++i) text += (i ? "," : "") + std::string("\"h") + std::to_string(i) + "\":[\"v\",\"w\"]";
    text += "}}";
    Peak p;
    auto f = classify_agent_frame(text);
    CHECK(f.headers_over_limit);
    CHECK(f.header_list.size() <= cg::session::kMaxAgentHeaderCount);
    CHECK(p.peak() < static_cast<long long>(kSlack));
  }
  SECTION("a large body: its base64 text once, then the decoded bytes") {
    const std::string raw(4u << 20, 'z');
    const std::string text = R"({"requestID":"r1","statusCode":200,"body":")" + cg::base64_encode(raw) + "\"}";
    Peak p;
    auto f = classify_agent_frame(text);
    REQUIRE(f.kind == FrameKind::response);
    cg::session::TunnelReply r;
    std::string err;
    REQUIRE(cg::session::decode_tunnel_response(f, r, err));
    CHECK(r.body.size() == raw.size());
    // The base64 text (1x the message) plus the decoded body (3/4 of it) at most.
    CHECK(p.peak() <= static_cast<long long>(text.size() + text.size() * 3 / 4 + kSlack));
  }
}
