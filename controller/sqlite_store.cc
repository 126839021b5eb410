#include "controller/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log_streams.h"
#include "common/status_macros.h"

namespace caddie::controller {

std::string ErrorCodeOf(const absl::Status& s) {
  auto p = s.GetPayload(kErrorCodePayload);
  return p ? std::string(*p) : std::string();
}

absl::Status WithErrorCode(absl::Status s, const std::string& code) {
  s.SetPayload(kErrorCodePayload, absl::Cord(code));
  return s;
}

namespace {

// Versioned migrations: entry i brings the schema to version i+1. Never edit an
// applied entry; append a new one.
const std::vector<const char*>& Migrations() {
  static const std::vector<const char*> m = {
      R"sql(
CREATE TABLE sweeps(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  spec_pb BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  jobs_total INTEGER NOT NULL,
  cancelled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE jobs(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  sweep_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  spec_pb BLOB NOT NULL,
  params_json TEXT NOT NULL,
  gpus INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  state INTEGER NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  worker_id TEXT NOT NULL DEFAULT '',
  fencing_token INTEGER NOT NULL DEFAULT 0,
  completed_token INTEGER NOT NULL DEFAULT 0,
  lease_expiry_ms INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  queued_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  exit_reason INTEGER NOT NULL DEFAULT 0,
  message TEXT NOT NULL DEFAULT '',
  pending_reason TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  cancel_reason TEXT NOT NULL DEFAULT '',
  cancel_exit_reason INTEGER NOT NULL DEFAULT 0,
  avoid_worker TEXT NOT NULL DEFAULT '',
  avoid_until_ms INTEGER NOT NULL DEFAULT 0);
CREATE INDEX jobs_queue ON jobs(state, priority DESC, seq);
CREATE INDEX jobs_sweep ON jobs(sweep_id, seq);
CREATE INDEX jobs_lease ON jobs(state, lease_expiry_ms);
CREATE TABLE events(
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  type TEXT NOT NULL,
  step INTEGER NOT NULL,
  time_unix REAL NOT NULL,
  val_bpb REAL,
  json TEXT NOT NULL,
  PRIMARY KEY(job_id, attempt, seq)) WITHOUT ROWID;
CREATE TABLE results(
  job_id TEXT PRIMARY KEY,
  attempt INTEGER NOT NULL,
  val_bpb REAL NOT NULL,
  val_bpb_post_quant REAL NOT NULL,
  artifact_bytes INTEGER NOT NULL,
  within_budget INTEGER NOT NULL,
  result_pb BLOB NOT NULL);
CREATE TABLE workers(
  id TEXT PRIMARY KEY,
  worker_pb BLOB NOT NULL,
  gpus_free INTEGER NOT NULL DEFAULT 0,
  cpu_slots_free INTEGER NOT NULL DEFAULT 0,
  last_heartbeat_ms INTEGER NOT NULL DEFAULT 0,
  drained INTEGER NOT NULL DEFAULT 0,
  drain_reason TEXT NOT NULL DEFAULT '',
  infra_failure_streak INTEGER NOT NULL DEFAULT 0,
  registered_ms INTEGER NOT NULL);
)sql",
      // 2: the no-progress backstop — when a job last reported, and its own silence limit.
      R"sql(
ALTER TABLE jobs ADD COLUMN last_event_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN silence_ms INTEGER NOT NULL DEFAULT 0;
)sql",
      // 3: queued-jobs-by-size counts from the index alone (pending reasons, every tick).
      R"sql(
CREATE INDEX jobs_state_gpus ON jobs(state, gpus);
)sql",
      // 4: who drained a worker and when (manual drains name the operator).
      R"sql(
ALTER TABLE workers ADD COLUMN drained_by TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN drained_ms INTEGER NOT NULL DEFAULT 0;
)sql",
      // 5: the ranks' log files (stderr; stdout of ranks > 0), apart from the events:
      // chunks by byte offset, and per stream how far it got and how much is held.
      R"sql(
CREATE TABLE log_chunks(
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  stream TEXT NOT NULL,
  byte_offset INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY(job_id, attempt, rank, stream, byte_offset)) WITHOUT ROWID;
CREATE TABLE log_streams(
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  stream TEXT NOT NULL,
  end_offset INTEGER NOT NULL,
  held_bytes INTEGER NOT NULL,
  PRIMARY KEY(job_id, attempt, rank, stream)) WITHOUT ROWID;
)sql",
      // 6: the bound on all stored log bytes: a counter row kept in each
      // transaction, each job's held bytes, the ended jobs holding logs in the
      // order they ended, and which streams the bound emptied.
      R"sql(
ALTER TABLE jobs ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_streams ADD COLUMN retention_dropped INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET log_bytes = (SELECT COALESCE(SUM(held_bytes), 0) FROM log_streams s WHERE s.job_id = jobs.id);
CREATE TABLE log_totals(id INTEGER PRIMARY KEY CHECK(id = 1), held_bytes INTEGER NOT NULL);
INSERT INTO log_totals(id, held_bytes) SELECT 1, COALESCE(SUM(held_bytes), 0) FROM log_streams;
CREATE INDEX jobs_logs_ended ON jobs(finished_ms) WHERE log_bytes > 0 AND finished_ms > 0;
)sql",
  };
  return m;
}

constexpr char kJobCols[] =
    "j.id, j.sweep_id, j.idx, j.spec_pb, j.state, j.attempt, j.worker_id, j.fencing_token, j.created_ms, "
    "j.started_ms, j.finished_ms, j.exit_reason, j.message, j.pending_reason, j.params_json, r.result_pb "
    "FROM jobs j LEFT JOIN results r ON r.job_id = j.id ";

bool IsActive(int state) { return state == v1::JOB_STATE_LEASED || state == v1::JOB_STATE_RUNNING; }

std::string StateName(v1::JobState s) {
  std::string n = v1::JobState_Name(s);
  if (n.rfind("JOB_STATE_", 0) == 0) n = n.substr(10);
  return absl::AsciiStrToLower(n);
}

int64_t ArtifactLimit(const v1::JobSpec& spec) {
  return spec.budget().artifact_limit_bytes() > 0 ? spec.budget().artifact_limit_bytes() : 16000000;
}

absl::Status UnknownWorker(const std::string& worker_id) {
  return absl::NotFoundError(absl::StrCat("unknown worker '", Truncated(worker_id), "'"));
}

absl::Status Stale(const std::string& job_id, int64_t current, int64_t got, const std::string& why) {
  return WithErrorCode(
      absl::FailedPreconditionError(absl::StrCat("stale fencing token for job ", job_id, ": report carries ", got,
                                                 ", current lease is ", current, " (", why, ")")),
      kStaleFencingToken);
}

}  // namespace

