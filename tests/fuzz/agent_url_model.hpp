// A model of what upstream's agent does with a tunnelled request's path and query
// (internal/cluster-agent/router.go: targetURL := route.Endpoint + req.Path + "?" + req.Query, then
// http.NewRequest → Go's net/url Parse): the path the Kubernetes API server finally decodes.
// Go's Parse refuses control bytes, cuts the fragment at the first '#', the query at the first '?',
// and percent-decodes the rest (a malformed escape is an error); the client sends it re-escaped and
// the API server decodes it once. Shared by tests/gateway/proxy_rules_test.cpp and the
// fuzz_proxy_request target. nullopt: the agent could not build the request (no request is made).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace cg::testing {

inline std::optional<std::string> agent_requested_path(std::string_view path, std::string_view query) {
  std::string url(path);
  if (!query.empty()) {
    url += '?';
    url += query;
  }
  for (unsigned char c : url)
    if (c < 0x20 || c == 0x7f) return std::nullopt;  // net/url: invalid control character in URL
  url = url.substr(0, url.find('#'));
  url = url.substr(0, url.find('?'));
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < url.size(); ++i) {
    if (url[i] != '%') {
      out += url[i];
      continue;
    }
    if (i + 2 >= url.size() || hex(url[i + 1]) < 0 || hex(url[i + 2]) < 0) return std::nullopt;  // invalid URL escape
    out += static_cast<char>(hex(url[i + 1]) * 16 + hex(url[i + 2]));
    i += 2;
  }
  return out;
}

}  // namespace cg::testing
