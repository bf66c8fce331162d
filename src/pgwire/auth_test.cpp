// Tests of SCRAM-SHA-256 and md5: RFC 7677 and PostgreSQL known answers, round trips, bad input.
#include "pgwire/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace pgwarden::pgwire {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// RFC 7677 section 3 example (user "user", password "pencil").
constexpr char kRfcSalt[] = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr char kRfcClientNonce[] = "rOprNGfwEbeRWgbNEkqO";
constexpr char kRfcServerNonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr char kRfcClientFirst[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr char kRfcServerFirst[] =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr char kRfcClientFinal[] =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr char kRfcServerFinal[] = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// Made by PostgreSQL 15 for password 'correct horse battery staple'
// (SET password_encryption = 'scram-sha-256'; CREATE ROLE alice ... PASSWORD ...).
constexpr char kPostgresSecret[] =
    "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$jyPtkyH1y/fQZHXvSl+FIbOTBFzUsUmC1Z1oOPHR16E=:"
    "ouPKAUTi8G9q0NlWnd0Rr7IWya3aG4notCqapLv9XEE=";
constexpr char kPostgresPassword[] = "correct horse battery staple";

ScramSecret RfcSecret() { return MakeScramSecret("pencil", *Base64Decode(kRfcSalt), 4096); }

// Runs a whole exchange; returns the first failure, or Ok.
Status Exchange(ScramClient& client, ScramServer& server) {
  auto server_first = server.HandleClientFirst(client.ClientFirst());
  if (!server_first.ok()) return server_first.status();
  auto client_final = client.HandleServerFirst(*server_first);
  if (!client_final.ok()) return client_final.status();
  auto server_final = server.HandleClientFinal(*client_final);
  if (!server_final.ok()) return server_final.status();
  return client.HandleServerFinal(*server_final);
}

// ---- Base64 and helpers ----

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> cases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, b64] : cases) {
    EXPECT_EQ(Base64Encode(raw), b64);
    EXPECT_EQ(Base64Decode(b64), raw);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(Base64Decode(Base64Encode(all)), all);
}

TEST(Base64Test, RejectsMalformed) {
  for (const char* bad : {"Zg=", "Zg", "Z===", "====", "Zm9v!A==", "Zg==Zg==", "Zm 9", "=Zm9"}) {
    EXPECT_EQ(Base64Decode(bad), std::nullopt) << bad;
  }
}

TEST(SecureEqualsTest, ComparesContentAndLength) {
  EXPECT_TRUE(SecureEquals("abc", "abc"));
  EXPECT_TRUE(SecureEquals("", ""));
  EXPECT_FALSE(SecureEquals("abc", "abd"));
  EXPECT_FALSE(SecureEquals("abc", "ab"));
}

// ---- md5 ----

TEST(Md5Test, PasswordHashKnownAnswers) {
  EXPECT_EQ(Md5PasswordHash("postgres", "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d");
  // The example from PgBouncer's documentation.
  EXPECT_EQ(Md5PasswordHash("1234", "admin"), "md545f2603610af569b6155c45067268c6b");
  // Made by PostgreSQL 15 (password_encryption = 'md5', role bob).
  EXPECT_EQ(Md5PasswordHash("s3cr\"et", "bob"), "md52ad48eb654da549d8db1f57812e93a47");
}

TEST(Md5Test, SaltedResponseKnownAnswer) {
  const uint8_t salt[4] = {1, 2, 3, 4};
  // md5("3175bce1d3201d16594cebf9d7eb3f9d" || 01 02 03 04), computed with Python's hashlib.
  EXPECT_EQ(Md5SaltedResponse("md53175bce1d3201d16594cebf9d7eb3f9d", salt),
            "md568be9ed08db75f318087ab337aaea044");
  const uint8_t other[4] = {1, 2, 3, 5};
  EXPECT_NE(Md5SaltedResponse("md53175bce1d3201d16594cebf9d7eb3f9d", other),
            "md568be9ed08db75f318087ab337aaea044");
}

// ---- SCRAM secrets ----

TEST(ScramSecretTest, MatchesPostgresSecret) {
  auto parsed = ParseScramSecret(kPostgresSecret);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt.size(), 16u);
  EXPECT_EQ(parsed->stored_key.size(), 32u);
  EXPECT_EQ(parsed->server_key.size(), 32u);
  EXPECT_EQ(FormatScramSecret(*parsed), kPostgresSecret);
  // Deriving from the password with the same salt gives PostgreSQL's keys.
  ScramSecret made = MakeScramSecret(kPostgresPassword, parsed->salt, parsed->iterations);
  EXPECT_EQ(FormatScramSecret(made), kPostgresSecret);
}

