// Tests of the quoting of postgresql.conf, pg_hba.conf and conninfo values; libpq's own parser
// reads the conninfo back (the other two are read back by PostgreSQL in quoting_roundtrip_test).
#include "pg/quoting.h"

#include <libpq-fe.h>

#include <random>
#include <string>

#include <gtest/gtest.h>

namespace pgwarden::pg {
namespace {

// Random strings heavy in the characters that matter: quotes, backslashes,
// spaces, '=', line breaks, high bytes.
std::string RandomValue(std::mt19937& rng) {
  static const std::string kSpecial = "'\"\\ =\n\r\t,#@+";
  std::uniform_int_distribution<int> len(0, 24), pick(0, 3), byte(1, 255);
  std::string out;
  for (int i = len(rng); i > 0; --i) {
    if (pick(rng) == 0) {
      out += kSpecial[std::uniform_int_distribution<size_t>(0, kSpecial.size() - 1)(rng)];
    } else {
      out += static_cast<char>(byte(rng));
    }
  }
  return out;
}

// What libpq reads for `keyword` in `conninfo`; nullopt when it refuses the string.
std::optional<std::string> ParsedByLibpq(const std::string& conninfo, const char* keyword) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    PQfreemem(err);
    return std::nullopt;
  }
  std::optional<std::string> out;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) == keyword && o->val != nullptr) out = o->val;
  }
  PQconninfoFree(opts);
  return out;
}

// Regression: a replication password with ' or \ broke every replica.
TEST(QuotingTest, LibpqReadsBackEveryRandomConninfoValue) {
  std::mt19937 rng(20261204);
  for (int i = 0; i < 5000; ++i) {
    const std::string password = RandomValue(rng);
    const std::string user = RandomValue(rng);
    const std::string ci = "host=127.0.0.1 user=" + QuoteConninfoValue(user) +
                           " password=" + QuoteConninfoValue(password) + " port=5432";
    EXPECT_EQ(ParsedByLibpq(ci, "password"), password) << ci;
    EXPECT_EQ(ParsedByLibpq(ci, "user"), user) << ci;
    EXPECT_EQ(ParsedByLibpq(ci, "port"), "5432") << ci;
  }
}

TEST(QuotingTest, ConfValuesEscapeQuotesBackslashesAndLineBreaks) {
  EXPECT_EQ(QuoteConfValue(""), "''");
  EXPECT_EQ(QuoteConfValue("it's"), "'it''s'");
  EXPECT_EQ(QuoteConfValue("a\\b"), "'a\\\\b'");
  EXPECT_EQ(QuoteConfValue("a\nb\rc"), "'a\\nb\\rc'");
  // A conninfo inside postgresql.conf: both quotings, each undone once.
  EXPECT_EQ(QuoteConfValue("password=" + QuoteConninfoValue("x'\\y")),
            "'password=''x\\\\''\\\\\\\\y'''");
}

TEST(QuotingTest, HbaTokensAreDoubleQuotedSoNoNameIsAKeyword) {
  EXPECT_EQ(QuoteHbaToken("replicator"), "\"replicator\"");
  EXPECT_EQ(QuoteHbaToken("all"), "\"all\"");
  EXPECT_EQ(QuoteHbaToken("we\"ird, name"), "\"we\"\"ird, name\"");
}

}  // namespace
}  // namespace pgwarden::pg
