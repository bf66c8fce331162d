// PgController for a local PostgreSQL 15: files, processes (as os_user when root) and libpq.
#include "pg/controller.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/process.h"

namespace pgwarden::pg {
namespace fs = std::filesystem;
namespace {

constexpr const char* kComponent = "pg";
constexpr auto kToolTimeout = std::chrono::minutes(10);

// Settings pgwarden needs for replication; the user's parameters override them.
const std::map<std::string, std::string>& BaseParameters() {
  static const std::map<std::string, std::string> kBase = {
      {"wal_level", "replica"},       {"hot_standby", "on"},
      {"max_wal_senders", "10"},      {"max_replication_slots", "10"},
      {"wal_log_hints", "on"},        {"password_encryption", "scram-sha-256"},
      {"hot_standby_feedback", "on"}, {"wal_receiver_status_interval", "1s"},
  };
  return kBase;
}

// Parameters pgwarden owns; a value for them in the config is ignored with a warning.
bool IsManagedParameter(const std::string& name) {
  return name == "listen_addresses" || name == "port" || name == "primary_conninfo" ||
         name == "primary_slot_name" || name == "synchronous_standby_names" ||
         name == "unix_socket_directories" || name == "hba_file";
}

Status WriteFileAtomic(const std::string& path, const std::string& content, uid_t uid, gid_t gid,
                       bool chown_it) {
  std::string tmp = path + ".pgwarden.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return IoError("cannot write " + tmp + ": " + std::strerror(errno));
    out << content;
    out.flush();
    if (!out) return IoError("cannot write " + tmp + ": " + std::strerror(errno));
  }
  ::chmod(tmp.c_str(), 0600);
  if (chown_it && ::chown(tmp.c_str(), uid, gid) != 0) {
    return IoError("cannot chown " + tmp + ": " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return IoError("cannot rename " + tmp + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

class PgControllerImpl final : public PgController {
 public:
  explicit PgControllerImpl(PgSettings s) : s_(std::move(s)) {
    if (geteuid() == 0) {
      auto u = LookupOsUser(s_.os_user);
      if (u.ok()) {
        run_as_ = s_.os_user;
        uid_ = u->uid;
        gid_ = u->gid;
      }
    }
    socket_dir_ = SocketDir();
    AdoptRunningPostmaster();
  }

  ~PgControllerImpl() override = default;

  DataDirInfo InspectDataDir() const override {
    DataDirInfo info;
    std::error_code ec;
    if (!fs::exists(s_.data_dir, ec)) return info;
    if (!fs::is_directory(s_.data_dir, ec)) {
      info.kind = DataDirKind::kInvalid;
      info.problem = s_.data_dir + " exists and is not a directory";
      return info;
    }
    if (fs::is_empty(s_.data_dir, ec)) return info;
    if (!fs::exists(fs::path(s_.data_dir) / "PG_VERSION", ec)) {
      info.kind = DataDirKind::kInvalid;
      info.problem = s_.data_dir +
                     " is not empty and holds no PostgreSQL data directory (no PG_VERSION); "
                     "empty it or point postgresql.data_dir elsewhere";
      return info;
    }
    std::ifstream ver(fs::path(s_.data_dir) / "PG_VERSION");
    std::string major;
    std::getline(ver, major);
    if (major != "15") {
      info.kind = DataDirKind::kInvalid;
      info.problem = s_.data_dir + " holds a PostgreSQL " + major +
                     " data directory; pgwarden runs PostgreSQL 15";
      return info;
    }
    auto sysid = ReadSystemIdentifier(s_.data_dir);
    if (!sysid.ok()) {
      info.kind = DataDirKind::kInvalid;
      info.problem = sysid.status().message();
      return info;
    }
    info.kind = DataDirKind::kInitialized;
    info.system_identifier = *sysid;
    info.standby_signal = fs::exists(fs::path(s_.data_dir) / "standby.signal", ec);
    return info;
  }

  Status CheckDataDirReachable() const override {
    if (run_as_.empty()) return Status::Ok();
    // Walk up to the first existing ancestor; each one must be enterable by os_user.
    fs::path p = fs::path(s_.data_dir).lexically_normal();
    std::vector<fs::path> chain;
    for (fs::path q = p; !q.empty() && q != q.root_path(); q = q.parent_path()) chain.push_back(q);
    std::reverse(chain.begin(), chain.end());
    for (const auto& dir : chain) {
      std::error_code ec;
      if (!fs::exists(dir, ec)) break;
      auto r = RunProcess({"/usr/bin/test", "-x", dir.string()}, Opts(), std::chrono::seconds(10));
      if (!r.ok()) return r.status();
      if (!r->ok()) {
        return InvalidArgument("data_dir " + s_.data_dir + " is not reachable by the OS user '" +
                               run_as_ + "' that runs PostgreSQL: it cannot enter " + dir.string() +
                               " (PostgreSQL refuses to run as root). Put the data directory "
                               "where that user can reach it, e.g. under /var/lib/pgwarden or "
                               "/var/tmp");
      }
    }
    return Status::Ok();
  }

  Status Initdb() override {
    PGW_RETURN_IF_ERROR(PrepareEmptyDataDir());
    std::vector<std::string> argv = {Bin("initdb"),
                                     "-D",
                                     s_.data_dir,
                                     "-U",
                                     s_.superuser.username,
                                     "--auth-local=trust",
                                     "--auth-host=scram-sha-256"};
    for (const auto& a : s_.initdb_args) argv.push_back(a);
    LOG_INFO(kComponent, "running initdb in " << s_.data_dir);
    auto r = RunProcess(argv, Opts(), kToolTimeout);
    if (!r.ok()) return r.status();
    if (!r->ok()) return PgUnavailable("initdb failed: " + r->Describe());
    std::error_code ec;
    fs::rename(fs::path(s_.data_dir) / "postgresql.conf",
               fs::path(s_.data_dir) / "postgresql.base.conf", ec);
    if (ec) return IoError("cannot rename postgresql.conf: " + ec.message());
    return WriteConfig(std::nullopt, "");
  }

  Status CreateRoles() override {
    auto conn = Connect();
    if (!conn.ok()) return conn.status();
    auto& c = **conn;
    if (!s_.superuser.password.empty()) {
      PGW_RETURN_IF_ERROR(c.Exec("ALTER ROLE " + QuoteIdent(s_.superuser.username) +
                                 " WITH PASSWORD " + QuoteLiteral(s_.superuser.password)));
    }
    const auto& repl = s_.replication;
    auto exists = c.Query("SELECT 1 FROM pg_roles WHERE rolname = $1", {repl.username});
    if (!exists.ok()) return exists.status();
    std::string verb = exists->rows.empty() ? "CREATE ROLE " : "ALTER ROLE ";
    std::string sql = verb + QuoteIdent(repl.username) + " WITH REPLICATION LOGIN";
    if (!repl.password.empty()) sql += " PASSWORD " + QuoteLiteral(repl.password);
    return c.Exec(sql);
  }

  Status Rewind(const StandbyTarget& from) override {
    if (IsRunning()) return InvalidArgument("pg_rewind needs PostgreSQL stopped");
    PGW_RETURN_IF_ERROR(EnsureCleanShutdown());
    const config::RoleAuth& role = s_.rewind.username.empty() ? s_.superuser : s_.rewind;
    std::string source =
        "host=" + QuoteConninfoValue(from.host) + " port=" + std::to_string(from.port) +
        " user=" + QuoteConninfoValue(role.username) +
        " dbname=postgres application_name=" + QuoteConninfoValue(s_.member_name + "-rewind");
    std::vector<std::string> argv = {
        Bin("pg_rewind"), "--target-pgdata", s_.data_dir, "--source-server", source, "--progress"};
    ProcessOptions opts = Opts();
    if (!role.password.empty()) opts.env.push_back("PGPASSWORD=" + role.password);
    opts.env.push_back("PGCONNECT_TIMEOUT=10");
    LOG_INFO(kComponent, "pg_rewind from " << from.host << ":" << from.port);
    auto r = RunProcess(argv, opts, kToolTimeout);
    if (!r.ok()) return r.status();
    if (!r->ok()) return PgUnavailable("pg_rewind failed: " + r->Describe());
    const bool needed = r->output.find("no rewind required") == std::string::npos;
    LOG_INFO(kComponent, (needed ? "pg_rewind done: this member now follows the leader's history"
                                 : "pg_rewind: no rewind required"));
    return Status::Ok();
  }

  // A crashed data directory (kill -9, immediate shutdown) goes through crash
  // recovery before pg_rewind. Not pg_rewind's own: its end-of-recovery
  // checkpoint may recycle the WAL that pg_rewind then needs to find the
  // last common checkpoint; with archive_mode on and an archive_command
  // that fails, every segment stays (what Patroni does too).
  Status EnsureCleanShutdown() {
    auto control = RunProcess({Bin("pg_controldata"), "-D", s_.data_dir}, Opts(), kToolTimeout);
    if (!control.ok()) return control.status();
    if (!control->ok()) return PgUnavailable("pg_controldata failed: " + control->Describe());
    const std::string& out = control->output;
    auto at = out.find("Database cluster state:");
    if (at == std::string::npos) return PgUnavailable("pg_controldata shows no cluster state");
    std::string state = out.substr(at, out.find('\n', at) - at);
    if (state.find("shut down") != std::string::npos) return Status::Ok();
    LOG_INFO(kComponent, "crash recovery in single-user mode before pg_rewind (" << state << ")");
    auto r = RunProcess({Bin("postgres"), "--single", "-F", "-D", s_.data_dir, "-c",
                         "archive_mode=on", "-c", "archive_command=false", "template1"},
                        Opts(), kToolTimeout);
    if (!r.ok()) return r.status();
    if (!r->ok()) return PgUnavailable("crash recovery before pg_rewind failed: " + r->Describe());
    return Status::Ok();
  }

  Status BaseBackup(const StandbyTarget& from) override {
    PGW_RETURN_IF_ERROR(PrepareEmptyDataDir());
    std::string conninfo = "host=" + QuoteConninfoValue(from.host) +
                           " port=" + std::to_string(from.port) +
                           " user=" + QuoteConninfoValue(s_.replication.username) +
                           " application_name=" + QuoteConninfoValue(s_.member_name);
    std::vector<std::string> argv = {Bin("pg_basebackup"),
                                     "-D",
                                     s_.data_dir,
                                     "-X",
                                     "stream",
                                     "-c",
                                     "fast",
                                     "-w",
                                     "-d",
                                     conninfo};
    if (!from.slot.empty()) argv.insert(argv.end(), {"-S", from.slot});
    ProcessOptions opts = Opts();
    opts.env.push_back("PGPASSWORD=" + s_.replication.password);
    opts.env.push_back("PGCONNECT_TIMEOUT=10");
    LOG_INFO(kComponent, "pg_basebackup from " << from.host << ":" << from.port
                                               << (from.slot.empty() ? "" : " slot " + from.slot));
    auto r = RunProcess(argv, opts, kToolTimeout * 6);
    if (!r.ok()) return r.status();
    if (!r->ok()) {
      // Leave an empty directory so the next attempt starts clean.
      (void)ClearDataDir();
      return PgUnavailable("pg_basebackup failed: " + r->Describe());
    }
    return Status::Ok();
  }

  Status WriteConfig(const std::optional<StandbyTarget>& follow,
                     const std::string& synchronous_standby_names) override {
    PGW_RETURN_IF_ERROR(EnsureSocketDir());
    std::ostringstream conf;
    conf << "# Written by pgwarden at every start and configuration change: do not edit.\n"
         << "# Set parameters in bootstrap.dcs.postgresql.parameters or postgresql.parameters\n"
         << "# of the pgwarden configuration. initdb's original file is postgresql.base.conf.\n"
         << "include_if_exists = 'postgresql.base.conf'\n\n";
    std::map<std::string, std::string> params = BaseParameters();
    for (const auto& [k, v] : s_.parameters) {
      if (IsManagedParameter(k)) {
        LOG_WARN(kComponent, "parameter " << k << " is managed by pgwarden; the configured value "
                                          << v << " is ignored");
        continue;
      }
      params[k] = v;
    }
    params["listen_addresses"] = s_.listen.host;
    params["port"] = std::to_string(s_.listen.port);
    params["unix_socket_directories"] = socket_dir_;
    params["synchronous_standby_names"] = synchronous_standby_names;
    if (!params.count("cluster_name")) params["cluster_name"] = s_.member_name;
    if (!params.count("max_slot_wal_keep_size")) {
      // A stopped member's slot would otherwise keep WAL until the disk is full.
      struct statvfs fs_stat {};
      if (::statvfs(s_.data_dir.c_str(), &fs_stat) == 0) {
        params["max_slot_wal_keep_size"] = DefaultMaxSlotWalKeepSize(
            static_cast<uint64_t>(fs_stat.f_bavail) * static_cast<uint64_t>(fs_stat.f_frsize));
      }
    }
    if (follow && !follow->host.empty()) {
      std::string ci =
          "host=" + QuoteConninfoValue(follow->host) + " port=" + std::to_string(follow->port) +
          " user=" + QuoteConninfoValue(s_.replication.username) +
          " application_name=" + QuoteConninfoValue(s_.member_name) + " connect_timeout=5";
      if (!s_.replication.password.empty()) {
        ci += " password=" + QuoteConninfoValue(s_.replication.password);
      }
      params["primary_conninfo"] = ci;
      params["primary_slot_name"] = follow->slot;
    }
    for (const auto& [k, v] : params) conf << k << " = " << QuoteConfValue(v) << "\n";
    PGW_RETURN_IF_ERROR(WriteDataFile("postgresql.conf", conf.str()));

    std::ostringstream hba;
    hba << "# Written by pgwarden: do not edit. Add lines with postgresql.pg_hba.\n";
    for (const auto& line : s_.pg_hba) hba << line << "\n";
    const std::string& ru = s_.replication.username;
    hba << "local all all trust\n"
        << "host replication " << QuoteHbaToken(ru) << " 0.0.0.0/0 scram-sha-256\n"
        << "host replication " << QuoteHbaToken(ru) << " ::/0 scram-sha-256\n"
        << "host all all 0.0.0.0/0 scram-sha-256\n"
        << "host all all ::/0 scram-sha-256\n";
    PGW_RETURN_IF_ERROR(WriteDataFile("pg_hba.conf", hba.str()));

    std::error_code ec;
    fs::path signal = fs::path(s_.data_dir) / "standby.signal";
    if (follow) {
      PGW_RETURN_IF_ERROR(WriteDataFile("standby.signal", ""));
    } else {
      fs::remove(signal, ec);
    }
    follow_ = follow;
    return Status::Ok();
  }

  Status Start() override {
    if (IsRunning()) return Status::Ok();
    std::error_code ec;
    fs::remove(fs::path(s_.data_dir) / "postmaster.pid", ec);  // stale: no postmaster runs
    ProcessOptions opts = Opts();
    opts.log_file = s_.log_file;
    auto pid = SpawnProcess({Bin("postgres"), "-D", s_.data_dir}, opts);
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    child_ = true;
    LOG_INFO(kComponent, "started postgres pid " << pid_ << " (log: " << s_.log_file << ")");
    auto deadline = std::chrono::steady_clock::now() + s_.start_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!IsRunning()) {
        return PgUnavailable("postgres exited during start-up; see " + s_.log_file + ": " +
                             LastLogLines());
      }
      auto c = Connect();
      if (c.ok()) return Status::Ok();
      // "the database system is starting up" while in recovery before consistency.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Timeout("postgres did not accept connections within " +
                   std::to_string(s_.start_timeout.count()) + " s; see " + s_.log_file);
  }

  Status Stop(StopMode mode) override {
    if (!IsRunning()) return Status::Ok();
    int sig = mode == StopMode::kFast ? SIGINT : SIGQUIT;
    LOG_INFO(kComponent, (mode == StopMode::kFast ? "fast" : "immediate")
                             << " shutdown of postgres pid " << pid_);
    bool gone = StopProcess(pid_, sig, std::chrono::seconds(60));
    if (!gone) return Timeout("postgres pid " + std::to_string(pid_) + " did not stop");
    pid_ = -1;
    return Status::Ok();
  }

  Status Reload() override {
    if (!IsRunning()) return PgUnavailable("postgres is not running");
    if (::kill(pid_, SIGHUP) != 0) return IoError(std::string("SIGHUP: ") + std::strerror(errno));
    return Status::Ok();
  }

  Status Promote() override {
    auto conn = Connect();
    if (!conn.ok()) return conn.status();
    auto r = (*conn)->Query("SELECT pg_promote(true, 60)");
    if (!r.ok()) return r.status();
    if (r->text(0, 0) != "t") return PgUnavailable("pg_promote() did not finish within 60 s");
    follow_.reset();
    return Status::Ok();
  }

  bool IsRunning() override {
    if (pid_ <= 0) return false;
    if (child_) {
      if (WaitProcess(pid_, std::chrono::milliseconds(0))) {
        LOG_WARN(kComponent, "postgres pid " << pid_ << " has exited");
        pid_ = -1;
        conn_.reset();
        return false;
      }
      return true;
    }
    if (!ProcessAlive(pid_)) {
      pid_ = -1;
      conn_.reset();
      return false;
    }
    return true;
  }

  pid_t postmaster_pid() const override { return pid_; }

  Result<PgState> Observe() override {
    auto conn = SharedConnection();
    if (!conn.ok()) return conn.status();
    Connection& c = **conn;
    static const char* kStateSql = R"SQL(
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,
       pg_last_wal_receive_lsn(),
       pg_last_wal_replay_lsn(),
       pg_last_xact_replay_timestamp(),
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT sender_host FROM pg_stat_wal_receiver),
       CASE WHEN pg_is_in_recovery()
            THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END,
       pg_postmaster_start_time(),
       current_setting('server_version_num')::int,
       (SELECT system_identifier FROM pg_control_system()),
       current_setting('synchronous_standby_names')
)SQL";
    auto r = c.Query(kStateSql);
    if (!r.ok()) {
      conn_.reset();
      return r.status();
    }
    PgState st;
    st.in_recovery = r->text(0, 0) == "t";
    auto lsn = [&](size_t col) {
      auto v = r->at(0, col);
      return v ? Lsn::Parse(*v).value_or(Lsn()) : Lsn();
    };
    st.wal_lsn = lsn(1);
    st.receive_lsn = lsn(2);
    st.replay_lsn = lsn(3);
    st.last_replay_timestamp = r->at(0, 4);
    st.replay_paused = r->text(0, 5) != "not paused";
    st.wal_receiver_status = r->text(0, 6);
    st.wal_receiver_host = r->text(0, 7);
    st.timeline = std::atoi(r->text(0, 8, "0").c_str());
    st.postmaster_start_time = r->text(0, 9);
    st.server_version = std::atoi(r->text(0, 10, "0").c_str());
    st.system_identifier = r->text(0, 11);
    st.synchronous_standby_names = r->text(0, 12);

    if (!st.in_recovery) {
      auto rep = c.Query(
          "SELECT application_name, state, sent_lsn, write_lsn, flush_lsn, replay_lsn, "
          "write_lag::text, flush_lag::text, replay_lag::text, sync_state "
          "FROM pg_stat_replication ORDER BY application_name");
      if (!rep.ok()) return rep.status();
      for (size_t i = 0; i < rep->rows.size(); ++i) {
        ReplicationRow row;
        row.application_name = rep->text(i, 0);
        row.state = rep->text(i, 1);
        row.sent_lsn = Lsn::Parse(rep->text(i, 2)).value_or(Lsn());
        row.write_lsn = Lsn::Parse(rep->text(i, 3)).value_or(Lsn());
        row.flush_lsn = Lsn::Parse(rep->text(i, 4)).value_or(Lsn());
        row.replay_lsn = Lsn::Parse(rep->text(i, 5)).value_or(Lsn());
        row.write_lag = rep->text(i, 6);
        row.flush_lag = rep->text(i, 7);
        row.replay_lag = rep->text(i, 8);
        row.sync_state = rep->text(i, 9);
        st.replication.push_back(std::move(row));
      }
    }
    auto slots = c.Query(
        "SELECT slot_name, active, restart_lsn FROM pg_replication_slots "
        "WHERE slot_type = 'physical' ORDER BY slot_name");
    if (!slots.ok()) return slots.status();
    for (size_t i = 0; i < slots->rows.size(); ++i) {
      st.slots.push_back({slots->text(i, 0), slots->text(i, 1) == "t",
                          Lsn::Parse(slots->text(i, 2)).value_or(Lsn())});
    }
    return st;
  }