TEST(ScramSecretTest, MakeFormatParseRoundTrip) {
  ScramSecret made = MakeScramSecret("secret");
  EXPECT_EQ(made.iterations, 4096);
  EXPECT_EQ(made.salt.size(), 16u);
  std::string text = FormatScramSecret(made);
  EXPECT_THAT(text, StartsWith("SCRAM-SHA-256$4096:"));
  auto parsed = ParseScramSecret(text);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->salt, made.salt);
  EXPECT_EQ(parsed->stored_key, made.stored_key);
  EXPECT_EQ(parsed->server_key, made.server_key);
  // Random salts differ.
  EXPECT_NE(MakeScramSecret("secret").salt, made.salt);
}

TEST(ScramSecretTest, RejectsMalformed) {
  const std::string key = "jyPtkyH1y/fQZHXvSl+FIbOTBFzUsUmC1Z1oOPHR16E=";
  const std::string short_key = "jyPtkyH1y/fQZHXvSl+FIbOTBFzUsUmC1Z1oOPHR1w==";  // 31 bytes
  const std::string cases[] = {
      "",
      "md53175bce1d3201d16594cebf9d7eb3f9d",
      "SCRAM-SHA-256$",
      "SCRAM-SHA-1$4096:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,
      "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$" + key,            // one key
      "SCRAM-SHA-256$4096$" + key + ":" + key,                         // no salt
      "SCRAM-SHA-256$:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,    // no iterations
      "SCRAM-SHA-256$0:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,   // zero iterations
      "SCRAM-SHA-256$-1:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,  // negative
      "SCRAM-SHA-256$4096x:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,
      "SCRAM-SHA-256$99999999999:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key,
      "SCRAM-SHA-256$4096::$" + key + ":" + key,                         // empty salt
      "SCRAM-SHA-256$4096:NsM2oj!Tm1QM76udK6JHtA==$" + key + ":" + key,  // bad base64
      "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$" + short_key + ":" + key,
      "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + short_key,
      "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$" + key + ":" + key + "$",
  };
  for (const auto& c : cases) EXPECT_EQ(ParseScramSecret(c), std::nullopt) << c;
}

// ---- SCRAM exchange: RFC 7677 known answers ----

TEST(ScramKnownAnswerTest, ServerAcceptsRfcClient) {
  ScramServer server(RfcSecret());
  server.SetNonceForTesting(kRfcServerNonce);
  auto server_first = server.HandleClientFirst(kRfcClientFirst);
  ASSERT_TRUE(server_first.ok()) << server_first.status().ToString();
  EXPECT_EQ(*server_first, kRfcServerFirst);
  auto server_final = server.HandleClientFinal(kRfcClientFinal);
  ASSERT_TRUE(server_final.ok()) << server_final.status().ToString();
  EXPECT_EQ(*server_final, kRfcServerFinal);
  EXPECT_EQ(server.client_key().size(), 32u);
}

TEST(ScramKnownAnswerTest, ClientProducesRfcProof) {
  ScramClient client = ScramClient::WithPassword("pencil");
  client.SetNonceForTesting(kRfcClientNonce, "user");
  EXPECT_EQ(client.ClientFirst(), kRfcClientFirst);
  auto client_final = client.HandleServerFirst(kRfcServerFirst);
  ASSERT_TRUE(client_final.ok()) << client_final.status().ToString();
  EXPECT_EQ(*client_final, kRfcClientFinal);
  EXPECT_TRUE(client.HandleServerFinal(kRfcServerFinal).ok());
}

