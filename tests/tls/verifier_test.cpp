// Per-CR verification matrix (upstream §3.2 and the porting notes of §3.10): each CR's bundle is
// checked in isolation, every bundle certificate is a trust anchor, the agent's own intermediates
// are used, EKU clientAuth is required on the leaf and validity is checked.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/metrics.hpp"
#include "tests/support/pki.hpp"
#include "tls/ca_store.hpp"
#include "tls/verifier.hpp"

using Catch::Matchers::Contains;
using cg::testing::CertSpec;
using cg::testing::KeyType;
using cg::testing::make_ca;
using cg::testing::make_self_signed;
using cg::testing::make_signed;
using cg::tls::Anchor;
using cg::tls::CaStore;
using cg::tls::PeerChain;
using cg::tls::verify_all;
using cg::tls::verify_one;

namespace {

Anchor anchor_for(const std::string& key, const std::string& bundle) {
  std::string err;
  auto store = CaStore::from_bundle(bundle, err);
  REQUIRE(store != nullptr);
  REQUIRE(err.empty());
  return Anchor{key, store, {}};
}

CertSpec agent_spec(const std::string& cn, KeyType key = KeyType::ec_p256) {
  CertSpec s;
  s.cn = cn;
  s.org = "OpenChoreo";
  s.client_auth = true;
  s.key = key;
  return s;
}

CertSpec intermediate_spec(const std::string& cn) {
  CertSpec s;
  s.cn = cn;
  s.is_ca = true;
  s.client_auth = false;
  return s;
}

// A self-signed CA (basicConstraints CA:TRUE) whose keyUsage lacks keyCertSign; the test PKI
// always sets keyCertSign on CAs, so this one is built here.
cg::testing::Cert make_ca_without_cert_sign(const std::string& cn) {
  std::shared_ptr<EVP_PKEY> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  REQUIRE(key);
  std::shared_ptr<X509> cert(X509_new(), X509_free);
  X509* c = cert.get();
  X509_set_version(c, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c), 424242);
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), 3600L * 24 * 30);
  X509_set_pubkey(c, key.get());
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(c, name);
  for (auto [nid, value] : {std::pair<int, const char*>{NID_basic_constraints, "critical,CA:TRUE"},
                            {NID_key_usage, "critical,digitalSignature,cRLSign"},
                            {NID_subject_key_identifier, "hash"}}) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, c, c, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext);
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
  }
  REQUIRE(X509_sign(c, key.get(), EVP_sha256()) > 0);
  return cg::testing::Cert(cert, key);
}

// root → intermediate → leaf
struct ThreeTier {
  cg::testing::Cert root = make_ca("tier-root");
  cg::testing::Cert inter = make_signed(intermediate_spec("tier-intermediate"), root);
  cg::testing::Cert leaf = make_signed(agent_spec("tier-agent"), inter);
};

}  // namespace

TEST_CASE("pinned self-signed agent certificate (its own CA, default Helm setup) is accepted", "[tls][verifier]") {
  // cert-manager's self-signed issuer: an end-entity certificate (CA:FALSE, clientAuth) that the
  // operator copies into clientCA.value.
  auto agent = make_self_signed(agent_spec("my-dataplane"));
  auto chain = PeerChain::from_pem(agent.cert_pem());
  REQUIRE_FALSE(chain.empty());
  CHECK(chain.intermediates().empty());

  auto v = verify_one(chain, anchor_for("default/dp", agent.cert_pem()));
  CHECK(v.ok);
  CHECK(v.reason.empty());
  CHECK(v.key == "default/dp");
}

TEST_CASE("self-signed agent certificate with CA:TRUE pinned as its own CA is accepted", "[tls][verifier]") {
  auto spec = agent_spec("ca-agent");
  spec.is_ca = true;
  auto agent = make_self_signed(spec);
  auto v = verify_one(PeerChain::from_pem(agent.cert_pem()), anchor_for("/cdp", agent.cert_pem()));
  CHECK(v.ok);
  CHECK(v.reason.empty());
}