  Status CreateSlot(const std::string& name) override {
    auto conn = SharedConnection();
    if (!conn.ok()) return conn.status();
    LOG_INFO(kComponent, "creating physical replication slot " << name);
    return (*conn)->Exec(
        "SELECT pg_create_physical_replication_slot($1, true) "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        {name});
  }

  Status DropSlot(const std::string& name) override {
    auto conn = SharedConnection();
    if (!conn.ok()) return conn.status();
    LOG_INFO(kComponent, "dropping physical replication slot " << name);
    return (*conn)->Exec(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name = $1 AND NOT active",
        {name});
  }

  std::optional<StandbyTarget> CurrentFollow() const override { return follow_; }

  void SetParameters(std::map<std::string, std::string> parameters) override {
    s_.parameters = std::move(parameters);
  }

 private:
  std::string Bin(const char* tool) const { return s_.bin_dir + "/" + tool; }

  ProcessOptions Opts() const {
    ProcessOptions o;
    o.os_user = run_as_;
    return o;
  }

  // The unix socket lives in the data directory (reachable by its owner and
  // root only, which is what makes `local trust` safe), unless the path is too
  // long for a socket address.
  // Beside the data directory, not in it: pg_rewind and pg_basebackup copy
  // the data directory's files and stumble over a socket there.
  std::string SocketDir() const {
    if (s_.data_dir.size() + 25 < 100) return s_.data_dir + ".sock";
    return "/tmp";
  }