TEST(ScramKnownAnswerTest, ClientRejectsWrongServerSignature) {
  ScramClient client = ScramClient::WithPassword("pencil");
  client.SetNonceForTesting(kRfcClientNonce, "user");
  (void)client.ClientFirst();
  ASSERT_TRUE(client.HandleServerFirst(kRfcServerFirst).ok());
  Status st = client.HandleServerFinal("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("signature"));
  EXPECT_FALSE(client.HandleServerFinal("e=invalid-proof").ok());
  EXPECT_FALSE(client.HandleServerFinal("v=!!").ok());
}

TEST(ScramKnownAnswerTest, ClientKeyGivesSameProof) {
  // The ClientKey the server recovers from the RFC exchange, replayed with
  // WithClientKey, produces the RFC's proof byte for byte.
  ScramServer server(RfcSecret());
  server.SetNonceForTesting(kRfcServerNonce);
  ASSERT_TRUE(server.HandleClientFirst(kRfcClientFirst).ok());
  ASSERT_TRUE(server.HandleClientFinal(kRfcClientFinal).ok());
  ScramClient client = ScramClient::WithClientKey(server.client_key(), RfcSecret().server_key);
  client.SetNonceForTesting(kRfcClientNonce, "user");
  (void)client.ClientFirst();
  auto client_final = client.HandleServerFirst(kRfcServerFirst);
  ASSERT_TRUE(client_final.ok());
  EXPECT_EQ(*client_final, kRfcClientFinal);
  EXPECT_TRUE(client.HandleServerFinal(kRfcServerFinal).ok());
}

// ---- SCRAM exchange: round trips ----

TEST(ScramRoundTripTest, PasswordLogsIn) {
  ScramServer server(MakeScramSecret("s3cret"));
  ScramClient client = ScramClient::WithPassword("s3cret");
  Status st = Exchange(client, server);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(server.client_key().size(), 32u);
}

TEST(ScramRoundTripTest, ClientFirstLooksLikeLibpq) {
  ScramClient client = ScramClient::WithPassword("x");
  std::string first = client.ClientFirst();
  EXPECT_THAT(first, StartsWith("n,,n=,r="));
  EXPECT_EQ(first.size(), 8u + 24u);  // 18 random bytes in base64
  EXPECT_NE(ScramClient::WithPassword("x").ClientFirst(), first);
}

TEST(ScramRoundTripTest, AgainstPostgresSecret) {
  ScramServer server(*ParseScramSecret(kPostgresSecret));
  ScramClient client = ScramClient::WithPassword(kPostgresPassword);
  Status st = Exchange(client, server);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST(ScramRoundTripTest, WrongPasswordFails) {
  ScramServer server(MakeScramSecret("s3cret"));
  ScramClient client = ScramClient::WithPassword("s3cret!");
  Status st = Exchange(client, server);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("password authentication failed"));
  EXPECT_TRUE(server.client_key().empty());
}

TEST(ScramRoundTripTest, ClientKeyPassThrough) {
  // A client logs in to the proxy with its password; the proxy then logs in
  // to a server holding the same secret with the recovered ClientKey.
  ScramSecret secret = MakeScramSecret("pass-through");
  ScramServer proxy_side(secret);
  ScramClient app = ScramClient::WithPassword("pass-through");
  ASSERT_TRUE(Exchange(app, proxy_side).ok());

  ScramServer postgres_side(secret);
  ScramClient proxy = ScramClient::WithClientKey(proxy_side.client_key(), secret.server_key);
  Status st = Exchange(proxy, postgres_side);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(postgres_side.client_key(), proxy_side.client_key());
}

TEST(ScramRoundTripTest, ClientKeyFromOtherSecretFails) {
  ScramSecret secret = MakeScramSecret("pw");
  ScramServer first(secret);
  ScramClient app = ScramClient::WithPassword("pw");
  ASSERT_TRUE(Exchange(app, first).ok());
  // Same password, different salt: a different ClientKey is expected.
  ScramServer other(MakeScramSecret("pw"));
  ScramClient proxy = ScramClient::WithClientKey(first.client_key(), secret.server_key);
  EXPECT_FALSE(Exchange(proxy, other).ok());
}

TEST(ScramRoundTripTest, ClientDetectsImpostorServer) {
  // A server that does not hold the real ServerKey cannot sign.
  ScramSecret real = MakeScramSecret("pw");
  ScramSecret fake = real;
  fake.server_key = MakeScramSecret("other", real.salt).server_key;
  ScramServer server(fake);
  ScramClient client = ScramClient::WithPassword("pw");
  Status st = Exchange(client, server);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("server signature"));
}