TEST_CASE("renewed self-signed agent certificate no longer matches the pinned one", "[tls][verifier]") {
  // The known operational failure of §3.8: same subject, new key → not valid for the CR.
  auto old_cert = make_self_signed(agent_spec("my-dataplane"));
  auto renewed = make_self_signed(agent_spec("my-dataplane"));
  auto v = verify_one(PeerChain::from_pem(renewed.cert_pem()), anchor_for("default/dp", old_cert.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("unknown authority"));
  CHECK(v.failure == cg::tls::VerifyFailure::unknown_authority);
  CHECK(cg::tls::metric_label(v.failure) == "unknown_authority");
}

TEST_CASE("leaf issued by an intermediate the agent sends, bundle = root only: accepted", "[tls][verifier]") {
  ThreeTier pki;
  auto chain = PeerChain::from_pem(pki.leaf.cert_pem() + pki.inter.cert_pem());
  REQUIRE(chain.intermediates().size() == 1);
  CHECK_THAT(chain.subject(), Contains("tier-agent"));
  CHECK_THAT(chain.issuer(), Contains("tier-intermediate"));

  auto v = verify_one(chain, anchor_for("ns/a", pki.root.cert_pem()));
  CHECK(v.ok);
  CHECK(v.reason.empty());
}

TEST_CASE("intermediate not sent by the agent, bundle = root only: rejected", "[tls][verifier]") {
  ThreeTier pki;
  auto chain = PeerChain::from_pem(pki.leaf.cert_pem());
  auto v = verify_one(chain, anchor_for("ns/a", pki.root.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("unknown authority"));
}

TEST_CASE("bundle = intermediate only (partial chain) is accepted", "[tls][verifier]") {
  ThreeTier pki;
  SECTION("agent sends only its leaf") {
    auto v = verify_one(PeerChain::from_pem(pki.leaf.cert_pem()), anchor_for("ns/a", pki.inter.cert_pem()));
    CHECK(v.ok);
    CHECK(v.reason.empty());
  }
  SECTION("agent sends leaf and intermediate") {
    auto v =
        verify_one(PeerChain::from_pem(pki.leaf.cert_pem() + pki.inter.cert_pem()), anchor_for("ns/a", pki.inter.cert_pem()));
    CHECK(v.ok);
  }
  SECTION("bundle = root + intermediate, agent sends only its leaf") {
    auto v = verify_one(PeerChain::from_pem(pki.leaf.cert_pem()), anchor_for("ns/a", pki.root.cert_pem() + pki.inter.cert_pem()));
    CHECK(v.ok);
  }
}

TEST_CASE("leaf from another CA is rejected as unknown authority", "[tls][verifier]") {
  auto ca_a = make_ca("tenant-a-ca");
  auto ca_b = make_ca("tenant-b-ca");
  auto leaf = make_signed(agent_spec("agent-b"), ca_b);
  auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("a/dp", ca_a.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("unknown authority"));
  CHECK(v.key == "a/dp");
}

TEST_CASE("intermediates sent by the agent do not become trust anchors", "[tls][verifier]") {
  // The agent sends a whole chain up to its own root; the CR trusts a different root.
  ThreeTier pki;
  auto other = make_ca("other-root");
  auto chain = PeerChain::from_pem(pki.leaf.cert_pem() + pki.inter.cert_pem() + pki.root.cert_pem());
  REQUIRE(chain.intermediates().size() == 2);
  auto v = verify_one(chain, anchor_for("ns/a", other.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("unknown authority"));
}

TEST_CASE("validity window is enforced", "[tls][verifier]") {
  auto ca = make_ca("validity-ca");
  auto anchor = anchor_for("ns/a", ca.cert_pem());

  SECTION("expired leaf") {
    auto spec = agent_spec("expired-agent");
    spec.not_before = std::chrono::hours(-48);
    spec.not_after = std::chrono::hours(-1);
    auto leaf = make_signed(spec, ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("expired"));
    CHECK(v.failure == cg::tls::VerifyFailure::expired);
    CHECK(cg::tls::metric_label(v.failure) == "expired");
  }
  SECTION("leaf not yet valid") {
    auto spec = agent_spec("future-agent");
    spec.not_before = std::chrono::hours(1);
    spec.not_after = std::chrono::hours(48);
    auto leaf = make_signed(spec, ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("not yet valid"));
    CHECK(v.failure == cg::tls::VerifyFailure::not_yet_valid);
    CHECK(cg::tls::metric_label(v.failure) == "not_yet_valid");
  }
  SECTION("now override: a valid leaf checked after its notAfter is expired") {
    auto leaf = make_signed(agent_spec("agent"), ca);
    auto chain = PeerChain::from_pem(leaf.cert_pem());
    CHECK(verify_one(chain, anchor).ok);
    auto later = std::chrono::system_clock::now() + std::chrono::hours(24 * 400);
    auto v = verify_one(chain, anchor, later);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("expired"));
  }
  SECTION("now override: a valid leaf checked before its notBefore is not yet valid") {
    auto leaf = make_signed(agent_spec("agent"), ca);
    auto earlier = std::chrono::system_clock::now() - std::chrono::hours(24 * 3);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor, earlier);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("not yet valid"));
  }
}