  Status EnsureSocketDir() const {
    if (socket_dir_ == "/tmp") return Status::Ok();
    std::error_code ec;
    fs::create_directories(socket_dir_, ec);
    if (ec) return IoError("cannot create " + socket_dir_ + ": " + ec.message());
    ::chmod(socket_dir_.c_str(), 0700);
    if (!run_as_.empty() && ::chown(socket_dir_.c_str(), uid_, gid_) != 0) {
      return IoError("cannot chown " + socket_dir_ + ": " + std::strerror(errno));
    }
    return Status::Ok();
  }

  Result<ConnectionPtr> Connect() const {
    std::string ci = "host=" + QuoteConninfoValue(socket_dir_) +
                     " port=" + std::to_string(s_.listen.port) +
                     " user=" + QuoteConninfoValue(s_.superuser.username) +
                     " dbname=postgres application_name=pgwarden";
    if (socket_dir_ != "/tmp") {
      auto c = Connection::Open(ci, std::chrono::seconds(3));
      if (c.ok()) return c;
    }
    // A postmaster started by an older pgwarden listens in the data directory.
    return Connection::Open(SuperuserConninfo("127.0.0.1", s_.listen.port, s_.superuser),
                            std::chrono::seconds(3));
  }

  Result<Connection*> SharedConnection() {
    if (conn_ && conn_->healthy()) return conn_.get();
    auto c = Connect();
    if (!c.ok()) return c.status();
    conn_ = std::move(*c);
    return conn_.get();
  }

