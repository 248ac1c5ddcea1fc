// Shared by the fuzz targets that produce what a caller receives: serializes a response as Beast
// writes it and parses it back with Beast's strict response parser. The bytes must be exactly one
// valid HTTP/1.1 response with the given status and body (nothing after it: no smuggled second one).
#pragma once
#include <string>

#include "common/net.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace cg::fuzz {

template <class Body>
std::string wire_bytes(net::http::response<Body>& res) {
  namespace http = net::http;
  namespace beast = net::beast;
  res.prepare_payload();
  std::string wire;
  http::serializer<false, Body> sr(res);
  beast::error_code ec;
  do {
    sr.next(ec, [&](beast::error_code&, const auto& buffers) {
      wire += beast::buffers_to_string(buffers);
      sr.consume(beast::buffer_bytes(buffers));
    });
  } while (!ec && !sr.is_done());
  FUZZ_CHECK(!ec);
  return wire;
}

// `head`: the response answers a HEAD request (no body follows the head).
inline void check_one_response(const std::string& wire, unsigned status, const std::string* body, bool head = false) {
  namespace http = net::http;
  namespace beast = net::beast;
  http::response_parser<http::string_body> p;
  p.eager(true);
  p.skip(head);
  p.body_limit(boost::none);
  beast::error_code ec;
  size_t used = p.put(net::asio::buffer(wire), ec);
  if (!ec && !p.is_done()) p.put_eof(ec);
  FUZZ_CHECK(!ec && p.is_done());
  FUZZ_CHECK(used == wire.size());
  FUZZ_CHECK(p.get().result_int() == status);
  if (body) FUZZ_CHECK(p.get().body() == *body);
}

}  // namespace cg::fuzz
