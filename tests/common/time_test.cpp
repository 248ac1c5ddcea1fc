// parse_rfc3339: the strict reading of Kubernetes and mesh timestamps (hostile peers and API servers).
#include <catch2/catch.hpp>

#include "common/time.hpp"

using cg::parse_rfc3339;

TEST_CASE("parse_rfc3339 reads UTC and offset times with fractions", "[time]") {
  auto a = parse_rfc3339("2026-11-25T10:00:00Z");
  REQUIRE(a);
  CHECK(cg::format_rfc3339(*a) == "2026-11-25T10:00:00Z");
  auto b = parse_rfc3339("2026-11-25T12:30:00+02:30");
  REQUIRE(b);
  CHECK(cg::format_rfc3339(*b) == "2026-11-25T10:00:00Z");
  auto c = parse_rfc3339("2026-11-25t10:00:00.5z");
  REQUIRE(c);
  CHECK(cg::format_rfc3339_nano(*c) == "2026-11-25T10:00:00.5Z");
}

TEST_CASE("parse_rfc3339 refuses times a nanosecond system_clock cannot hold instead of wrapping", "[time]") {
  CHECK_FALSE(parse_rfc3339("9999-01-01T00:00:00Z"));
  CHECK_FALSE(parse_rfc3339("0001-01-01T00:00:00Z"));
  CHECK_FALSE(parse_rfc3339("1677-01-01T00:00:00Z"));
  CHECK_FALSE(parse_rfc3339("2263-01-01T00:00:00Z"));
  // The edges that are representable stay readable, and what is formatted reads back.
  for (const char* s : {"1678-01-01T00:00:00Z", "2261-12-31T23:59:59Z", "1678-01-01T00:00:00+23:59"}) {
    auto t = parse_rfc3339(s);
    REQUIRE(t);
    auto again = parse_rfc3339(cg::format_rfc3339_nano(*t));
    REQUIRE(again);
    CHECK(*again == *t);
  }
}

TEST_CASE("parse_rfc3339 takes digits only at fixed places and checks the offset", "[time]") {
  for (const char* s :
       {"2026-11-25T10:00:0-Z", "2026-1-125T10:00:00Z", "+026-11-25T10:00:00Z", "2026-11-25T 1:00:00Z",
        "2026-11-25T10:00:00+23:99", "2026-11-25T10:00:00+24:00", "2026-11-25T10:00:00+0a:00", "2026-11-25T10:00:00",
        "2026-11-25T10:00:00.Z", "2026-11-25T10:00:00Zjunk", "2026-13-25T10:00:00Z", "2026-11-25T24:00:00Z"})
    CHECK_FALSE(parse_rfc3339(s));
}
