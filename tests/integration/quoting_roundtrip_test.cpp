// PostgreSQL itself reads back what pg/quoting.h writes: postgresql.conf values through
// `postgres -C`, pg_hba.conf tokens through pg_hba_file_rules, for random strings.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "itest_util.h"
#include "pg/quoting.h"

namespace pgwarden::itest {
namespace {

namespace fs = std::filesystem;
constexpr const char* kPgBin = "/usr/lib/postgresql/15/bin";

std::string RandomValue(std::mt19937& rng, bool printable_only) {
  static const std::string kSpecial = "'\"\\ =\t,#@+";
  std::uniform_int_distribution<int> len(0, 20), pick(0, 2);
  std::uniform_int_distribution<int> byte(printable_only ? 32 : 1, printable_only ? 126 : 255);
  std::string out;
  for (int i = len(rng); i > 0; --i) {
    if (pick(rng) == 0) {
      out += kSpecial[std::uniform_int_distribution<size_t>(0, kSpecial.size() - 1)(rng)];
    } else if (!printable_only && pick(rng) == 0) {
      out += "\n\r"[pick(rng) % 2];
    } else {
      out += static_cast<char>(byte(rng));
    }
  }
  return out;
}

class QuotingRoundTripTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access((std::string(kPgBin) + "/initdb").c_str(), X_OK) != 0) {
      GTEST_SKIP() << "PostgreSQL 15 is not installed";
    }
    data_ = tmp_.Sub("data");
    if (RunningAsRoot()) {
      ASSERT_TRUE(fs::create_directory(data_));
      auto pg_user = LookupOsUser("postgres");
      ASSERT_TRUE(pg_user.ok()) << pg_user.status().ToString();
      ASSERT_EQ(chown(data_.c_str(), pg_user->uid, pg_user->gid), 0);
      as_pg_.os_user = "postgres";
    }
    ProcessResult initdb =
        RunCombined({std::string(kPgBin) + "/initdb", "-D", data_, "-U", "postgres", "-A", "trust"},
                    120s, as_pg_);
    ASSERT_TRUE(initdb.ok()) << initdb.Describe();
  }

  // Writes a file PostgreSQL (running as the postgres user) can read.
  void WriteDataFile(const std::string& name, const std::string& content) {
    const std::string path = data_ + "/" + name;
    ASSERT_TRUE(WriteFile(path, content));
    if (RunningAsRoot()) {
      auto pg_user = LookupOsUser("postgres");
      ASSERT_TRUE(pg_user.ok());
      ASSERT_EQ(chown(path.c_str(), pg_user->uid, pg_user->gid), 0);
    }
  }

  TempDir tmp_{"pgw-itest-quoting"};
  std::string data_;
  ProcessOptions as_pg_;
};

// Regression: values were quoted without escaping backslashes, so a password
// with ' or \ made postgresql.conf unreadable or wrong.
TEST_F(QuotingRoundTripTest, PostgresReadsBackRandomConfValuesAndConninfosInThem) {
  std::ofstream(data_ + "/postgresql.conf", std::ios::app) << "include 'probe.conf'\n";
  std::mt19937 rng(4122026);
  for (int i = 0; i < 150; ++i) {
    std::string value = RandomValue(rng, false);
    if (i % 3 == 0) {  // primary_conninfo's shape: a conninfo value inside a conf value
      value = "host=127.0.0.1 password=" + pg::QuoteConninfoValue(value);
    }
    WriteDataFile("probe.conf", "pgwarden.probe = " + pg::QuoteConfValue(value) + "\n");
    ProcessResult r = RunCombined(
        {std::string(kPgBin) + "/postgres", "-D", data_, "-C", "pgwarden.probe"}, 30s, as_pg_);
    ASSERT_TRUE(r.ok()) << "value #" << i << " " << nlohmann::json(value).dump() << ": "
                        << r.Describe();
    EXPECT_EQ(r.output, value + "\n") << "value #" << i;
  }
}

TEST_F(QuotingRoundTripTest, PgHbaFileRulesReadBackRandomRoleNames) {
  const std::string sockets = tmp_.Sub("sock");
  ASSERT_TRUE(fs::create_directory(sockets));
  ::chmod(sockets.c_str(), 0777);
  const uint16_t port = FreePort();
  std::mt19937 rng(20261204);
  std::vector<std::string> names;
  std::ostringstream hba;
  hba << "local all all trust\n";
  for (int i = 0; i < 200; ++i) {
    names.push_back(RandomValue(rng, true));
    hba << "host replication " << pg::QuoteHbaToken(names.back())
        << " 127.0.0.1/32 scram-sha-256\n";
  }
  names.push_back("all");  // a keyword, quoted: a role named "all", not every role
  hba << "host all " << pg::QuoteHbaToken("all") << " 127.0.0.1/32 scram-sha-256\n";
  WriteDataFile("pg_hba.conf", hba.str());

  ChildProcess postgres;
  Status st = postgres.Start({std::string(kPgBin) + "/postgres", "-D", data_, "-p",
                              std::to_string(port), "-k", sockets, "-c", "listen_addresses="},
                             tmp_.Sub("postgres.log"), as_pg_);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string ci = "host=" + sockets + " port=" + std::to_string(port) +
                         " user=postgres dbname=postgres connect_timeout=5";
  ASSERT_TRUE(WaitFor([&] { return Connect(ci).ok(); }, 30s)) << ReadFile(postgres.log_file());
  auto rows = QueryOnce(ci,
                        "SELECT array_to_json(user_name)::text, coalesce(error, '') "
                        "FROM pg_hba_file_rules WHERE line_number > 1 ORDER BY line_number");
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->rows.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(rows->text(i, 1), "") << "line " << i + 2;
    EXPECT_EQ(nlohmann::json::parse(rows->text(i, 0)), nlohmann::json::array({names[i]}))
        << "line " << i + 2 << ": " << nlohmann::json(names[i]).dump();
  }
  postgres.Stop(SIGINT, 30s);
}

}  // namespace
}  // namespace pgwarden::itest
