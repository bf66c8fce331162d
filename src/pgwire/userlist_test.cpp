// Tests of the userlist.txt (PgBouncer auth_file) reader and credential classification.
#include "pgwire/userlist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "pgwire/auth.h"

namespace pgwarden::pgwire {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::string_literals;

constexpr char kScram[] =
    "SCRAM-SHA-256$4096:NsM2ojATm1QM76udK6JHtA==$jyPtkyH1y/fQZHXvSl+FIbOTBFzUsUmC1Z1oOPHR16E=:"
    "ouPKAUTi8G9q0NlWnd0Rr7IWya3aG4notCqapLv9XEE=";

TEST(UserListTest, ParsesAllKindsAndEscapes) {
  std::string text = std::string(R"(; PgBouncer-style comment
# another comment

"alice" "plain password"
  "bob"	"md53175bce1d3201d16594cebf9d7eb3f9d"
"carol" ")") + kScram +
                     R"("
"da""ve" "say ""hi"""
"erin" "" 
"frank" "x" rest of the line is ignored
"gus""" "a"
   ; indented comment
)";
  auto users = ParseUserList(text, "userlist.txt");
  ASSERT_TRUE(users.ok()) << users.status().ToString();
  ASSERT_EQ(users->size(), 7u);
  EXPECT_EQ(users->at("alice").kind, UserCredential::Kind::kPlain);
  EXPECT_EQ(users->at("alice").value, "plain password");
  EXPECT_EQ(users->at("bob").kind, UserCredential::Kind::kMd5);
  EXPECT_EQ(users->at("bob").value, "md53175bce1d3201d16594cebf9d7eb3f9d");
  EXPECT_EQ(users->at("carol").kind, UserCredential::Kind::kScram);
  EXPECT_EQ(users->at("carol").value, kScram);
  EXPECT_EQ(users->at("da\"ve").value, "say \"hi\"");
  EXPECT_EQ(users->at("erin").kind, UserCredential::Kind::kPlain);
  EXPECT_EQ(users->at("erin").value, "");
  EXPECT_EQ(users->at("frank").value, "x");
  EXPECT_EQ(users->at("gus\"").value, "a");
}

TEST(UserListTest, CrLfAndNoFinalNewline) {
  auto users = ParseUserList("\"a\" \"1\"\r\n\"b\" \"2\"", "u");
  ASSERT_TRUE(users.ok()) << users.status().ToString();
  EXPECT_EQ(users->at("a").value, "1");
  EXPECT_EQ(users->at("b").value, "2");
}

TEST(UserListTest, LaterLineWins) {
  auto users = ParseUserList("\"a\" \"1\"\n\"a\" \"2\"\n", "u");
  ASSERT_TRUE(users.ok());
  EXPECT_EQ(users->at("a").value, "2");
}

TEST(UserListTest, EmptyFile) {
  auto users = ParseUserList("", "u");
  ASSERT_TRUE(users.ok());
  EXPECT_TRUE(users->empty());
}

// Each bad text → InvalidArgument "<file>:<line>: ..." mentioning `expected`.
TEST(UserListTest, BadLinesNameFileAndLine) {
  const struct {
    std::string text;
    const char* expected;
  } cases[] = {
      {"alice password\n", "userlist.txt:1: expected a double-quoted field (user name)"},
      {"\"a\" \"1\"\n\n\"alice\"\n", "userlist.txt:3: expected a double-quoted field (password"},
      {"\"alice\" password\n", "userlist.txt:1: expected a double-quoted field (password"},
      {"\"alice \"pw\"\n", "userlist.txt:1: expected a double-quoted field (password"},
      {"; c\n\"alice\" \"pw\n", "userlist.txt:2: unterminated"},
      {"\"alice\n\" \"pw\"\n", "userlist.txt:1: unterminated"},
      {"\"\" \"pw\"\n", "userlist.txt:1: empty user name"},
      {"\"a\" \"SCRAM-SHA-256$4096:abc\"\n", "userlist.txt:1: malformed SCRAM secret"},
      {"\"a\" \"1\"\n\"a\0b\" \"2\"\n"s, "userlist.txt:2: NUL byte"},
      {"\xff\xfe\"a\" \"1\"\n", "userlist.txt:1:"},
  };
  for (const auto& c : cases) {
    auto r = ParseUserList(c.text, "userlist.txt");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << c.text;
    EXPECT_THAT(r.status().message(), StartsWith(c.expected)) << c.text;
  }
}

TEST(UserListTest, GarbageNeverCrashes) {
  std::string good = std::string("\"alice\" \"") + kScram + "\"\n\"b\"\"\" \"x\"\n";
  for (size_t i = 0; i < good.size(); ++i) {
    for (char c : {'\0', '"', '\n', ' ', ';', '\xff'}) {
      std::string text = good;
      text[i] = c;
      auto r = ParseUserList(text, "f");
      if (!r.ok()) {
        EXPECT_THAT(r.status().message(), StartsWith("f:"));
      }
    }
    (void)ParseUserList(good.substr(0, i), "f");
  }
}

TEST(ClassifyCredentialTest, KindsAsPostgres) {
  EXPECT_EQ(ClassifyCredential("md53175bce1d3201d16594cebf9d7eb3f9d").kind,
            UserCredential::Kind::kMd5);
  EXPECT_EQ(ClassifyCredential(kScram).kind, UserCredential::Kind::kScram);
  // Not quite md5 or SCRAM: a plain password, as PostgreSQL would take it.
  EXPECT_EQ(ClassifyCredential("md53175bce1d3201d16594cebf9d7eb3f9").kind,
            UserCredential::Kind::kPlain);  // 31 digits
  EXPECT_EQ(ClassifyCredential("md53175BCE1d3201d16594cebf9d7eb3f9d").kind,
            UserCredential::Kind::kPlain);  // upper case
  EXPECT_EQ(ClassifyCredential("md5zz75bce1d3201d16594cebf9d7eb3f9d").kind,
            UserCredential::Kind::kPlain);
  EXPECT_EQ(ClassifyCredential("SCRAM-SHA-256$4096:abc").kind, UserCredential::Kind::kPlain);
  EXPECT_EQ(ClassifyCredential("").kind, UserCredential::Kind::kPlain);
  EXPECT_EQ(ClassifyCredential("hunter2").value, "hunter2");
}

TEST(LoadUserListFileTest, ReadsFileAndNamesItInErrors) {
  char path[] = "/tmp/pgwire_userlist_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  { std::ofstream(path) << "\"alice\" \"pw\"\n"; }
  auto users = LoadUserListFile(path);
  ASSERT_TRUE(users.ok()) << users.status().ToString();
  EXPECT_EQ(users->at("alice").value, "pw");
  { std::ofstream(path) << "\"alice\" \"pw\"\nbroken\n"; }
  users = LoadUserListFile(path);
  ASSERT_FALSE(users.ok());
  EXPECT_THAT(users.status().message(), StartsWith(std::string(path) + ":2: "));
  std::remove(path);
  users = LoadUserListFile(path);
  ASSERT_FALSE(users.ok());
  EXPECT_EQ(users.status().code(), ErrorCode::kNotFound);
  EXPECT_THAT(users.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace pgwarden::pgwire