TEST_CASE("extended key usage clientAuth is required on the leaf", "[tls][verifier]") {
  auto ca = make_ca("eku-ca");
  auto anchor = anchor_for("ns/a", ca.cert_pem());

  SECTION("leaf with emailProtection EKU only") {
    auto spec = agent_spec("mail-agent");
    spec.client_auth = false;  // → EKU emailProtection
    auto leaf = make_signed(spec, ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("clientAuth"));
    CHECK(v.failure == cg::tls::VerifyFailure::no_client_auth);
    CHECK(cg::tls::metric_label(v.failure) == "no_client_auth");
  }
  SECTION("leaf with serverAuth EKU only") {
    auto leaf = cg::testing::make_server(ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("clientAuth"));
  }
  SECTION("leaf with clientAuth and serverAuth") {
    auto spec = agent_spec("dual-agent");
    spec.server_auth = true;
    auto leaf = make_signed(spec, ca);
    CHECK(verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor).ok);
  }
  SECTION("leaf with no EKU extension at all (stricter than Go, by design)") {
    auto spec = agent_spec("no-eku-agent");
    spec.no_eku = true;
    auto leaf = make_signed(spec, ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor);
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("clientAuth"));
  }
  SECTION("pinned self-signed certificate without clientAuth") {
    auto spec = agent_spec("self-mail");
    spec.client_auth = false;
    auto self = make_self_signed(spec);
    auto v = verify_one(PeerChain::from_pem(self.cert_pem()), anchor_for("ns/self", self.cert_pem()));
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("clientAuth"));
  }
}