  Status WriteDataFile(const std::string& name, const std::string& content) {
    return WriteFileAtomic((fs::path(s_.data_dir) / name).string(), content, uid_, gid_,
                           !run_as_.empty());
  }

  Status PrepareEmptyDataDir() {
    PGW_RETURN_IF_ERROR(CheckDataDirReachable());
    std::error_code ec;
    fs::create_directories(s_.data_dir, ec);
    if (ec) return IoError("cannot create " + s_.data_dir + ": " + ec.message());
    if (!fs::is_empty(s_.data_dir, ec)) {
      return InvalidArgument(s_.data_dir + " is not empty; refusing to bootstrap into it");
    }
    ::chmod(s_.data_dir.c_str(), 0700);
    if (!run_as_.empty() && ::chown(s_.data_dir.c_str(), uid_, gid_) != 0) {
      return IoError("cannot chown " + s_.data_dir + ": " + std::strerror(errno));
    }
    // PostgreSQL's stderr log, writable by its user.
    if (!s_.log_file.empty() && !run_as_.empty()) {
      std::ofstream touch(s_.log_file, std::ios::app);
      (void)!::chown(s_.log_file.c_str(), uid_, gid_);
    }
    return Status::Ok();
  }

  Status ClearDataDir() override {
    if (IsRunning()) return InvalidArgument("PostgreSQL is running in " + s_.data_dir);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(s_.data_dir, ec)) {
      fs::remove_all(e.path(), ec);
      if (ec) return IoError("cannot remove " + e.path().string() + ": " + ec.message());
    }
    return Status::Ok();
  }

