// The request body bench-tunnel-load sends and bench-micro encodes: a JSON document of exactly n bytes
// (a configmap-like object with a filler string, the same bytes for the same n).
#pragma once
#include <random>
#include <string>

namespace cg::bench {

inline std::string make_body(size_t n) {
  std::string head = R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bench"},"data":{"blob":")";
  std::string tail = R"("}})";
  std::string body = head;
  std::mt19937 rng(42);
  const char* alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  while (body.size() + tail.size() < n) body.push_back(alpha[rng() % 62]);
  body += tail;
  if (body.size() > n) body.resize(n);
  return body;
}

}  // namespace cg::bench