TEST_CASE("an intermediate whose EKU list excludes clientAuth invalidates the chain", "[tls][verifier]") {
  // Go rejects chains where a CA restricts EKUs to a set without clientAuth.
  auto root = make_ca("eku-root");
  auto ispec = intermediate_spec("server-only-intermediate");
  ispec.server_auth = true;  // CA with EKU serverAuth only
  auto inter = make_signed(ispec, root);
  auto leaf = make_signed(agent_spec("agent"), inter);
  auto v = verify_one(PeerChain::from_pem(leaf.cert_pem() + inter.cert_pem()), anchor_for("ns/a", root.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("clientAuth"));
  CHECK(v.failure == cg::tls::VerifyFailure::no_client_auth);
  CHECK(cg::tls::metric_label(v.failure) == "no_client_auth");

  SECTION("an intermediate whose EKU list includes clientAuth is fine") {
    auto ok_spec = intermediate_spec("client-intermediate");
    ok_spec.client_auth = true;
    auto ok_inter = make_signed(ok_spec, root);
    auto ok_leaf = make_signed(agent_spec("agent2"), ok_inter);
    CHECK(verify_one(PeerChain::from_pem(ok_leaf.cert_pem() + ok_inter.cert_pem()), anchor_for("ns/a", root.cert_pem())).ok);
  }
}

TEST_CASE("RSA-2048 and ECDSA P-256 agent keys both verify", "[tls][verifier]") {
  auto key = GENERATE(KeyType::rsa2048, KeyType::ec_p256);
  auto ca_key = GENERATE(KeyType::rsa2048, KeyType::ec_p256);
  CAPTURE(static_cast<int>(key), static_cast<int>(ca_key));

  auto ca = make_ca("keytype-ca", ca_key);
  auto leaf = make_signed(agent_spec("keytype-agent", key), ca);
  CHECK(verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/a", ca.cert_pem())).ok);

  auto self = make_self_signed(agent_spec("keytype-self", key));
  CHECK(verify_one(PeerChain::from_pem(self.cert_pem()), anchor_for("ns/self", self.cert_pem())).ok);
}

TEST_CASE("anchor without a store or chain without a certificate is rejected with a reason", "[tls][verifier]") {
  auto ca = make_ca("ca");
  auto leaf = make_signed(agent_spec("agent"), ca);
  auto chain = PeerChain::from_pem(leaf.cert_pem());

  SECTION("store failed to load: the load error is the reason") {
    Anchor a{"ns/broken", nullptr, "secret ns/ca not found"};
    auto v = verify_one(chain, a);
    CHECK_FALSE(v.ok);
    CHECK(v.key == "ns/broken");
    CHECK(v.reason == "secret ns/ca not found");
    CHECK(v.failure == cg::tls::VerifyFailure::ca_not_loaded);
    CHECK(cg::tls::metric_label(v.failure) == "ca_not_loaded");
  }
  SECTION("store failed to load without a message") {
    auto v = verify_one(chain, Anchor{"ns/broken", nullptr, ""});
    CHECK_FALSE(v.ok);
    CHECK_FALSE(v.reason.empty());
  }
  SECTION("no client certificate") {
    PeerChain none;
    REQUIRE(none.empty());
    auto v = verify_one(none, anchor_for("ns/a", ca.cert_pem()));
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("no client certificate"));
    CHECK(v.failure == cg::tls::VerifyFailure::no_client_certificate);
    CHECK(cg::tls::metric_label(v.failure) == "other");
  }
  SECTION("PEM without any certificate gives an empty chain") {
    auto junk = PeerChain::from_pem("not a certificate at all");
    CHECK(junk.empty());
    CHECK_FALSE(verify_one(junk, anchor_for("ns/a", ca.cert_pem())).ok);
  }
}

TEST_CASE("verify_all authorizes exactly the CRs whose CA verifies (subset authorization)", "[tls][verifier]") {
  auto ca_a = make_ca("tenant-a-ca");
  auto ca_b = make_ca("tenant-b-ca", KeyType::rsa2048);
  auto leaf = make_signed(agent_spec("agent-a"), ca_a);
  auto chain = PeerChain::from_pem(leaf.cert_pem());

  std::vector<Anchor> anchors{anchor_for("/shared", ca_b.cert_pem()), anchor_for("tenant-a/dp", ca_a.cert_pem()),
                              Anchor{"tenant-c/dp", nullptr, "clientCA.value: CA bundle is empty"},
                              anchor_for("tenant-d/dp", ca_b.cert_pem() + ca_a.cert_pem())};
  auto verdicts = verify_all(chain, anchors);
  REQUIRE(verdicts.size() == 4);
  // Order and keys follow the anchors.
  CHECK(verdicts[0].key == "/shared");
  CHECK(verdicts[1].key == "tenant-a/dp");
  CHECK(verdicts[2].key == "tenant-c/dp");
  CHECK(verdicts[3].key == "tenant-d/dp");
  CHECK_FALSE(verdicts[0].ok);
  CHECK_THAT(verdicts[0].reason, Contains("unknown authority"));
  CHECK(verdicts[1].ok);
  CHECK_FALSE(verdicts[2].ok);
  CHECK(verdicts[2].reason == "clientCA.value: CA bundle is empty");
  CHECK(verdicts[3].ok);

  SECTION("the other tenant's agent gets the complementary subset") {
    auto leaf_b = make_signed(agent_spec("agent-b"), ca_b);
    auto vb = verify_all(PeerChain::from_pem(leaf_b.cert_pem()), anchors);
    REQUIRE(vb.size() == 4);
    CHECK(vb[0].ok);
    CHECK_FALSE(vb[1].ok);
    CHECK_FALSE(vb[2].ok);
    CHECK(vb[3].ok);
  }
  SECTION("no anchors: no verdicts") { CHECK(verify_all(chain, {}).empty()); }
}

TEST_CASE("PeerChain copies and moves keep the certificates", "[tls][verifier]") {
  ThreeTier pki;
  auto chain = PeerChain::from_pem(pki.leaf.cert_pem() + pki.inter.cert_pem());
  PeerChain copy = chain;
  CHECK(copy.leaf() == chain.leaf());
  REQUIRE(copy.intermediates().size() == 1);
  PeerChain moved = std::move(copy);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): documented moved-from state
  REQUIRE_FALSE(moved.empty());
  CHECK(verify_one(moved, anchor_for("ns/a", pki.root.cert_pem())).ok);
  PeerChain assigned;
  assigned = chain;
  PeerChain& self = assigned;
  assigned = self;  // self-assignment keeps the chain
  REQUIRE_FALSE(assigned.empty());
  CHECK(verify_one(assigned, anchor_for("ns/a", pki.root.cert_pem())).ok);
  // not_after is about a year away (the spec default).
  auto left = assigned.not_after() - std::chrono::system_clock::now();
  CHECK(left > std::chrono::hours(24 * 300));
  CHECK(left < std::chrono::hours(24 * 400));
}