  // A postmaster left running by an earlier agent process: take it over.
  void AdoptRunningPostmaster() {
    std::ifstream pidfile(fs::path(s_.data_dir) / "postmaster.pid");
    pid_t pid = 0;
    if (!(pidfile >> pid) || pid <= 0 || !ProcessAlive(pid)) return;
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    std::string cmd;
    std::getline(cmdline, cmd, '\0');
    if (cmd.find("postgres") == std::string::npos) return;
    LOG_INFO(kComponent, "adopting running postgres pid " << pid);
    pid_ = pid;
    child_ = false;
  }

  std::string LastLogLines() const {
    std::ifstream in(s_.log_file);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
      lines.push_back(line);
      if (lines.size() > 5) lines.erase(lines.begin());
    }
    std::string out;
    for (const auto& l : lines) out += (out.empty() ? "" : " | ") + l;
    return out;
  }

  PgSettings s_;
  std::string run_as_;  // empty: run tools as ourselves
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::string socket_dir_;
  pid_t pid_ = -1;
  bool child_ = false;  // pid_ is our child (reaped with waitpid)
  ConnectionPtr conn_;
  std::optional<StandbyTarget> follow_;
};

}  // namespace

PgControllerPtr MakePgController(PgSettings settings) {
  return std::make_unique<PgControllerImpl>(std::move(settings));
}