// A cached prepared statement in use: binds, steps, and resets on destruction.
class SqliteStore::Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& Bind(int i, int v) { return Bind(i, static_cast<int64_t>(v)); }
  Stmt& Bind(int i, double v) {
    sqlite3_bind_double(s_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  // true: a row is ready; false: done.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_), " in: ", sqlite3_sql(s_)));
  }
  absl::Status Run() {
    for (;;) {
      ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return absl::OkStatus();
    }
  }
  int64_t Int(int c) { return sqlite3_column_int64(s_, c); }
  double Double(int c) { return sqlite3_column_double(s_, c); }
  bool IsNull(int c) { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  std::string Text(int c) {
    const void* p = sqlite3_column_blob(s_, c);
    int n = sqlite3_column_bytes(s_, c);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }
  int Changes() { return sqlite3_changes(db_); }
  sqlite3_stmt* raw() { return s_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_;
};

// BEGIN IMMEDIATE … COMMIT; rolls back unless Commit() succeeded.
class SqliteStore::Tx {
 public:
  explicit Tx(SqliteStore* store) : store_(store), start_(std::chrono::steady_clock::now()) {}
  absl::Status Begin() ABSL_NO_THREAD_SAFETY_ANALYSIS { return store_->Exec("BEGIN IMMEDIATE"); }
  absl::Status Commit() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    RETURN_IF_ERROR(store_->Exec("COMMIT"));
    done_ = true;
    if (store_->options_.on_transaction) {
      store_->options_.on_transaction(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    return absl::OkStatus();
  }
  ~Tx() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!done_) (void)store_->Exec("ROLLBACK");
  }

 private:
  SqliteStore* store_;
  std::chrono::steady_clock::time_point start_;
  bool done_ = false;
};

#define STMT(var, sql)                        \
  ASSIGN_OR_RETURN(sqlite3_stmt* var##_raw_, Prepare(sql)); \
  Stmt var(db_, var##_raw_)

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, Options options) {
  if (path.empty()) return absl::InvalidArgumentError("database path is empty");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (db) sqlite3_close(db);
    return absl::InvalidArgumentError(absl::StrCat("cannot open database '", path, "': ", msg));
  }
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, std::move(options)));
  absl::MutexLock l(&store->mu_);
  RETURN_IF_ERROR(store->EnableWal(path));
  RETURN_IF_ERROR(store->Exec(store->options_.synchronous_normal ? "PRAGMA synchronous=NORMAL"
                                                                 : "PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  RETURN_IF_ERROR(store->Migrate());
  RETURN_IF_ERROR(store->CheckLogBytesCounterLocked());
  return store;
}

SqliteStore::SqliteStore(sqlite3* db, Options options) : options_(std::move(options)), db_(db) {}

SqliteStore::~SqliteStore() {
  absl::MutexLock l(&mu_);
  for (auto& [sql, s] : stmts_) sqlite3_finalize(s);
  sqlite3_close(db_);
}

absl::Status SqliteStore::EnableWal(const std::string& path) {
  // The pragma answers with the mode now in force: "memory" for an in-memory
  // database, the old mode when the file system cannot hold the WAL's shared
  // memory. Running on in another mode would lose WAL's concurrent readers and
  // its commit cost without anyone noticing, so refuse.
  std::string mode;
  {
    auto prepared = Prepare("PRAGMA journal_mode=WAL");
    if (!prepared.ok()) {
      return absl::InternalError(absl::StrCat("database '", path, "': ", prepared.status().message()));
    }
    Stmt q(db_, *prepared);
    auto row = q.Step();
    if (!row.ok()) return absl::InternalError(absl::StrCat("database '", path, "': ", row.status().message()));
    if (*row) mode = absl::AsciiStrToLower(q.Text(0));
  }
  if (mode != "wal") {
    return absl::InvalidArgumentError(absl::StrCat("cannot put database '", path,
                                                   "' in WAL journal mode: SQLite kept journal_mode '",
                                                   mode.empty() ? "(no answer)" : mode,
                                                   "' (an in-memory database, or a file system without "
                                                   "shared-memory support?)"));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", msg, " in: ", std::string(sql).substr(0, 80)));
  }
  return absl::OkStatus();
}

absl::StatusOr<sqlite3_stmt*> SqliteStore::Prepare(const std::string& sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_), " in: ", sql));
  }
  stmts_.emplace(sql, s);
  return s;
}

absl::Status SqliteStore::Migrate() {
  RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)"));
  int version = 0;
  {
    STMT(q, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) version = static_cast<int>(q.Int(0));
  }
  const auto& m = Migrations();
  if (version > static_cast<int>(m.size())) {
    return absl::FailedPreconditionError(absl::StrCat("database schema version ", version,
                                                      " is newer than this controller's ", m.size()));
  }
  for (int v = version; v < static_cast<int>(m.size()); ++v) {
    Tx tx(this);
    RETURN_IF_ERROR(tx.Begin());
    RETURN_IF_ERROR(Exec(m[v]));
    STMT(ins, "INSERT INTO schema_migrations(version, applied_ms) VALUES(?1, strftime('%s','now')*1000)");
    RETURN_IF_ERROR(ins.Bind(1, v + 1).Run());
    RETURN_IF_ERROR(tx.Commit());
  }
  schema_version_ = static_cast<int>(m.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- sweeps/jobs

absl::StatusOr<std::vector<v1::Job>> SqliteStore::QueryJobs(const std::string& sql,
                                                            const std::function<void(sqlite3_stmt*)>& bind) {
  STMT(q, sql);
  bind(q.raw());
  std::vector<v1::Job> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    v1::Job j;
    j.set_id(q.Text(0));
    j.set_sweep_id(q.Text(1));
    j.set_index_in_sweep(static_cast<int32_t>(q.Int(2)));
    j.mutable_spec()->ParseFromString(q.Text(3));
    j.set_state(static_cast<v1::JobState>(q.Int(4)));
    j.set_attempt(static_cast<int32_t>(q.Int(5)));
    j.set_worker_id(q.Text(6));
    j.set_fencing_token(q.Int(7));
    j.set_created_unix_ms(q.Int(8));
    j.set_started_unix_ms(q.Int(9));
    j.set_finished_unix_ms(q.Int(10));
    j.set_exit_reason(static_cast<v1::ExitReason>(q.Int(11)));
    j.set_message(q.Text(12));
    j.set_pending_reason(q.Text(13));
    j.set_params_json(q.Text(14));
    if (!q.IsNull(15)) j.mutable_result()->ParseFromString(q.Text(15));
    out.push_back(std::move(j));
  }
  return out;
}

absl::StatusOr<v1::Job> SqliteStore::GetJobLocked(const std::string& job_id) {
  ASSIGN_OR_RETURN(auto jobs, QueryJobs(absl::StrCat("SELECT ", kJobCols, "WHERE j.id = ?1"),
                                        [&](sqlite3_stmt* s) {
                                          sqlite3_bind_text(s, 1, job_id.data(), static_cast<int>(job_id.size()),
                                                            SQLITE_TRANSIENT);
                                        }));
  if (jobs.empty()) return absl::NotFoundError(absl::StrCat("no job '", Truncated(job_id), "'"));
  return jobs[0];
}

absl::StatusOr<v1::Job> SqliteStore::GetJob(const std::string& job_id) {
  absl::MutexLock l(&mu_);
  return GetJobLocked(job_id);
}

absl::StatusOr<v1::Sweep> SqliteStore::GetSweepLocked(const std::string& sweep_id) {
  v1::Sweep sw;
  {
    STMT(q, "SELECT id, spec_pb, created_ms, jobs_total, cancelled FROM sweeps WHERE id = ?1");
    q.Bind(1, sweep_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no sweep '", Truncated(sweep_id), "'"));
    sw.set_id(q.Text(0));
    sw.mutable_spec()->ParseFromString(q.Text(1));
    sw.set_created_unix_ms(q.Int(2));
    sw.set_jobs_total(static_cast<int32_t>(q.Int(3)));
    sw.set_cancelled(q.Int(4) != 0);
  }
  STMT(c, "SELECT state, COUNT(*) FROM jobs WHERE sweep_id = ?1 GROUP BY state");
  c.Bind(1, sweep_id);
  for (;;) {
    ASSIGN_OR_RETURN(bool row, c.Step());
    if (!row) break;
    (*sw.mutable_jobs_by_state())[StateName(static_cast<v1::JobState>(c.Int(0)))] = static_cast<int32_t>(c.Int(1));
  }
  return sw;
}

absl::StatusOr<v1::Sweep> SqliteStore::GetSweep(const std::string& sweep_id) {
  absl::MutexLock l(&mu_);
  return GetSweepLocked(sweep_id);
}

absl::StatusOr<std::vector<v1::Sweep>> SqliteStore::ListSweeps(int limit) {
  absl::MutexLock l(&mu_);
  std::vector<std::string> ids;
  {
    STMT(q, "SELECT id FROM sweeps ORDER BY seq DESC LIMIT ?1");
    q.Bind(1, limit > 0 ? limit : 100);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      ids.push_back(q.Text(0));
    }
  }
  std::vector<v1::Sweep> out;
  for (const auto& id : ids) {
    ASSIGN_OR_RETURN(auto sw, GetSweepLocked(id));
    out.push_back(std::move(sw));
  }
  return out;
}