TEST_CASE("the agent's own leaf pinned in the bundle is accepted even when its issuer is absent", "[tls][verifier]") {
  // Go: a root pool that contains the leaf itself yields the one-element chain [leaf].
  auto ca = make_ca("unlisted-ca");
  auto leaf = make_signed(agent_spec("pinned-leaf"), ca);
  auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/a", leaf.cert_pem()));
  CHECK(v.ok);
  CHECK(v.reason.empty());
}

TEST_CASE("an expired CA in the bundle does not authorize", "[tls][verifier]") {
  auto spec = intermediate_spec("expired-root");
  spec.not_before = std::chrono::hours(-48);
  spec.not_after = std::chrono::hours(-1);
  auto root = make_self_signed(spec);
  auto leaf = make_signed(agent_spec("agent"), root);
  auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/a", root.cert_pem()));
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("expired"));
}

// Regression: Go accepts CA certificates without keyCertSign (§3.10); the verifier matches it.
TEST_CASE("an anchor CA without keyCertSign key usage is accepted, as in Go", "[tls][verifier]") {
  auto ca = make_ca_without_cert_sign("no-certsign-ca");
  auto leaf = make_signed(agent_spec("agent"), ca);
  auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/a", ca.cert_pem()));
  INFO("reason: " << v.reason);
  CHECK(v.ok);
}

TEST_CASE("successful verdicts are cached by store and exact chain, never past the chain's validity", "[tls][verify][cache]") {
  auto ca = make_ca("cache CA");
  auto other_ca = make_ca("cache other CA");
  auto agent = make_signed(agent_spec("cache-agent"), ca);
  auto twin = make_signed(agent_spec("cache-agent"), ca);  // same subject and issuer, another key
  auto stranger = make_signed(agent_spec("cache-agent"), other_ca);
  Anchor a = anchor_for("ns/a", ca.cert_pem());
  auto chain = PeerChain::from_pem(agent.cert_pem());
  auto before = cg::tls::verify_cache_stats();
  CHECK(verify_one(chain, a).ok);
  CHECK(verify_one(chain, a).ok);
  auto after = cg::tls::verify_cache_stats();
  CHECK(after.hits == before.hits + 1);
  CHECK(after.misses == before.misses + 1);

  // Another certificate, even with the same names, is verified on its own; one from another CA fails.
  CHECK(verify_one(PeerChain::from_pem(twin.cert_pem()), a).ok);
  CHECK_FALSE(verify_one(PeerChain::from_pem(stranger.cert_pem()), a).ok);
  CHECK_FALSE(verify_one(PeerChain::from_pem(stranger.cert_pem()), a).ok);  // failures are not cached
  // The same CA text loaded again is another store (a CR whose CA changed): verified again.
  Anchor a2 = anchor_for("ns/a", ca.cert_pem());
  before = cg::tls::verify_cache_stats();
  CHECK(verify_one(chain, a2).ok);
  CHECK(cg::tls::verify_cache_stats().hits == before.hits);
  // A CR whose CA is now another one: the cached success for the old store does not carry over.
  Anchor b = anchor_for("ns/a", other_ca.cert_pem());
  CHECK_FALSE(verify_one(chain, b).ok);
  // An explicit time never uses the cache (a year later the certificate has expired).
  CHECK_FALSE(verify_one(chain, a, std::chrono::system_clock::now() + std::chrono::hours(24 * 400)).ok);
}

TEST_CASE("a cached verdict ends when the certificate expires", "[tls][verify][cache]") {
  auto ca = make_ca("short CA");
  CertSpec s = agent_spec("short-lived");
  s.not_after = std::chrono::seconds(2);
  auto agent = make_signed(s, ca);
  Anchor a = anchor_for("ns/short", ca.cert_pem());
  auto chain = PeerChain::from_pem(agent.cert_pem());
  REQUIRE(verify_one(chain, a).ok);
  REQUIRE(verify_one(chain, a).ok);  // from the cache
  std::this_thread::sleep_until(std::chrono::system_clock::from_time_t(
      std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + std::chrono::seconds(4))));
  auto v = verify_one(chain, a);
  CHECK_FALSE(v.ok);
  CHECK_THAT(v.reason, Contains("expired"));
}