Result<std::string> ReadSystemIdentifier(const std::string& data_dir) {
  std::string path = (fs::path(data_dir) / "global" / "pg_control").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot read " + path + ": " + std::strerror(errno));
  // ControlFileData begins with the 64-bit system identifier (host byte order).
  uint64_t sysid = 0;
  in.read(reinterpret_cast<char*>(&sysid), sizeof sysid);
  if (!in) return IoError(path + " is truncated");
  return std::to_string(sysid);
}

std::string DefaultMaxSlotWalKeepSize(uint64_t free_bytes) {
  constexpr uint64_t kMiB = 1024 * 1024;
  constexpr uint64_t kFloor = 256 * kMiB;
  // A fifth of the free space, in whole 64 MB steps so that small changes of
  // the free space do not rewrite the setting at every start.
  uint64_t keep = free_bytes / 5 / (64 * kMiB) * (64 * kMiB);
  return std::to_string(std::max(keep, kFloor) / kMiB) + "MB";
}

std::string SuperuserConninfo(const std::string& host, uint16_t port, const config::RoleAuth& su,
                              const std::string& dbname) {
  std::string ci = "host=" + QuoteConninfoValue(host) + " port=" + std::to_string(port) +
                   " user=" + QuoteConninfoValue(su.username) +
                   " dbname=" + QuoteConninfoValue(dbname) + " application_name=pgwarden";
  if (!su.password.empty()) ci += " password=" + QuoteConninfoValue(su.password);
  return ci;
}

}  // namespace pgwarden::pg