// ---- SCRAM server: malformed client messages ----

TEST(ScramServerTest, RejectsChannelBindingRequired) {
  ScramServer server(RfcSecret());
  auto r = server.HandleClientFirst("p=tls-server-end-point,,n=,r=abc");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("channel binding"));
}

TEST(ScramServerTest, AcceptsYFlagAndChecksItInFinal) {
  ScramServer server(RfcSecret());
  server.SetNonceForTesting(kRfcServerNonce);
  auto first = server.HandleClientFirst("y,,n=,r=abc");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // c= must repeat "y,," (base64 "eSws"), not "n,,".
  auto final_msg = server.HandleClientFinal(std::string("c=biws,r=abc") + kRfcServerNonce +
                                            ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  ASSERT_FALSE(final_msg.ok());
  EXPECT_THAT(final_msg.status().message(), HasSubstr("channel binding"));
}

TEST(ScramServerTest, RejectsMalformedClientFirst) {
  for (const char* bad :
       {"", "n", "n,", "x,,n=,r=abc", "n,a=admin,n=,r=abc", "n,,", "n,,r=abc",
        "n,,n=", "n,,n=,r=", "n,,n=,x=abc", "n,,m=ext,n=,r=abc", "n,,n=,r=a b", "n;,n=,r=abc"}) {
    ScramServer server(RfcSecret());
    auto r = server.HandleClientFirst(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << bad;
    }
  }
}

TEST(ScramServerTest, IgnoresUserNameAndExtensions) {
  ScramServer server(RfcSecret());
  auto r = server.HandleClientFirst("n,,n=someone=2Celse,r=abc,x=ext");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, StartsWith("r=abc"));
  EXPECT_THAT(*r, HasSubstr(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
  EXPECT_EQ(r->size(), std::string("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").size() + 24);
}

TEST(ScramServerTest, RejectsMalformedClientFinal) {
  const std::string nonce = std::string(kRfcClientNonce) + kRfcServerNonce;
  const std::string proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const std::string cases[] = {
      "",
      "c=biws",
      "c=biws,r=" + nonce,                                                      // no proof
      "r=" + nonce + ",c=biws," + proof,                                        // wrong order
      "c=eSws,r=" + nonce + "," + proof,                                        // "y,," after "n,,"
      "c=!!!!,r=" + nonce + "," + proof,                                        // bad base64
      "c=biws,r=" + nonce + "x," + proof,                                       // nonce mismatch
      "c=biws,r=" + std::string(kRfcClientNonce) + "," + proof,                 // client nonce only
      "c=biws,r=" + nonce + ",p=AAAA",                                          // proof too short
      "c=biws,r=" + nonce + ",p=!!",                                            // proof not base64
      "c=biws,r=" + nonce + "," + proof + ",x=after",                           // proof not last
      "c=biws,r=" + nonce + "," + proof + ",",                                  // trailing comma
      "c=biws,r=" + nonce + ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  // wrong proof
  };
  for (const auto& bad : cases) {
    ScramServer server(RfcSecret());
    server.SetNonceForTesting(kRfcServerNonce);
    ASSERT_TRUE(server.HandleClientFirst(kRfcClientFirst).ok());
    auto r = server.HandleClientFinal(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(server.client_key().empty()) << bad;
  }
}

TEST(ScramServerTest, AcceptsExtensionBeforeProof) {
  // RFC 5802 allows extensions between the nonce and the proof; they are part
  // of the AuthMessage, so the client must have signed them.
  ScramSecret secret = MakeScramSecret("pw");
  ScramServer server(secret);
  ScramClient client = ScramClient::WithPassword("pw");
  auto first = server.HandleClientFirst(client.ClientFirst());
  ASSERT_TRUE(first.ok());
  auto final_msg = client.HandleServerFirst(*first);
  ASSERT_TRUE(final_msg.ok());
  // Inserting an unsigned extension changes the AuthMessage: the proof fails.
  std::string tampered = *final_msg;
  tampered.insert(tampered.find(",p="), ",x=1");
  EXPECT_FALSE(server.HandleClientFinal(tampered).ok());
}

TEST(ScramServerTest, RejectsOutOfOrderMessages) {
  ScramServer server(RfcSecret());
  EXPECT_FALSE(server.HandleClientFinal(kRfcClientFinal).ok());
  // A failed step ends the exchange.
  EXPECT_FALSE(server.HandleClientFirst(kRfcClientFirst).ok());

  ScramServer twice(RfcSecret());
  ASSERT_TRUE(twice.HandleClientFirst(kRfcClientFirst).ok());
  EXPECT_FALSE(twice.HandleClientFirst(kRfcClientFirst).ok());
}

// ---- SCRAM client: malformed server messages ----

TEST(ScramClientTest, RejectsMalformedServerFirst) {
  const std::string cases[] = {
      "",
      "r=rOprNGfwEbeRWgbNEkqO",                                       // no salt, no iterations
      "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",     // nonce not extended
      "r=XXXXNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // other nonce
      "r=rOprNGfwEbeRWgbNEkqOabc,s=W22Z!!,i=4096",                    // bad salt
      "r=rOprNGfwEbeRWgbNEkqOabc,s=,i=4096",                          // empty salt
      "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",     // zero iterations
      "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=x",
      "r=rOprNGfwEbeRWgbNEkqOabc,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",  // wrong order
      "m=ext,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
      "e=other-error",
  };
  for (const auto& bad : cases) {
    ScramClient client = ScramClient::WithPassword("pencil");
    client.SetNonceForTesting(kRfcClientNonce);
    (void)client.ClientFirst();
    EXPECT_FALSE(client.HandleServerFirst(bad).ok()) << bad;
  }
}

TEST(ScramClientTest, RejectsOutOfOrderMessages) {
  ScramClient client = ScramClient::WithPassword("pencil");
  EXPECT_FALSE(client.HandleServerFirst(kRfcServerFirst).ok());  // before ClientFirst
  EXPECT_FALSE(client.HandleServerFinal(kRfcServerFinal).ok());
}

TEST(MockScramSecretTest, StablePerUserAndProcessSecretWithRealSaltSize) {
  ScramSecret a = MockScramSecret("nobody", "secret-1");
  ScramSecret b = MockScramSecret("nobody", "secret-1");
  EXPECT_EQ(a.salt, b.salt);
  EXPECT_EQ(a.salt.size(), 16u);
  EXPECT_EQ(a.iterations, 4096);
  EXPECT_NE(MockScramSecret("somebody", "secret-1").salt, a.salt);
  EXPECT_NE(MockScramSecret("nobody", "secret-2").salt, a.salt);
  // No proof verifies against it: a full exchange with any password fails.
  ScramServer server(a);
  ScramClient client = ScramClient::WithPassword("guess");
  auto first = server.HandleClientFirst(client.ClientFirst());
  ASSERT_TRUE(first.ok());
  auto final_msg = client.HandleServerFirst(*first);
  ASSERT_TRUE(final_msg.ok());
  EXPECT_FALSE(server.HandleClientFinal(*final_msg).ok());
}

}  // namespace
}  // namespace pgwarden::pgwire