absl::StatusOr<std::pair<v1::Sweep, std::vector<v1::Job>>> SqliteStore::CreateSweep(const v1::SweepSpec& spec,
                                                                                   const std::vector<NewJob>& jobs,
                                                                                   int64_t now_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  int64_t seq = 0;
  {
    STMT(q, "SELECT COALESCE(MAX(seq), 0) + 1 FROM sweeps");
    ASSIGN_OR_RETURN(bool row, q.Step());
    (void)row;
    seq = q.Int(0);
  }
  const std::string sweep_id = absl::StrCat("s", seq);
  {
    STMT(ins, "INSERT INTO sweeps(seq, id, spec_pb, created_ms, jobs_total) VALUES(?1, ?2, ?3, ?4, ?5)");
    ins.Bind(1, seq).Bind(2, sweep_id).BindBlob(3, spec.SerializeAsString()).Bind(4, now_ms);
    ins.Bind(5, static_cast<int64_t>(jobs.size()));
    RETURN_IF_ERROR(ins.Run());
  }
  for (const auto& nj : jobs) {
    STMT(ins,
         "INSERT INTO jobs(id, sweep_id, idx, spec_pb, params_json, gpus, priority, max_attempts, state, "
         "created_ms, queued_ms, silence_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10)");
    const int max_attempts = nj.spec.max_attempts() > 0 ? nj.spec.max_attempts() : 3;
    ins.Bind(1, absl::StrCat(sweep_id, "-j", nj.index)).Bind(2, sweep_id).Bind(3, nj.index);
    ins.BindBlob(4, nj.spec.SerializeAsString()).Bind(5, nj.params_json).Bind(6, nj.spec.gpus());
    ins.Bind(7, nj.spec.priority()).Bind(8, max_attempts).Bind(9, now_ms).Bind(10, nj.silence_ms);
    RETURN_IF_ERROR(ins.Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  ASSIGN_OR_RETURN(auto sw, GetSweepLocked(sweep_id));
  ASSIGN_OR_RETURN(auto js, QueryJobs(absl::StrCat("SELECT ", kJobCols, "WHERE j.sweep_id = ?1 ORDER BY j.seq"),
                                      [&](sqlite3_stmt* s) {
                                        sqlite3_bind_text(s, 1, sweep_id.data(), static_cast<int>(sweep_id.size()),
                                                          SQLITE_TRANSIENT);
                                      }));
  return std::make_pair(std::move(sw), std::move(js));
}

absl::StatusOr<std::vector<v1::Job>> SqliteStore::ListJobs(const std::string& sweep_id,
                                                           const std::vector<v1::JobState>& states, int limit) {
  absl::MutexLock l(&mu_);
  int64_t mask = 0;
  for (auto s : states) mask |= int64_t{1} << static_cast<int>(s);
  return QueryJobs(absl::StrCat("SELECT ", kJobCols,
                                "WHERE (?1 = '' OR j.sweep_id = ?1) AND (?2 = 0 OR ((?2 >> j.state) & 1) = 1) "
                                "ORDER BY j.seq LIMIT ?3"),
                   [&](sqlite3_stmt* s) {
                     sqlite3_bind_text(s, 1, sweep_id.data(), static_cast<int>(sweep_id.size()), SQLITE_TRANSIENT);
                     sqlite3_bind_int64(s, 2, mask);
                     sqlite3_bind_int64(s, 3, limit > 0 ? limit : 1000000);
                   });
}

absl::StatusOr<std::map<v1::JobState, int64_t>> SqliteStore::CountJobsByState() {
  absl::MutexLock l(&mu_);
  STMT(q, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  std::map<v1::JobState, int64_t> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out[static_cast<v1::JobState>(q.Int(0))] = q.Int(1);
  }
  return out;
}

// ---------------------------------------------------------------- transitions

absl::StatusOr<std::optional<LeasedJob>> SqliteStore::LeaseNext(const std::string& worker_id, int32_t gpus_free,
                                                                 int32_t cpu_slots_free, int64_t now_ms,
                                                                 int64_t ttl_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  {
    // A drained worker gets nothing, whatever the scheduler's copy says: a drain
    // commits here before the scheduler's copy of it changes.
    STMT(d, "SELECT 1 FROM workers WHERE id = ?1 AND drained = 1");
    ASSIGN_OR_RETURN(bool drained, d.Bind(1, worker_id).Step());
    if (drained) return std::optional<LeasedJob>();
  }
  std::string job_id;
  int64_t queued_ms = 0;
  {
    // INDEXED BY: walk the queue in (priority, seq) order and stop at the first fit.
    // Left to itself the planner may pick jobs_state_gpus and sort the whole queue.
    STMT(q,
         "SELECT id, queued_ms FROM jobs INDEXED BY jobs_queue WHERE state = 1 AND ((gpus > 0 AND gpus <= ?1) OR (gpus = 0 AND ?2 > 0)) "
         "AND (avoid_worker != ?3 OR avoid_until_ms <= ?4) ORDER BY priority DESC, seq LIMIT 1");
    q.Bind(1, gpus_free).Bind(2, cpu_slots_free).Bind(3, worker_id).Bind(4, now_ms);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<LeasedJob>();
    job_id = q.Text(0);
    queued_ms = q.Int(1);
  }
  {
    STMT(u,
         "UPDATE jobs SET state = 2, attempt = attempt + 1, fencing_token = fencing_token + 1, worker_id = ?2, "
         "lease_expiry_ms = ?3, pending_reason = '', cancel_requested = 0, cancel_reason = '', "
         "cancel_exit_reason = 0, started_ms = 0, last_event_ms = ?4 WHERE id = ?1 AND state = 1");
    u.Bind(1, job_id).Bind(2, worker_id).Bind(3, now_ms + ttl_ms).Bind(4, now_ms);
    RETURN_IF_ERROR(u.Run());
    if (u.Changes() != 1) return absl::InternalError(absl::StrCat("lease of ", job_id, " lost its precondition"));
  }
  RETURN_IF_ERROR(tx.Commit());
  ASSIGN_OR_RETURN(auto job, GetJobLocked(job_id));
  return std::optional<LeasedJob>(LeasedJob{std::move(job), queued_ms});
}

absl::StatusOr<HeartbeatOutcome> SqliteStore::Heartbeat(const std::string& worker_id,
                                                        const std::vector<std::pair<std::string, int64_t>>& leases,
                                                        int32_t gpus_free, int64_t now_ms, int64_t ttl_ms) {
  absl::MutexLock l(&mu_);
  HeartbeatOutcome out;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  {
    STMT(u, "UPDATE workers SET last_heartbeat_ms = ?2, gpus_free = ?3 WHERE id = ?1");
    u.Bind(1, worker_id).Bind(2, now_ms).Bind(3, gpus_free);
    RETURN_IF_ERROR(u.Run());
    if (u.Changes() == 0) {
      out.known_worker = false;
    }
  }
  for (const auto& [job_id, token] : leases) {
    STMT(q, "SELECT state, fencing_token, worker_id, cancel_requested, cancel_reason FROM jobs WHERE id = ?1");
    q.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row || !IsActive(static_cast<int>(q.Int(0))) || q.Int(1) != token || q.Text(2) != worker_id) {
      out.lost_job_ids.push_back(job_id);
      continue;
    }
    if (q.Int(3) != 0) {
      out.cancel_job_ids.push_back(job_id);
      out.cancel_reasons.push_back(q.Text(4));
    }
    STMT(u, "UPDATE jobs SET lease_expiry_ms = ?3 WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
    u.Bind(1, job_id).Bind(2, token).Bind(3, now_ms + ttl_ms);
    RETURN_IF_ERROR(u.Run());
    out.extended_job_ids.push_back(job_id);
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<SqliteStore::ReportedLease> SqliteStore::CheckReportLocked(const std::string& worker_id,
                                                                          const std::string& job_id,
                                                                          int64_t fencing_token) {
  ReportedLease out;
  int64_t token = 0, completed = 0;
  std::string owner;
  {
    STMT(q,
         "SELECT state, fencing_token, completed_token, attempt, worker_id, cancel_requested, cancel_reason, "
         "sweep_id, gpus FROM jobs WHERE id = ?1");
    q.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job '", Truncated(job_id), "'"));
    out.state = static_cast<int>(q.Int(0));
    token = q.Int(1);
    completed = q.Int(2);
    out.attempt = static_cast<int32_t>(q.Int(3));
    owner = q.Text(4);
    out.cancel = q.Int(5) != 0;
    out.cancel_reason = q.Text(6);
    out.sweep_id = q.Text(7);
    out.gpus = static_cast<int32_t>(q.Int(8));
  }
  out.replay_after_completion = fencing_token != 0 && fencing_token == completed && fencing_token == token;
  if (!out.replay_after_completion) {
    if (fencing_token != token) return Stale(job_id, token, fencing_token, "the lease was replaced");
    if (!IsActive(out.state)) return Stale(job_id, token, fencing_token, "the job is no longer leased");
    if (owner != worker_id) return Stale(job_id, token, fencing_token, "leased to another worker");
  }
  return out;
}

absl::StatusOr<AppendOutcome> SqliteStore::AppendEvents(const std::string& worker_id, const std::string& job_id,
                                                        int64_t fencing_token, const std::vector<v1::Event>& events,
                                                        int64_t now_ms) {
  absl::MutexLock l(&mu_);
  AppendOutcome out;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  ASSIGN_OR_RETURN(const ReportedLease lease, CheckReportLocked(worker_id, job_id, fencing_token));
  const int state = lease.state;
  const int attempt = lease.attempt;
  out.cancel = lease.cancel;
  out.cancel_reason = lease.cancel_reason;
  out.sweep_id = lease.sweep_id;
  if (!lease.replay_after_completion) {
    for (const auto& e : events) {
      if (e.seq() <= 0) return absl::InvalidArgumentError(absl::StrCat("event seq must be >= 1, got ", e.seq()));
      STMT(ins,
           "INSERT OR IGNORE INTO events(job_id, attempt, seq, type, step, time_unix, val_bpb, json) "
           "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      ins.Bind(1, job_id).Bind(2, attempt).Bind(3, e.seq()).Bind(4, e.type()).Bind(5, e.step());
      ins.Bind(6, e.time_unix());
      bool bound = false;
      if (e.type() == "val") {
        auto j = nlohmann::json::parse(e.json(), nullptr, false);
        if (j.is_object() && j.contains("val_bpb") && j["val_bpb"].is_number()) {
          ins.Bind(7, j["val_bpb"].get<double>());
          bound = true;
        }
      }
      if (!bound) ins.BindNull(7);
      ins.Bind(8, e.json());
      RETURN_IF_ERROR(ins.Run());
      out.inserted += ins.Changes();
    }
    if (out.inserted > 0) {
      STMT(u, "UPDATE jobs SET last_event_ms = ?2 WHERE id = ?1");
      RETURN_IF_ERROR(u.Bind(1, job_id).Bind(2, now_ms).Run());
    }
    if (state == v1::JOB_STATE_LEASED && !events.empty()) {
      STMT(u, "UPDATE jobs SET state = 3, started_ms = ?3 WHERE id = ?1 AND fencing_token = ?2 AND state = 2");
      u.Bind(1, job_id).Bind(2, fencing_token).Bind(3, now_ms);
      RETURN_IF_ERROR(u.Run());
      out.became_running = u.Changes() == 1;
    }
  }
  {
    STMT(q, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1 AND attempt = ?2");
    q.Bind(1, job_id).Bind(2, attempt);
    ASSIGN_OR_RETURN(bool row, q.Step());
    (void)row;
    out.acked_seq = q.Int(0);
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<LogAppendOutcome> SqliteStore::AppendLogs(const std::string& worker_id, const std::string& job_id,
                                                         int64_t fencing_token,
                                                         const std::vector<v1::LogChunk>& chunks) {
  absl::MutexLock l(&mu_);
  LogAppendOutcome out;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  ASSIGN_OR_RETURN(const ReportedLease lease, CheckReportLocked(worker_id, job_id, fencing_token));
  const int32_t ranks = std::max<int32_t>(1, lease.gpus);
  for (const auto& c : chunks) {
    if (c.rank() < 0 || c.rank() >= ranks || !log_streams::SentAsChunks(c.rank(), c.stream())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "log chunk of rank ", c.rank(), " stream \"", Truncated(c.stream()), "\": job ", Truncated(job_id), " has ",
          ranks, " rank(s); chunks carry \"stderr\" of any rank or \"stdout\" of ranks > 0 (rank 0's is the events)"));
    }
    if (c.offset() < 0) return absl::InvalidArgumentError(absl::StrCat("log chunk offset must be >= 0, got ", c.offset()));
    if (c.attempt() != 0 && c.attempt() != lease.attempt) {
      return absl::InvalidArgumentError(
          absl::StrCat("log chunk of attempt ", c.attempt(), " in a report of attempt ", lease.attempt));
    }
  }
  if (lease.replay_after_completion) {
    RETURN_IF_ERROR(tx.Commit());
    return out;
  }
  int64_t held_delta = 0;
  std::set<std::pair<int32_t, std::string>> touched;
  for (const auto& c : chunks) {
    int64_t end = 0, held = 0;
    {
      STMT(q, "SELECT end_offset, held_bytes FROM log_streams WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 "
              "AND stream = ?4");
      q.Bind(1, job_id).Bind(2, lease.attempt).Bind(3, c.rank()).Bind(4, c.stream());
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) {
        end = q.Int(0);
        held = q.Int(1);
      }
    }
    // Bytes below `end` were received already (a replayed batch, or an overlap).
    const int64_t chunk_end = c.offset() + static_cast<int64_t>(c.data().size());
    if (chunk_end <= end) continue;
    const int64_t from = std::max(c.offset(), end);
    const std::string data = c.data().substr(static_cast<size_t>(from - c.offset()));
    {
      STMT(ins, "INSERT OR IGNORE INTO log_chunks(job_id, attempt, rank, stream, byte_offset, data) "
                "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
      ins.Bind(1, job_id).Bind(2, lease.attempt).Bind(3, c.rank()).Bind(4, c.stream()).Bind(5, from);
      ins.BindBlob(6, data);
      RETURN_IF_ERROR(ins.Run());
    }
    {
      STMT(up, "INSERT INTO log_streams(job_id, attempt, rank, stream, end_offset, held_bytes) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(job_id, attempt, rank, stream) DO UPDATE SET "
               "end_offset = excluded.end_offset, held_bytes = excluded.held_bytes");
      up.Bind(1, job_id).Bind(2, lease.attempt).Bind(3, c.rank()).Bind(4, c.stream()).Bind(5, chunk_end);
      up.Bind(6, held + static_cast<int64_t>(data.size()));
      RETURN_IF_ERROR(up.Run());
    }
    out.inserted_bytes += static_cast<int64_t>(data.size());
    touched.insert({c.rank(), c.stream()});
  }
  for (const auto& [rank, stream] : touched) {
    ASSIGN_OR_RETURN(int64_t dropped,
                     CapLogStreamLocked(job_id, lease.attempt, rank, stream, options_.log_bytes_per_stream));
    out.dropped_bytes += dropped;
  }
  RETURN_IF_ERROR(AddHeldLogBytesLocked(job_id, out.inserted_bytes - out.dropped_bytes, &held_delta));
  if (options_.log_bytes_total > 0 && log_bytes_held_ + held_delta > options_.log_bytes_total) {
    ASSIGN_OR_RETURN(const LogTrimOutcome trimmed, TrimLogsLocked(&held_delta));
    out.retention_dropped_bytes = trimmed.dropped_bytes;
  }
  RETURN_IF_ERROR(tx.Commit());
  log_bytes_held_ += held_delta;
  return out;
}

absl::Status SqliteStore::AddHeldLogBytesLocked(const std::string& job_id, int64_t delta, int64_t* held_delta) {
  if (delta == 0) return absl::OkStatus();
  {
    STMT(u, "UPDATE jobs SET log_bytes = log_bytes + ?2 WHERE id = ?1");
    RETURN_IF_ERROR(u.Bind(1, job_id).Bind(2, delta).Run());
  }
  STMT(u, "UPDATE log_totals SET held_bytes = held_bytes + ?1 WHERE id = 1");
  RETURN_IF_ERROR(u.Bind(1, delta).Run());
  *held_delta += delta;
  return absl::OkStatus();
}

namespace {
// Streams one TrimLogs pass empties at most (an 8-rank job has 15 per attempt):
// each is at most --log-bytes-per-stream bytes, so a pass stays short.
constexpr int kTrimStreamsPerPass = 32;
}  // namespace

absl::StatusOr<LogTrimOutcome> SqliteStore::TrimLogsLocked(int64_t* held_delta) {
  LogTrimOutcome out;
  const int64_t bound = options_.log_bytes_total;
  int64_t held = log_bytes_held_ + *held_delta;
  // Each round empties a stream or sets one job's count right, so the pass ends.
  for (int round = 0; bound > 0 && held > bound && out.streams < kTrimStreamsPerPass && round < kTrimStreamsPerPass;
       ++round) {
    std::string job_id;
    {
      // finished_ms is set exactly when a job reaches a final state (a retry
      // leaves it 0). "+state": the state index would scan every ended job;
      // jobs_logs_ended holds only those with logs, in the order they ended.
      STMT(q, "SELECT id FROM jobs WHERE log_bytes > 0 AND finished_ms > 0 AND +state IN (4, 5, 6, 7) "
              "ORDER BY finished_ms, seq LIMIT 1");
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;  // what is held belongs to jobs that have not ended
      job_id = q.Text(0);
    }
    struct Held {
      int32_t attempt = 0, rank = 0;
      std::string stream;
      int64_t bytes = 0;
    };
    std::vector<Held> streams;
    {
      STMT(q, "SELECT attempt, rank, stream, held_bytes FROM log_streams WHERE job_id = ?1 AND held_bytes > 0 "
              "ORDER BY attempt, rank, stream LIMIT ?2");
      q.Bind(1, job_id).Bind(2, kTrimStreamsPerPass - out.streams);
      for (;;) {
        ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        streams.push_back(Held{static_cast<int32_t>(q.Int(0)), static_cast<int32_t>(q.Int(1)), q.Text(2), q.Int(3)});
      }
    }
    if (streams.empty()) {
      // The job's count names bytes none of its streams holds: set it right.
      STMT(u, "UPDATE jobs SET log_bytes = 0 WHERE id = ?1");
      RETURN_IF_ERROR(u.Bind(1, job_id).Run());
      continue;
    }
    for (const Held& h : streams) {
      if (held <= bound) break;
      {
        STMT(d, "DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 AND stream = ?4");
        RETURN_IF_ERROR(d.Bind(1, job_id).Bind(2, h.attempt).Bind(3, h.rank).Bind(4, h.stream).Run());
      }
      {
        STMT(u, "UPDATE log_streams SET held_bytes = 0, retention_dropped = 1 WHERE job_id = ?1 AND attempt = ?2 "
                "AND rank = ?3 AND stream = ?4");
        RETURN_IF_ERROR(u.Bind(1, job_id).Bind(2, h.attempt).Bind(3, h.rank).Bind(4, h.stream).Run());
      }
      RETURN_IF_ERROR(AddHeldLogBytesLocked(job_id, -h.bytes, held_delta));
      held -= h.bytes;
      out.dropped_bytes += h.bytes;
      ++out.streams;
    }
  }
  out.held_bytes = held;
  return out;
}

absl::StatusOr<LogTrimOutcome> SqliteStore::TrimLogs() {
  absl::MutexLock l(&mu_);
  LogTrimOutcome out;
  out.held_bytes = log_bytes_held_;
  if (options_.log_bytes_total <= 0 || log_bytes_held_ <= options_.log_bytes_total) return out;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  int64_t held_delta = 0;
  ASSIGN_OR_RETURN(out, TrimLogsLocked(&held_delta));
  RETURN_IF_ERROR(tx.Commit());
  log_bytes_held_ += held_delta;
  return out;
}

int64_t SqliteStore::LogBytesHeld() {
  absl::MutexLock l(&mu_);
  return log_bytes_held_;
}

absl::Status SqliteStore::CheckLogBytesCounterLocked() {
  std::optional<int64_t> counter;
  int64_t sum = 0;
  {
    STMT(q, "SELECT held_bytes FROM log_totals WHERE id = 1");
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) counter = q.Int(0);
  }
  {
    STMT(q, "SELECT COALESCE(SUM(held_bytes), 0) FROM log_streams");
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) sum = q.Int(0);
  }
  if (counter == sum) {
    log_bytes_held_ = sum;
    return absl::OkStatus();
  }
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  {
    STMT(u, "INSERT OR REPLACE INTO log_totals(id, held_bytes) VALUES(1, ?1)");
    RETURN_IF_ERROR(u.Bind(1, sum).Run());
  }
  {
    STMT(u, "UPDATE jobs SET log_bytes = (SELECT COALESCE(SUM(held_bytes), 0) FROM log_streams s "
            "WHERE s.job_id = jobs.id)");
    RETURN_IF_ERROR(u.Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  repaired_log_bytes_counter_ = counter.value_or(0);
  log_bytes_held_ = sum;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::CapLogStreamLocked(const std::string& job_id, int32_t attempt, int32_t rank,
                                                        const std::string& stream, int64_t cap) {
  if (cap <= 0) return 0;
  int64_t held = 0;
  {
    STMT(q, "SELECT held_bytes FROM log_streams WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 AND stream = ?4");
    q.Bind(1, job_id).Bind(2, attempt).Bind(3, rank).Bind(4, stream);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) held = q.Int(0);
  }
  int64_t excess = held - cap;
  int64_t dropped = 0;
  while (excess > 0) {
    int64_t offset = 0, len = 0;
    {
      STMT(q, "SELECT byte_offset, length(data) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 "
              "AND stream = ?4 ORDER BY byte_offset LIMIT 1");
      q.Bind(1, job_id).Bind(2, attempt).Bind(3, rank).Bind(4, stream);
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      offset = q.Int(0);
      len = q.Int(1);
    }
    if (len <= excess) {
      STMT(d, "DELETE FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 AND stream = ?4 AND "
              "byte_offset = ?5");
      RETURN_IF_ERROR(d.Bind(1, job_id).Bind(2, attempt).Bind(3, rank).Bind(4, stream).Bind(5, offset).Run());
    } else {
      // Keep the chunk's newest bytes: it now starts `excess` bytes later.
      len = excess;
      STMT(u, "UPDATE log_chunks SET byte_offset = byte_offset + ?6, data = substr(data, ?6 + 1) WHERE "
              "job_id = ?1 AND attempt = ?2 AND rank = ?3 AND stream = ?4 AND byte_offset = ?5");
      RETURN_IF_ERROR(
          u.Bind(1, job_id).Bind(2, attempt).Bind(3, rank).Bind(4, stream).Bind(5, offset).Bind(6, excess).Run());
    }
    excess -= len;
    dropped += len;
  }
  if (dropped > 0) {
    STMT(u, "UPDATE log_streams SET held_bytes = held_bytes - ?5 WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 "
            "AND stream = ?4");
    RETURN_IF_ERROR(u.Bind(1, job_id).Bind(2, attempt).Bind(3, rank).Bind(4, stream).Bind(5, dropped).Run());
  }
  return dropped;
}

absl::StatusOr<LogRead> SqliteStore::ReadLogs(const std::string& job_id, int32_t attempt, int32_t rank,
                                              const std::string& stream, int64_t from_offset) {
  absl::MutexLock l(&mu_);
  LogRead out;
  {
    STMT(q, "SELECT attempt FROM jobs WHERE id = ?1");
    q.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job '", Truncated(job_id), "'"));
    out.attempt = attempt != 0 ? attempt : static_cast<int32_t>(q.Int(0));
  }
  {
    STMT(q, "SELECT end_offset, (SELECT MIN(byte_offset) FROM log_chunks c WHERE c.job_id = s.job_id AND "
            "c.attempt = s.attempt AND c.rank = s.rank AND c.stream = s.stream), retention_dropped "
            "FROM log_streams s WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 AND stream = ?4");
    q.Bind(1, job_id).Bind(2, out.attempt).Bind(3, rank).Bind(4, stream);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;  // nothing received yet
    out.end_offset = q.Int(0);
    out.held_from = q.IsNull(1) ? out.end_offset : q.Int(1);
    out.dropped_by_retention = q.Int(2) != 0;
  }
  STMT(q, "SELECT byte_offset, data FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND rank = ?3 AND "
          "stream = ?4 AND byte_offset + length(data) > ?5 ORDER BY byte_offset");
  q.Bind(1, job_id).Bind(2, out.attempt).Bind(3, rank).Bind(4, stream).Bind(5, from_offset);
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    v1::LogChunk c;
    c.set_attempt(out.attempt);
    c.set_rank(rank);
    c.set_stream(stream);
    c.set_offset(q.Int(0));
    c.set_data(q.Text(1));
    out.chunks.push_back(std::move(c));
  }
  return out;
}

absl::StatusOr<CompleteOutcome> SqliteStore::CompleteJob(const Completion& c, int64_t now_ms, int32_t drain_after,
                                                         int64_t avoid_ms) {
  if (c.state != v1::JOB_STATE_SUCCEEDED && c.state != v1::JOB_STATE_FAILED &&
      c.state != v1::JOB_STATE_OVER_BUDGET && c.state != v1::JOB_STATE_CANCELLED) {
    return absl::InvalidArgumentError(absl::StrCat("completion state must be SUCCEEDED, FAILED, OVER_BUDGET or "
                                                   "CANCELLED, got ",
                                                   v1::JobState_Name(c.state)));
  }
  absl::MutexLock l(&mu_);
  CompleteOutcome out;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  int state = 0, attempt = 0, max_attempts = 0, cancel_exit = 0;
  int64_t token = 0, completed = 0;
  bool cancel_requested = false;
  std::string owner, cancel_reason;
  v1::JobSpec spec;
  {
    STMT(q,
         "SELECT state, fencing_token, completed_token, attempt, max_attempts, worker_id, cancel_requested, "
         "cancel_reason, cancel_exit_reason, spec_pb FROM jobs WHERE id = ?1");
    q.Bind(1, c.job_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job '", Truncated(c.job_id), "'"));
    state = static_cast<int>(q.Int(0));
    token = q.Int(1);
    completed = q.Int(2);
    attempt = static_cast<int>(q.Int(3));
    max_attempts = static_cast<int>(q.Int(4));
    owner = q.Text(5);
    cancel_requested = q.Int(6) != 0;
    cancel_reason = q.Text(7);
    cancel_exit = static_cast<int>(q.Int(8));
    spec.ParseFromString(q.Text(9));
  }
  if (c.fencing_token != 0 && c.fencing_token == completed) {
    // The same lease completing again (a worker replaying its spool): answer with
    // the job as it is, change nothing.
    out.replay = true;
    ASSIGN_OR_RETURN(out.job, GetJobLocked(c.job_id));
    return out;
  }
  if (c.fencing_token != token) return Stale(c.job_id, token, c.fencing_token, "the lease was replaced");
  if (!IsActive(state)) return Stale(c.job_id, token, c.fencing_token, "the job is no longer leased");
  if (owner != c.worker_id) return Stale(c.job_id, token, c.fencing_token, "leased to another worker");

  const bool budget_outcome = c.state == v1::JOB_STATE_OVER_BUDGET ||
                              c.exit_reason == v1::EXIT_REASON_TIME_LIMIT_KILLED ||
                              c.exit_reason == v1::EXIT_REASON_EVAL_LIMIT_KILLED ||
                              c.exit_reason == v1::EXIT_REASON_OVER_BUDGET;
  const bool retry = c.infra_failure && !budget_outcome && !cancel_requested && c.state == v1::JOB_STATE_FAILED &&
                     attempt < max_attempts;
  v1::JobState final_state = c.state;
  v1::ExitReason exit_reason = c.exit_reason;
  std::string message = c.message;
  if (cancel_requested && (c.state == v1::JOB_STATE_CANCELLED || c.state == v1::JOB_STATE_FAILED)) {
    if (cancel_exit == v1::EXIT_REASON_EARLY_STOPPED) exit_reason = v1::EXIT_REASON_EARLY_STOPPED;
    // The controller's no-progress backstop asked for the kill: the job failed.
    if (cancel_exit == v1::EXIT_REASON_NO_PROGRESS) {
      exit_reason = v1::EXIT_REASON_NO_PROGRESS;
      final_state = v1::JOB_STATE_FAILED;
    }
    if (!cancel_reason.empty()) message = cancel_reason;
  }
  // A result row when the run produced figures (the leaderboard reads it).
  const bool has_result = c.result.steps() > 0 || c.result.val_bpb_post_quant() > 0 || !c.result.final_json().empty();
  if (has_result) {
    const bool within = final_state == v1::JOB_STATE_SUCCEEDED && c.result.within_budget() &&
                        c.result.artifact_bytes() > 0 && c.result.artifact_bytes() <= ArtifactLimit(spec);
    STMT(ins,
         "INSERT OR REPLACE INTO results(job_id, attempt, val_bpb, val_bpb_post_quant, artifact_bytes, "
         "within_budget, result_pb) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    ins.Bind(1, c.job_id).Bind(2, attempt).Bind(3, c.result.val_bpb()).Bind(4, c.result.val_bpb_post_quant());
    ins.Bind(5, c.result.artifact_bytes()).Bind(6, within ? 1 : 0).BindBlob(7, c.result.SerializeAsString());
    RETURN_IF_ERROR(ins.Run());
  }
  if (retry) {
    STMT(u,
         "UPDATE jobs SET state = 1, worker_id = '', lease_expiry_ms = 0, queued_ms = ?3, completed_token = ?2, "
         "exit_reason = ?4, message = ?5, avoid_worker = ?6, avoid_until_ms = ?7 "
         "WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
    u.Bind(1, c.job_id).Bind(2, c.fencing_token).Bind(3, now_ms).Bind(4, static_cast<int>(exit_reason));
    u.Bind(5, absl::StrCat("attempt ", attempt, " of ", max_attempts, " failed on ", c.worker_id, " (",
                           v1::ExitReason_Name(exit_reason), "): ", message, "; retrying on another worker"));
    u.Bind(6, c.worker_id).Bind(7, now_ms + avoid_ms);
    RETURN_IF_ERROR(u.Run());
    if (u.Changes() != 1) return absl::InternalError("completion lost its precondition");
    out.retried = true;
  } else {
    STMT(u,
         "UPDATE jobs SET state = ?3, lease_expiry_ms = 0, finished_ms = ?4, completed_token = ?2, exit_reason = ?5, "
         "message = ?6 WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
    u.Bind(1, c.job_id).Bind(2, c.fencing_token).Bind(3, static_cast<int>(final_state)).Bind(4, now_ms);
    u.Bind(5, static_cast<int>(exit_reason)).Bind(6, message);
    RETURN_IF_ERROR(u.Run());
    if (u.Changes() != 1) return absl::InternalError("completion lost its precondition");
  }
  // Bad-node exclusion: N infrastructure failures in a row drain the worker.
  if (c.infra_failure && !budget_outcome) {
    STMT(u, "UPDATE workers SET infra_failure_streak = infra_failure_streak + 1 WHERE id = ?1");
    RETURN_IF_ERROR(u.Bind(1, c.worker_id).Run());
    if (drain_after > 0) {
      STMT(d,
           "UPDATE workers SET drained = 1, drain_reason = ?2, drained_by = ?5, drained_ms = ?4 "
           "WHERE id = ?1 AND drained = 0 AND infra_failure_streak >= ?3");
      d.Bind(1, c.worker_id).Bind(3, drain_after).Bind(4, now_ms).Bind(5, std::string(kDrainedByController));
      d.Bind(2, absl::StrCat(drain_after, " jobs in a row failed for infrastructure reasons (last: ", c.job_id, " ",
                             v1::ExitReason_Name(c.exit_reason), ": ", c.message.substr(0, 200), ")"));
      RETURN_IF_ERROR(d.Run());
      out.worker_drained = d.Changes() == 1;
    }
  } else if (final_state == v1::JOB_STATE_SUCCEEDED) {
    STMT(u, "UPDATE workers SET infra_failure_streak = 0 WHERE id = ?1");
    RETURN_IF_ERROR(u.Bind(1, c.worker_id).Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  ASSIGN_OR_RETURN(out.job, GetJobLocked(c.job_id));
  return out;
}

absl::StatusOr<std::vector<ExpiredLease>> SqliteStore::ExpireLeases(int64_t now_ms) {
  absl::MutexLock l(&mu_);
  struct Row {
    std::string id, worker;
    int64_t token;
    int attempt, max_attempts;
    bool cancel;
  };
  std::vector<Row> rows;
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  {
    STMT(q,
         "SELECT id, worker_id, fencing_token, attempt, max_attempts, cancel_requested FROM jobs "
         "WHERE state IN (2, 3) AND lease_expiry_ms < ?1");
    q.Bind(1, now_ms);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      rows.push_back(Row{q.Text(0), q.Text(1), q.Int(2), static_cast<int>(q.Int(3)), static_cast<int>(q.Int(4)),
                         q.Int(5) != 0});
    }
  }
  std::vector<ExpiredLease> out;
  for (const auto& r : rows) {
    ExpiredLease e{r.id, r.worker, false};
    if (r.cancel) {
      STMT(u,
           "UPDATE jobs SET state = 7, lease_expiry_ms = 0, finished_ms = ?3, "
           "exit_reason = CASE cancel_exit_reason WHEN 0 THEN 7 ELSE cancel_exit_reason END, "
           "message = cancel_reason || ' (lease expired before the worker confirmed)' "
           "WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
      RETURN_IF_ERROR(u.Bind(1, r.id).Bind(2, r.token).Bind(3, now_ms).Run());
    } else if (r.attempt < r.max_attempts) {
      STMT(u,
           "UPDATE jobs SET state = 1, worker_id = '', lease_expiry_ms = 0, queued_ms = ?3, message = ?4 "
           "WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
      u.Bind(1, r.id).Bind(2, r.token).Bind(3, now_ms);
      u.Bind(4, absl::StrCat("lease on ", r.worker, " expired (attempt ", r.attempt, " of ", r.max_attempts,
                             "); requeued"));
      RETURN_IF_ERROR(u.Run());
      e.requeued = true;
    } else {
      STMT(u,
           "UPDATE jobs SET state = 5, lease_expiry_ms = 0, finished_ms = ?3, exit_reason = 11, message = ?4 "
           "WHERE id = ?1 AND fencing_token = ?2 AND state IN (2, 3)");
      u.Bind(1, r.id).Bind(2, r.token).Bind(3, now_ms);
      u.Bind(4, absl::StrCat("lease on ", r.worker, " expired on the last attempt (", r.attempt, " of ",
                             r.max_attempts, ")"));
      RETURN_IF_ERROR(u.Run());
    }
    out.push_back(e);
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<std::vector<std::string>> SqliteStore::FlagSilentJobs(int64_t now_ms, int64_t default_silence_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  std::vector<std::pair<std::string, int64_t>> silent;
  {
    STMT(q,
         "SELECT id, ?1 - last_event_ms FROM jobs WHERE state IN (2, 3) AND cancel_requested = 0 AND "
         "last_event_ms > 0 AND ?1 - last_event_ms > (CASE silence_ms WHEN 0 THEN ?2 ELSE silence_ms END)");
    q.Bind(1, now_ms).Bind(2, default_silence_ms);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      silent.emplace_back(q.Text(0), q.Int(1));
    }
  }
  std::vector<std::string> out;
  for (const auto& [id, quiet_ms] : silent) {
    STMT(u,
         "UPDATE jobs SET cancel_requested = 1, cancel_exit_reason = 9, cancel_reason = ?2 "
         "WHERE id = ?1 AND state IN (2, 3) AND cancel_requested = 0");
    u.Bind(1, id).Bind(2, absl::StrCat("no_progress: no event from the trainer for ", quiet_ms / 1000,
                                       " s (silence limit); killed"));
    RETURN_IF_ERROR(u.Run());
    out.push_back(id);
  }
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::Status SqliteStore::ExtendAllLeases(int64_t min_expiry_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  STMT(u, "UPDATE jobs SET lease_expiry_ms = MAX(lease_expiry_ms, ?1) WHERE state IN (2, 3)");
  RETURN_IF_ERROR(u.Bind(1, min_expiry_ms).Run());
  return tx.Commit();
}

absl::Status SqliteStore::CancelJobLocked(const std::string& job_id, const std::string& reason,
                                          v1::ExitReason exit_reason, int64_t now_ms) {
  {
    STMT(u,
         "UPDATE jobs SET state = 7, finished_ms = ?2, exit_reason = ?3, message = ?4, pending_reason = '' "
         "WHERE id = ?1 AND state = 1");
    u.Bind(1, job_id).Bind(2, now_ms).Bind(3, static_cast<int>(exit_reason)).Bind(4, reason);
    RETURN_IF_ERROR(u.Run());
    if (u.Changes() == 1) return absl::OkStatus();
  }
  STMT(u,
       "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?2, cancel_exit_reason = ?3 "
       "WHERE id = ?1 AND state IN (2, 3) AND cancel_requested = 0");
  u.Bind(1, job_id).Bind(2, reason).Bind(3, static_cast<int>(exit_reason));
  return u.Run();
}

absl::StatusOr<v1::Job> SqliteStore::CancelJob(const std::string& job_id, const std::string& reason,
                                               v1::ExitReason exit_reason, int64_t now_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  ASSIGN_OR_RETURN(auto before, GetJobLocked(job_id));
  (void)before;
  RETURN_IF_ERROR(CancelJobLocked(job_id, reason, exit_reason, now_ms));
  RETURN_IF_ERROR(tx.Commit());
  return GetJobLocked(job_id);
}

absl::StatusOr<v1::Sweep> SqliteStore::CancelSweep(const std::string& sweep_id, const std::string& reason,
                                                   int64_t now_ms) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  {
    STMT(u, "UPDATE sweeps SET cancelled = 1 WHERE id = ?1");
    RETURN_IF_ERROR(u.Bind(1, sweep_id).Run());
    if (u.Changes() == 0) return absl::NotFoundError(absl::StrCat("no sweep '", Truncated(sweep_id), "'"));
  }
  std::vector<std::string> ids;
  {
    STMT(q, "SELECT id FROM jobs WHERE sweep_id = ?1 AND state IN (1, 2, 3)");
    q.Bind(1, sweep_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      ids.push_back(q.Text(0));
    }
  }
  for (const auto& id : ids) RETURN_IF_ERROR(CancelJobLocked(id, reason, v1::EXIT_REASON_CANCELLED, now_ms));
  RETURN_IF_ERROR(tx.Commit());
  return GetSweepLocked(sweep_id);
}

absl::StatusOr<std::map<int32_t, int64_t>> SqliteStore::QueuedByGpus() {
  absl::MutexLock l(&mu_);
  STMT(q, "SELECT gpus, COUNT(*) FROM jobs WHERE state = 1 GROUP BY gpus");
  std::map<int32_t, int64_t> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out[static_cast<int32_t>(q.Int(0))] = q.Int(1);
  }
  return out;
}

// ---------------------------------------------------------------- events/results

absl::StatusOr<std::vector<v1::Event>> SqliteStore::ListEvents(const std::string& job_id, int64_t after_seq,
                                                               int limit) {
  absl::MutexLock l(&mu_);
  // Events of the job's current attempt (a retried job's watch restarts at seq 1).
  STMT(q,
       "SELECT e.seq, e.type, e.step, e.time_unix, e.json, e.attempt FROM events e JOIN jobs j ON j.id = e.job_id "
       "WHERE e.job_id = ?1 AND e.attempt = j.attempt AND e.seq > ?2 ORDER BY e.seq LIMIT ?3");
  q.Bind(1, job_id).Bind(2, after_seq).Bind(3, limit > 0 ? limit : 1000000);
  std::vector<v1::Event> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    v1::Event e;
    e.set_seq(q.Int(0));
    e.set_type(q.Text(1));
    e.set_step(q.Int(2));
    e.set_time_unix(q.Double(3));
    e.set_json(q.Text(4));
    e.set_attempt(static_cast<int32_t>(q.Int(5)));
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<v1::Event>> SqliteStore::TailEvents(const std::string& job_id, int n,
                                                              int32_t attempt) {
  absl::MutexLock l(&mu_);
  STMT(q,
       "SELECT e.seq, e.type, e.step, e.time_unix, e.json, e.attempt FROM events e JOIN jobs j ON j.id = e.job_id "
       "WHERE e.job_id = ?1 AND e.attempt = (CASE ?3 WHEN 0 THEN j.attempt ELSE ?3 END) ORDER BY e.seq DESC LIMIT ?2");
  q.Bind(1, job_id).Bind(2, n > 0 ? n : 100).Bind(3, attempt);
  std::vector<v1::Event> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    v1::Event e;
    e.set_seq(q.Int(0));
    e.set_type(q.Text(1));
    e.set_step(q.Int(2));
    e.set_time_unix(q.Double(3));
    e.set_json(q.Text(4));
    e.set_attempt(static_cast<int32_t>(q.Int(5)));
    out.insert(out.begin(), std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<ValPoint>> SqliteStore::SweepValPoints(const std::string& sweep_id) {
  absl::MutexLock l(&mu_);
  STMT(q,
       "SELECT e.job_id, e.step, e.val_bpb, j.state FROM events e JOIN jobs j ON j.id = e.job_id "
       "WHERE j.sweep_id = ?1 AND e.attempt = j.attempt AND e.type = 'val' AND e.val_bpb IS NOT NULL "
       "ORDER BY e.job_id, e.step");
  q.Bind(1, sweep_id);
  std::vector<ValPoint> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(ValPoint{q.Text(0), q.Int(1), q.Double(2), static_cast<v1::JobState>(q.Int(3))});
  }
  return out;
}

absl::StatusOr<std::vector<v1::Job>> SqliteStore::BestJobs(const std::string& sweep_id, int limit) {
  absl::MutexLock l(&mu_);
  // One sweep: read only its rows (jobs_sweep; `+` keeps the state index out).
  // The scheduler asks this on every success; `?1 = '' OR ...` made it scan all
  // succeeded jobs of all sweeps, so a long soak slowed as the table grew.
  const char* where = sweep_id.empty() ? "WHERE j.state = 4 " : "WHERE j.sweep_id = ?1 AND +j.state = 4 ";
  return QueryJobs(absl::StrCat("SELECT ", kJobCols, where,
                                "AND r.within_budget = 1 ORDER BY r.val_bpb_post_quant ASC, j.seq LIMIT ?2"),
                   [&](sqlite3_stmt* s) {
                     sqlite3_bind_text(s, 1, sweep_id.data(), static_cast<int>(sweep_id.size()), SQLITE_TRANSIENT);
                     sqlite3_bind_int64(s, 2, limit > 0 ? limit : 20);
                   });
}

// ---------------------------------------------------------------- workers

absl::StatusOr<WorkerRecord> SqliteStore::RegisterWorker(const v1::Worker& worker, int64_t now_ms) {
  if (worker.id().empty()) return absl::InvalidArgumentError("worker id is empty");
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  v1::Worker w = worker;
  w.clear_drained();
  w.clear_drain_reason();
  w.clear_drained_by();
  w.clear_drained_unix_ms();
  w.clear_running_job_ids();
  {
    STMT(u,
         "INSERT INTO workers(id, worker_pb, gpus_free, cpu_slots_free, last_heartbeat_ms, registered_ms) "
         "VALUES(?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(id) DO UPDATE SET worker_pb = excluded.worker_pb, "
         "last_heartbeat_ms = excluded.last_heartbeat_ms");
    u.Bind(1, w.id()).BindBlob(2, w.SerializeAsString()).Bind(3, w.gpus_size()).Bind(4, w.cpu_slots());
    u.Bind(5, now_ms);
    RETURN_IF_ERROR(u.Run());
  }
  RETURN_IF_ERROR(tx.Commit());
  WorkerRecord r;
  r.worker = w;
  r.last_heartbeat_ms = now_ms;
  return r;
}

absl::StatusOr<std::vector<WorkerRecord>> SqliteStore::ListWorkers() {
  absl::MutexLock l(&mu_);
  return QueryWorkersLocked("");
}

absl::StatusOr<std::vector<WorkerRecord>> SqliteStore::QueryWorkersLocked(const std::string& only_id) {
  std::vector<WorkerRecord> out;
  {
    // One worker by its primary key, or all of them.
    STMT(q, absl::StrCat("SELECT id, worker_pb, gpus_free, cpu_slots_free, last_heartbeat_ms, drained, drain_reason, "
                         "infra_failure_streak, drained_by, drained_ms FROM workers ",
                         only_id.empty() ? "ORDER BY id" : "WHERE id = ?1"));
    if (!only_id.empty()) q.Bind(1, only_id);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      WorkerRecord r;
      r.worker.ParseFromString(q.Text(1));
      r.worker.set_id(q.Text(0));
      r.gpus_free = static_cast<int32_t>(q.Int(2));
      r.cpu_slots_free = static_cast<int32_t>(q.Int(3));
      r.last_heartbeat_ms = q.Int(4);
      r.worker.set_drained(q.Int(5) != 0);
      r.worker.set_drain_reason(q.Text(6));
      r.infra_failure_streak = static_cast<int32_t>(q.Int(7));
      r.worker.set_drained_by(q.Text(8));
      r.worker.set_drained_unix_ms(q.Int(9));
      r.worker.set_gpus_free(r.gpus_free);
      r.worker.set_last_heartbeat_unix_ms(r.last_heartbeat_ms);
      out.push_back(std::move(r));
    }
  }
  for (auto& r : out) {
    STMT(q, "SELECT id FROM jobs WHERE worker_id = ?1 AND state IN (2, 3) ORDER BY seq");
    q.Bind(1, r.worker.id());
    for (;;) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      r.worker.add_running_job_ids(q.Text(0));
    }
  }
  return out;
}

absl::StatusOr<WorkerRecord> SqliteStore::GetWorkerLocked(const std::string& worker_id) {
  ASSIGN_OR_RETURN(auto ws, QueryWorkersLocked(worker_id));
  if (ws.empty()) return UnknownWorker(worker_id);
  return std::move(ws.front());
}

absl::Status SqliteStore::SetWorkerFree(const std::string& worker_id, int32_t gpus_free, int32_t cpu_slots_free,
                                        int64_t now_ms) {
  absl::MutexLock l(&mu_);
  STMT(u, "UPDATE workers SET gpus_free = ?2, cpu_slots_free = ?3, last_heartbeat_ms = ?4 WHERE id = ?1");
  u.Bind(1, worker_id).Bind(2, gpus_free).Bind(3, cpu_slots_free).Bind(4, now_ms);
  RETURN_IF_ERROR(u.Run());
  if (u.Changes() == 0) return UnknownWorker(worker_id);
  return absl::OkStatus();
}

absl::StatusOr<DrainOutcome> SqliteStore::DrainWorker(const std::string& worker_id, const std::string& reason,
                                                      const std::string& by, int64_t now_ms) {
  if (reason.empty()) return absl::InvalidArgumentError("a drain needs a reason");
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  DrainOutcome out;
  {
    // Only a worker in service changes: a second drain keeps the first's record.
    STMT(u, "UPDATE workers SET drained = 1, drain_reason = ?2, drained_by = ?3, drained_ms = ?4 "
            "WHERE id = ?1 AND drained = 0");
    u.Bind(1, worker_id).Bind(2, reason).Bind(3, by).Bind(4, now_ms);
    RETURN_IF_ERROR(u.Run());
    out.changed = u.Changes() == 1;
  }
  ASSIGN_OR_RETURN(out.worker, GetWorkerLocked(worker_id));
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<DrainOutcome> SqliteStore::UndrainWorker(const std::string& worker_id) {
  absl::MutexLock l(&mu_);
  Tx tx(this);
  RETURN_IF_ERROR(tx.Begin());
  DrainOutcome out;
  {
    STMT(q, "SELECT drained FROM workers WHERE id = ?1");
    q.Bind(1, worker_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return UnknownWorker(worker_id);
    out.changed = q.Int(0) != 0;
  }
  {
    STMT(u, "UPDATE workers SET drained = 0, drain_reason = '', drained_by = '', drained_ms = 0, "
            "infra_failure_streak = 0 WHERE id = ?1");
    RETURN_IF_ERROR(u.Bind(1, worker_id).Run());
  }
  ASSIGN_OR_RETURN(out.worker, GetWorkerLocked(worker_id));
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

}  // namespace caddie::controller
