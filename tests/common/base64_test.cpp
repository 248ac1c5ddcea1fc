// base64_decode: strict standard base64 with padding, as Go's encoding/json writes []byte.
#include <catch2/catch.hpp>

#include <openssl/evp.h>

#include <random>
#include <string>

#include "common/base64.hpp"

using cg::base64_decode;
using cg::base64_encode;

TEST_CASE("base64 round trips every length and byte value", "[common][base64]") {
  std::mt19937 rng(7);
  for (size_t n = 0; n < 70; ++n) {
    std::string in(n, '\0');
    for (auto& c : in) c = static_cast<char>(rng());
    auto enc = base64_encode(in);
    CHECK(enc.size() == 4 * ((n + 2) / 3));
    auto dec = base64_decode(enc);
    REQUIRE(dec.has_value());
    CHECK(*dec == in);
  }
}

TEST_CASE("base64 decodes the RFC 4648 vectors", "[common][base64]") {
  CHECK(base64_decode("").value() == "");
  CHECK(base64_decode("Zg==").value() == "f");
  CHECK(base64_decode("Zm8=").value() == "fo");
  CHECK(base64_decode("Zm9v").value() == "foo");
  CHECK(base64_decode("Zm9vYg==").value() == "foob");
  CHECK(base64_decode("Zm9vYmE=").value() == "fooba");
  CHECK(base64_decode("Zm9vYmFy").value() == "foobar");
  CHECK(base64_decode("+/+/").value() == "\xfb\xff\xbf");
}

TEST_CASE("base64 refuses what is not strict standard base64", "[common][base64]") {
  for (const char* bad : {"Zg=", "Zg", "Z===", "====", "Zg=a", "Z=g=", "=Zg=", "Zm9v\n", "Zm 9", "Zm9-", "Zm9_", "Zm9vZm9v=Zm9",
                          "Zm=vYmFy", "Zm9vYm\x80y"}) {
    INFO(bad);
    CHECK_FALSE(base64_decode(bad).has_value());
  }
  CHECK_FALSE(base64_decode(std::string_view("Zm9vYm\0y", 8)).has_value());
}

TEST_CASE("base64 agrees with OpenSSL's decoder on 1 MiB", "[common][base64]") {
  std::string in(1u << 20, '\0');
  std::mt19937 rng(11);
  for (auto& c : in) c = static_cast<char>(rng());
  auto enc = base64_encode(in);
  std::string ref(enc.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(ref.data()), reinterpret_cast<const unsigned char*>(enc.data()),
                          static_cast<int>(enc.size()));
  REQUIRE(n >= 0);
  ref.resize(static_cast<size_t>(n) - (enc.back() == '=') - (enc[enc.size() - 2] == '='));
  CHECK(base64_decode(enc).value() == ref);
  CHECK(ref == in);
}