// Go's x509 rejects MD5 and SHA-1 signatures (InsecureAlgorithmError) on every certificate of the
// chain except the trust anchor, whose own signature it never checks. OpenSSL's defaults accept them.
TEST_CASE("certificates signed with MD5 or SHA-1 are rejected, as in Go", "[tls][verifier][weak_signature]") {
  using cg::testing::SigDigest;
  auto rsa_ca = make_ca("weak-sig-rsa-ca", KeyType::rsa2048);
  auto ec_ca = make_ca("weak-sig-ec-ca");

  SECTION("leaf signed with MD5 (RSA issuer)") {
    auto spec = agent_spec("md5-agent");
    spec.digest = SigDigest::md5;
    auto leaf = make_signed(spec, rsa_ca);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/md5", rsa_ca.cert_pem()));
    CHECK_FALSE(v.ok);
    CHECK(v.reason == "certificate signed with MD5 (insecure algorithm)");
    CHECK(v.failure == cg::tls::VerifyFailure::insecure_algorithm);
    CHECK(cg::tls::metric_label(v.failure) == "insecure_algorithm");
  }
  SECTION("leaf signed with SHA-1, RSA and ECDSA issuers") {
    for (const auto* ca : {&rsa_ca, &ec_ca}) {
      auto spec = agent_spec("sha1-agent");
      spec.digest = SigDigest::sha1;
      auto leaf = make_signed(spec, *ca);
      auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/sha1", ca->cert_pem()));
      CHECK_FALSE(v.ok);
      CHECK(v.reason == "certificate signed with SHA-1 (insecure algorithm)");
    }
  }
  SECTION("the same leaf signed with SHA-256 is accepted (control)") {
    auto leaf = make_signed(agent_spec("sha256-agent"), rsa_ca);
    CHECK(verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/ok", rsa_ca.cert_pem())).ok);
  }
  SECTION("SHA-256 leaf under an intermediate signed with SHA-1 by the anchor") {
    auto ispec = intermediate_spec("sha1-intermediate");
    ispec.digest = SigDigest::sha1;
    auto inter = make_signed(ispec, ec_ca);
    auto leaf = make_signed(agent_spec("under-sha1-intermediate"), inter);
    auto chain = PeerChain::from_pem(leaf.cert_pem() + inter.cert_pem());
    auto v = verify_one(chain, anchor_for("ns/inter", ec_ca.cert_pem()));
    CHECK_FALSE(v.ok);
    CHECK_THAT(v.reason, Contains("intermediate certificate"));
    CHECK_THAT(v.reason, Contains("sha1-intermediate"));
    CHECK_THAT(v.reason, Contains("signed with SHA-1 (insecure algorithm)"));
    CHECK(v.failure == cg::tls::VerifyFailure::insecure_algorithm);
    CHECK(cg::tls::metric_label(v.failure) == "insecure_algorithm");
    // Not cached as a success either: the same chain is rejected again.
    CHECK_FALSE(verify_one(chain, anchor_for("ns/inter", ec_ca.cert_pem())).ok);

    SECTION("the same intermediate as the CR's trust anchor: its own signature is not checked (accepted)") {
      CHECK(verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/inter", inter.cert_pem())).ok);
    }
  }
}

TEST_CASE("a trust anchor self-signed with SHA-1 or MD5 still anchors SHA-256 leaves, as in Go",
          "[tls][verifier][weak_signature]") {
  using cg::testing::SigDigest;
  for (auto digest : {SigDigest::sha1, SigDigest::md5}) {
    CertSpec root_spec;
    root_spec.cn = digest == SigDigest::sha1 ? "sha1-root" : "md5-root";
    root_spec.is_ca = true;
    root_spec.client_auth = false;
    root_spec.key = KeyType::rsa2048;
    root_spec.digest = digest;
    auto root = make_self_signed(root_spec);
    auto leaf = make_signed(agent_spec("sha256-leaf"), root);
    auto v = verify_one(PeerChain::from_pem(leaf.cert_pem()), anchor_for("ns/root", root.cert_pem()));
    INFO(root_spec.cn << ": " << v.reason);
    CHECK(v.ok);
  }
  SECTION("a self-signed SHA-1 agent certificate pinned as its own CA is the anchor itself: accepted") {
    auto spec = agent_spec("pinned-sha1-agent");
    spec.digest = SigDigest::sha1;
    auto agent = make_self_signed(spec);
    CHECK(verify_one(PeerChain::from_pem(agent.cert_pem()), anchor_for("ns/pinned", agent.cert_pem())).ok);
  }
}
