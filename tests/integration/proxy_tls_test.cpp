// TLS through the proxy: clients to the proxy and the proxy to PostgreSQL, both encrypted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <filesystem>

#include "common/process.h"
#include "pg/connection.h"
#include "proxy_util.h"

namespace pgwarden::itest {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A self-signed certificate for 127.0.0.1 in `dir` (cert.pem, key.pem).
Status MakeCertificate(const std::string& dir) {
  ProcessOptions o;
  auto r = RunProcess(
      {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
       dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"},
      o, std::chrono::seconds(60));
  if (!r.ok()) return r.status();
  if (!r->ok()) return IoError("openssl req: " + r->Describe());
  return Status::Ok();
}

// PostgreSQL with ssl = on, using the same certificate.
Status EnableServerSsl(const std::string& data_dir, const std::string& cert_dir,
                       const std::string& superuser_conninfo) {
  std::error_code ec;
  fs::copy_file(cert_dir + "/cert.pem", data_dir + "/server.crt",
                fs::copy_options::overwrite_existing, ec);
  if (!ec) {
    fs::copy_file(cert_dir + "/key.pem", data_dir + "/server.key",
                  fs::copy_options::overwrite_existing, ec);
  }
  if (ec) return IoError("copying the certificate: " + ec.message());
  fs::permissions(data_dir + "/server.key", fs::perms::owner_read | fs::perms::owner_write, ec);
  if (geteuid() == 0) {
    auto pg = LookupOsUser("postgres");
    if (!pg.ok()) return pg.status();
    for (const char* f : {"/server.crt", "/server.key"}) {
      if (chown((data_dir + f).c_str(), pg->uid, pg->gid) != 0) return IoError("chown");
    }
  }
  // (ALTER SYSTEM returns no row; a SELECT around it does.)
  auto a = QueryValue(superuser_conninfo, "SELECT 1");
  if (!a.ok()) return a.status();
  auto conn = pg::Connection::Open(superuser_conninfo, std::chrono::seconds(5));
  if (!conn.ok()) return conn.status();
  PGW_RETURN_IF_ERROR((*conn)->Exec("ALTER SYSTEM SET ssl = on"));
  auto b = QueryValue(superuser_conninfo, "SELECT pg_reload_conf()");
  if (!b.ok()) return b.status();
  return Status::Ok();
}

TEST(ProxyTlsTest, ClientAndServerSidesAreEncrypted) {
  TempDir tmp("pgw-itest-proxy-tls");
  ProxyBackend backend(tmp.path());
  Status st = backend.Start();
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = MakeCertificate(tmp.path());
  ASSERT_TRUE(st.ok()) << st.ToString();
  st =
      EnableServerSsl(tmp.path() + "/cluster/node1/data", tmp.path(), backend.superuser_conninfo());
  ASSERT_TRUE(st.ok()) << st.ToString();
  // ssl = on takes effect at the reload; a direct TLS connection proves it.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto v = QueryValue(backend.DirectConninfo("sslmode=require"), "SELECT 1");
        return v.ok();
      },
      10s));

  ProxyOptions o;
  o.extra_yaml = "  client_tls: {sslmode: require, cert_file: " + tmp.path() +
                 "/cert.pem, key_file: " + tmp.path() +
                 "/key.pem}\n  server_tls: {sslmode: require}\n";
  ProxyProcess proxy;
  st = proxy.Start(tmp.path(), backend.pg_port(), o);
  ASSERT_TRUE(st.ok()) << st.ToString() << proxy.Log();

  std::string err;
  PqConn c = OpenPq(proxy.Conninfo("postgres", "sslmode=require"), &err);
  ASSERT_TRUE(c) << err << proxy.Log();
  EXPECT_EQ(PQsslInUse(c.get()), 1) << "the client's connection to the proxy is not TLS";
  // The backend serving us sees a TLS connection from the proxy.
  PqOutcome o1 = PqExec(c.get(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  ASSERT_TRUE(o1.ok) << o1.error;
  EXPECT_EQ(o1.value, "t") << "the proxy's connection to PostgreSQL is not TLS";
  // Extended protocol and a large result through both TLS legs.
  PqOutcome o2 = PqExec(c.get(),
                        "SELECT length(string_agg(md5(i::text), '')) FROM "
                        "generate_series(1, 20000) i");
  ASSERT_TRUE(o2.ok) << o2.error;
  EXPECT_EQ(o2.value, "640000");

  // sslmode: require on the client side refuses plaintext clients.
  PqConn plain = OpenPq(proxy.Conninfo("postgres", "sslmode=disable"), &err);
  EXPECT_FALSE(plain) << "a plaintext client got in";
  EXPECT_THAT(err, HasSubstr("requires TLS"));
}

}  // namespace
}  // namespace pgwarden::itest
