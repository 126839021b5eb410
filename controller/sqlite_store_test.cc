#include "controller/sqlite_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace caddie::controller {
namespace {

namespace fs = std::filesystem;

// A worker's drain fields in one string: "drained|reason|by|ms".
std::string DrainRecord(const v1::Worker& w) {
  return absl::StrCat(w.drained() ? "drained" : "in service", "|", w.drain_reason(), "|", w.drained_by(), "|",
                      w.drained_unix_ms());
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("caddie_store_test_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    auto s = SqliteStore::Open((dir_ / "caddie.db").string(), {});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  std::vector<v1::Job> MakeSweep(int n, int gpus = 1, int max_attempts = 2, int priority = 0) {
    std::vector<NewJob> jobs;
    for (int i = 0; i < n; ++i) {
      NewJob j;
      j.spec.set_spec_json("{}");
      j.spec.set_gpus(gpus);
      j.spec.set_max_attempts(max_attempts);
      j.spec.set_priority(priority);
      j.params_json = "{\"i\":" + std::to_string(i) + "}";
      j.index = i;
      jobs.push_back(j);
    }
    v1::SweepSpec spec;
    spec.set_name("t");
    auto r = store_->CreateSweep(spec, jobs, 1000);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->second;
  }
  void Register(const std::string& id, int gpus) {
    v1::Worker w;
    w.set_id(id);
    for (int i = 0; i < gpus; ++i) w.add_gpus()->set_index(i);
    ASSERT_TRUE(store_->RegisterWorker(w, 1000).ok());
  }
  fs::path dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, MigrationsAreVersionedAndIdempotent) {
  EXPECT_EQ(store_->schema_version(), 6);
  MakeSweep(2);
  Reopen();
  EXPECT_EQ(store_->schema_version(), 6);
  auto jobs = store_->ListJobs("", {}, 0);
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 2u);
}

// The journal mode is a property of the file: another connection (the sqlite3
// CLI, a backup) sees WAL, so readers do not block the controller's writes.
TEST_F(SqliteStoreTest, TheFileIsInWalModeAndADatabaseThatCannotBeIsRefused) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((dir_ / "caddie.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW) << sqlite3_errmsg(db);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(q, 0))), "wal");
  sqlite3_finalize(q);
  sqlite3_close(db);
  EXPECT_TRUE(fs::exists(dir_ / "caddie.db-wal"));

  // An in-memory database answers journal_mode "memory": Open says so and names it.
  auto mem = SqliteStore::Open(":memory:", {});
  ASSERT_FALSE(mem.ok());
  EXPECT_EQ(mem.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mem.status().message(),
            "cannot put database ':memory:' in WAL journal mode: SQLite kept journal_mode 'memory' (an in-memory "
            "database, or a file system without shared-memory support?)");
}

TEST_F(SqliteStoreTest, LeaseIsPriorityThenFifoAndFitsGpus) {
  auto low = MakeSweep(2, 1, 2, 0);
  auto big = MakeSweep(1, 4, 2, 5);
  auto high = MakeSweep(1, 1, 2, 5);
  Register("w", 2);
  auto l = store_->LeaseNext("w", 2, 0, 2000, 1000);
  ASSERT_TRUE(l.ok() && l->has_value()) << l.status();
  EXPECT_EQ((*l)->job.id(), high[0].id());  // priority 5 but the 4-GPU one does not fit
  EXPECT_EQ((*l)->job.state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ((*l)->job.attempt(), 1);
  EXPECT_EQ((*l)->job.fencing_token(), 1);
  l = store_->LeaseNext("w", 2, 0, 2000, 1000);
  EXPECT_EQ((*l)->job.id(), low[0].id());
  l = store_->LeaseNext("w", 0, 0, 2000, 1000);
  EXPECT_FALSE(l->has_value());
  l = store_->LeaseNext("w", 4, 0, 2000, 1000);
  EXPECT_EQ((*l)->job.id(), big[0].id());
}

TEST_F(SqliteStoreTest, StaleTokenIsRejectedWithCodeAndReplayIsIdempotent) {
  auto jobs = MakeSweep(1, 1, 3);
  Register("w1", 1);
  Register("w2", 1);
  auto l1 = store_->LeaseNext("w1", 1, 0, 2000, 100);
  ASSERT_TRUE(l1.ok() && l1->has_value());
  // The lease expires; the job is requeued and leased by w2.
  auto exp = store_->ExpireLeases(2200);
  ASSERT_TRUE(exp.ok());
  ASSERT_EQ(exp->size(), 1u);
  EXPECT_TRUE((*exp)[0].requeued);
  auto l2 = store_->LeaseNext("w2", 1, 0, 2300, 1000);
  ASSERT_TRUE(l2.ok() && l2->has_value());
  EXPECT_EQ((*l2)->job.attempt(), 2);
  EXPECT_EQ((*l2)->job.fencing_token(), 2);

  v1::Event e;
  e.set_seq(1);
  e.set_type("step");
  auto a = store_->AppendEvents("w1", jobs[0].id(), 1, {e}, 2400);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(a.status()), kStaleFencingToken);

  Completion c{"w1", jobs[0].id(), 1, v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED, "", {}, false};
  c.result.set_val_bpb_post_quant(1.0);
  auto stale = store_->CompleteJob(c, 2500, 3, 0);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(stale.status()), kStaleFencingToken);
  auto job = store_->GetJob(jobs[0].id());
  EXPECT_EQ(job->state(), v1::JOB_STATE_LEASED);  // nothing overwritten
  EXPECT_FALSE(job->has_result());

  // Events replayed twice are stored once.
  auto a1 = store_->AppendEvents("w2", jobs[0].id(), 2, {e}, 2600);
  ASSERT_TRUE(a1.ok()) << a1.status();
  EXPECT_TRUE(a1->became_running);
  EXPECT_EQ(a1->inserted, 1);
  auto a2 = store_->AppendEvents("w2", jobs[0].id(), 2, {e}, 2600);
  EXPECT_EQ(a2->inserted, 0);
  EXPECT_EQ(a2->acked_seq, 1);

  c.worker_id = "w2";
  c.fencing_token = 2;
  c.result.set_within_budget(true);
  c.result.set_artifact_bytes(1000);
  auto done = store_->CompleteJob(c, 2700, 3, 0);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->job.state(), v1::JOB_STATE_SUCCEEDED);
  auto again = store_->CompleteJob(c, 2800, 3, 0);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replay);
  auto best = store_->BestJobs("", 10);
  ASSERT_EQ(best->size(), 1u);
  EXPECT_DOUBLE_EQ((*best)[0].result().val_bpb_post_quant(), 1.0);
}

TEST_F(SqliteStoreTest, ExpiredLeaseFailsAfterMaxAttempts) {
  auto jobs = MakeSweep(1, 1, 2);
  Register("w", 1);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto l = store_->LeaseNext("w", 1, 0, attempt * 1000, 10);
    ASSERT_TRUE(l.ok() && l->has_value());
    ASSERT_TRUE(store_->ExpireLeases(attempt * 1000 + 100).ok());
  }
  auto job = store_->GetJob(jobs[0].id());
  EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job->exit_reason(), v1::EXIT_REASON_LEASE_EXPIRED);
  EXPECT_NE(job->message().find("2 of 2"), std::string::npos) << job->message();
}

TEST_F(SqliteStoreTest, InfraFailuresRetryAndDrainButBudgetFailuresDoNot) {
  auto jobs = MakeSweep(3, 1, 3);
  Register("w", 1);
  auto l = store_->LeaseNext("w", 1, 0, 1000, 1000);
  Completion c{"w", (*l)->job.id(), 1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, "CUDA error", {}, true};
  auto r = store_->CompleteJob(c, 1100, 2, 60000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->retried);
  EXPECT_EQ(r->job.state(), v1::JOB_STATE_QUEUED);
  // Avoids the failing worker for a while: w now gets the next job, not the retried one.
  l = store_->LeaseNext("w", 1, 0, 1200, 1000);
  EXPECT_EQ((*l)->job.id(), jobs[1].id());
  c = {"w", jobs[1].id(), 1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_TIME_LIMIT_KILLED, "over time", {}, true};
  r = store_->CompleteJob(c, 1300, 2, 60000);
  EXPECT_FALSE(r->retried);
  EXPECT_EQ(r->job.state(), v1::JOB_STATE_FAILED);
  EXPECT_FALSE(r->worker_drained);  // budget failures do not count against the node
  l = store_->LeaseNext("w", 1, 0, 1400, 1000);
  c = {"w", jobs[2].id(), 1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_NO_PROGRESS, "silent", {}, true};
  r = store_->CompleteJob(c, 1500, 2, 60000);
  EXPECT_TRUE(r->worker_drained);
  auto ws = store_->ListWorkers();
  ASSERT_EQ(ws->size(), 1u);
  EXPECT_TRUE((*ws)[0].worker.drained());
  EXPECT_NE((*ws)[0].worker.drain_reason().find("2 jobs in a row failed"), std::string::npos);
}

TEST_F(SqliteStoreTest, DrainByHandRecordsWhoWhenWhyKeepsRunningJobsAndSurvivesReopenAndReregistration) {
  auto jobs = MakeSweep(2, 1, 3);
  Register("w", 2);
  auto l = store_->LeaseNext("w", 2, 0, 1000, 60000);
  ASSERT_TRUE(l.ok() && l->has_value());
  auto d = store_->DrainWorker("w", "swap the PSU", "alice@ops (ipv4:10.0.0.1:5000)", 2000);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->changed);
  EXPECT_EQ(DrainRecord(d->worker.worker), "drained|swap the PSU|alice@ops (ipv4:10.0.0.1:5000)|2000");
  // The leased job stays leased to it: a drain stops new work only.
  ASSERT_EQ(d->worker.worker.running_job_ids_size(), 1);
  EXPECT_EQ(d->worker.worker.running_job_ids(0), (*l)->job.id());
  EXPECT_EQ(store_->GetJob((*l)->job.id())->state(), v1::JOB_STATE_LEASED);

  // Nothing more is leased to it (the store checks, not only the scheduler).
  auto none = store_->LeaseNext("w", 1, 0, 2100, 60000);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  // A second drain is OK and keeps the first record.
  d = store_->DrainWorker("w", "again", "bob", 3000);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->changed);
  EXPECT_EQ(DrainRecord(d->worker.worker), "drained|swap the PSU|alice@ops (ipv4:10.0.0.1:5000)|2000");

  // Durable, and re-registering does not clear it.
  Reopen();
  Register("w", 2);
  auto ws = store_->ListWorkers();
  ASSERT_TRUE(ws.ok());
  ASSERT_EQ(ws->size(), 1u);
  EXPECT_EQ(DrainRecord((*ws)[0].worker), "drained|swap the PSU|alice@ops (ipv4:10.0.0.1:5000)|2000");
  EXPECT_EQ(store_->schema_version(), 6);
}

TEST_F(SqliteStoreTest, UndrainClearsTheDrainAndTheStreakAndIsIdempotent) {
  auto jobs = MakeSweep(3, 1, 1);
  Register("w", 1);
  // Two infra failures in a row drain it (drain_after 2).
  for (int i = 0; i < 2; ++i) {
    auto l = store_->LeaseNext("w", 1, 0, 1000 + i, 60000);
    ASSERT_TRUE(l.ok() && l->has_value());
    Completion c{"w", (*l)->job.id(), (*l)->job.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED,
                 "boom", {}, true};
    auto r = store_->CompleteJob(c, 1100 + i, 2, 0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->worker_drained, i == 1);
  }
  auto ws = store_->ListWorkers();
  EXPECT_TRUE(absl::StartsWith(DrainRecord((*ws)[0].worker), "drained|2 jobs in a row failed for infrastructure"));
  EXPECT_TRUE(absl::EndsWith(DrainRecord((*ws)[0].worker), "|controller|1101"));
  EXPECT_EQ((*ws)[0].infra_failure_streak, 2);
  auto none = store_->LeaseNext("w", 1, 0, 1200, 60000);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  auto u = store_->UndrainWorker("w");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->changed);
  EXPECT_EQ(DrainRecord(u->worker.worker), "in service|||0");
  EXPECT_EQ(u->worker.infra_failure_streak, 0);

  // Not drained: OK, nothing to change.
  u = store_->UndrainWorker("w");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_FALSE(u->changed);
  EXPECT_EQ(DrainRecord(u->worker.worker), "in service|||0");

  // The streak restarted: one more infra failure does not drain it again.
  auto l = store_->LeaseNext("w", 1, 0, 2000, 60000);
  ASSERT_TRUE(l.ok() && l->has_value());
  Completion c{"w", (*l)->job.id(), (*l)->job.fencing_token(), v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED,
               "boom", {}, true};
  auto r = store_->CompleteJob(c, 2100, 2, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->worker_drained);
  EXPECT_EQ((*store_->ListWorkers())[0].infra_failure_streak, 1);
}

TEST_F(SqliteStoreTest, DrainAndUndrainErrorsNameTheWorker) {
  Register("w", 1);
  auto d = store_->DrainWorker("ghost", "maintenance", "alice", 1000);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(d.status().message().find("unknown worker 'ghost'"), std::string_view::npos) << d.status();
  auto u = store_->UndrainWorker("ghost");
  EXPECT_EQ(u.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(u.status().message().find("unknown worker 'ghost'"), std::string_view::npos) << u.status();
  d = store_->DrainWorker("w", "", "alice", 1000);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((*store_->ListWorkers())[0].worker.drained());
}

TEST_F(SqliteStoreTest, CancelQueuedImmediatelyAndRunningViaHeartbeat) {
  auto jobs = MakeSweep(2);
  Register("w", 1);
  auto l = store_->LeaseNext("w", 1, 0, 1000, 1000);
  auto q = store_->CancelJob(jobs[1].id(), "user", v1::EXIT_REASON_CANCELLED, 1100);
  EXPECT_EQ(q->state(), v1::JOB_STATE_CANCELLED);
  auto r = store_->CancelJob(jobs[0].id(), "user", v1::EXIT_REASON_CANCELLED, 1100);
  EXPECT_EQ(r->state(), v1::JOB_STATE_LEASED);
  auto hb = store_->Heartbeat("w", {{jobs[0].id(), 1}, {"nope", 3}}, 0, 1200, 1000);
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(hb->cancel_job_ids, std::vector<std::string>{jobs[0].id()});
  EXPECT_EQ(hb->lost_job_ids, std::vector<std::string>{"nope"});
  auto unknown = store_->Heartbeat("ghost", {}, 0, 1200, 1000);
  EXPECT_FALSE(unknown->known_worker);
}

v1::LogChunk Chunk(int rank, const std::string& stream, int64_t offset, const std::string& data) {
  v1::LogChunk c;
  c.set_rank(rank);
  c.set_stream(stream);
  c.set_offset(offset);
  c.set_data(data);
  return c;
}

// The held bytes of one stream, joined.
std::string HeldText(const LogRead& r) {
  std::string text;
  for (const auto& c : r.chunks) text += c.data();
  return text;
}

TEST_F(SqliteStoreTest, LogChunksReplayedOrOverlappingAreStoredOnceInOrder) {
  auto jobs = MakeSweep(1, /*gpus=*/2);
  Register("w1", 2);
  auto l = store_->LeaseNext("w1", 2, 0, 2000, 100000);
  ASSERT_TRUE(l.ok() && l->has_value());
  const std::string id = jobs[0].id();
  const std::vector<v1::LogChunk> batch1 = {Chunk(1, "stderr", 0, "r1 line 1\n"), Chunk(0, "stderr", 0, "r0\n"),
                                            Chunk(1, "stderr", 10, "r1 line 2\n")};
  auto a = store_->AppendLogs("w1", id, 1, batch1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inserted_bytes, 23);
  // The spool replays the batch (the ack was lost), then sends the next one, which
  // overlaps the last bytes it had sent.
  a = store_->AppendLogs("w1", id, 1, batch1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inserted_bytes, 0);
  a = store_->AppendLogs("w1", id, 1, {Chunk(1, "stderr", 15, "ne 2\nr1 line 3\n"), Chunk(1, "stdout", 0, "out\n")});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inserted_bytes, 14);  // "r1 line 3\n" and "out\n"

  auto r = store_->ReadLogs(id, 0, 1, "stderr", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(HeldText(*r), "r1 line 1\nr1 line 2\nr1 line 3\n");
  EXPECT_EQ(r->end_offset, 30);
  EXPECT_EQ(r->held_from, 0);
  EXPECT_EQ(r->attempt, 1);
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 0, 0, "stderr", 0)), "r0\n");
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 0, 1, "stdout", 0)), "out\n");
  // From an offset: the chunks that end after it.
  r = store_->ReadLogs(id, 0, 1, "stderr", 20);
  ASSERT_EQ(r->chunks.size(), 1u);
  EXPECT_EQ(r->chunks[0].offset(), 20);
  // A rank with no output yet: nothing, not an error.
  r = store_->ReadLogs(id, 0, 0, "stdout", 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->chunks.empty());
  EXPECT_EQ(r->end_offset, 0);
  EXPECT_EQ(store_->ReadLogs("s404-j0", 0, 0, "stderr", 0).status().code(), absl::StatusCode::kNotFound);

  // Survives a restart; a replay after the completion stores nothing new.
  Completion c{"w1", id, 1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, "rank 1 exited", {}, false};
  ASSERT_TRUE(store_->CompleteJob(c, 2400, 3, 0).ok());
  Reopen();
  a = store_->AppendLogs("w1", id, 1, batch1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inserted_bytes, 0);
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 0, 1, "stderr", 0)), "r1 line 1\nr1 line 2\nr1 line 3\n");
}

TEST_F(SqliteStoreTest, LogChunksOfAnotherLeaseOrOfNoSuchStreamAreRefused) {
  auto jobs = MakeSweep(1, /*gpus=*/2);
  Register("w1", 2);
  ASSERT_TRUE(store_->LeaseNext("w1", 2, 0, 2000, 100000).ok());
  const std::string id = jobs[0].id();
  auto stale = store_->AppendLogs("w1", id, 7, {Chunk(1, "stderr", 0, "x")});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(stale.status()), kStaleFencingToken);
  EXPECT_EQ(store_->AppendLogs("w2", id, 1, {Chunk(1, "stderr", 0, "x")}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  struct Bad {
    v1::LogChunk chunk;
    std::string names;
  };
  v1::LogChunk other_attempt = Chunk(1, "stderr", 0, "x");
  other_attempt.set_attempt(2);
  for (const Bad& b : {Bad{Chunk(2, "stderr", 0, "x"), "rank 2"}, Bad{Chunk(-1, "stderr", 0, "x"), "rank -1"},
                       Bad{Chunk(1, "stdin", 0, "x"), "stdin"}, Bad{Chunk(0, "stdout", 0, "x"), "rank 0"},
                       Bad{Chunk(1, "stderr", -5, "x"), "-5"}, Bad{other_attempt, "attempt 2"}}) {
    auto r = store_->AppendLogs("w1", id, 1, {Chunk(1, "stderr", 0, "good"), b.chunk});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << b.names;
    EXPECT_TRUE(absl::StrContains(r.status().message(), b.names)) << r.status();
  }
  // Nothing of a refused batch was stored.
  EXPECT_TRUE(store_->ReadLogs(id, 0, 1, "stderr", 0)->chunks.empty());
}

TEST_F(SqliteStoreTest, EachStreamKeepsItsNewestBytesUpToTheCap) {
  store_.reset();
  SqliteStore::Options o;
  o.log_bytes_per_stream = 25;
  auto opened = SqliteStore::Open((dir_ / "caddie.db").string(), o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  store_ = std::move(*opened);
  auto jobs = MakeSweep(1, /*gpus=*/0);
  Register("w1", 0);
  ASSERT_TRUE(store_->LeaseNext("w1", 0, 1, 2000, 100000).ok());
  const std::string id = jobs[0].id();
  std::string all;
  int64_t offset = 0, dropped = 0;
  for (int i = 1; i <= 6; ++i) {
    const std::string line = "line " + std::to_string(i) + "\n";  // 7 bytes
    auto a = store_->AppendLogs("w1", id, 1, {Chunk(0, "stderr", offset, line)});
    ASSERT_TRUE(a.ok()) << a.status();
    dropped += a->dropped_bytes;
    offset += static_cast<int64_t>(line.size());
    all += line;
  }
  EXPECT_EQ(dropped, 42 - 25);
  auto r = store_->ReadLogs(id, 0, 0, "stderr", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(HeldText(*r), all.substr(42 - 25));  // the newest 25 bytes, cut inside "line 3"
  EXPECT_EQ(r->held_from, 17);
  EXPECT_EQ(r->end_offset, 42);
}

// Runs `sql` on the database file with a connection of its own (the store closed).
void ExecRaw(const fs::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.string().c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "") << " in " << sql;
  sqlite3_free(err);
  sqlite3_close(db);
}

// A store whose streams keep at most 1000 bytes each and `total` bytes in all.
std::unique_ptr<SqliteStore> OpenBounded(const fs::path& db, int64_t total) {
  SqliteStore::Options o;
  o.log_bytes_per_stream = 1000;
  o.log_bytes_total = total;
  auto s = SqliteStore::Open(db.string(), o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Leases the next job to w1 (one CPU slot): its fencing token (0 on failure).
int64_t LeaseOne(SqliteStore& store, int64_t now_ms) {
  auto l = store.LeaseNext("w1", 0, 1, now_ms, 1000000);
  EXPECT_TRUE(l.ok() && l->has_value()) << (l.ok() ? "nothing to lease" : l.status().ToString());
  return l.ok() && l->has_value() ? (*l)->job.fencing_token() : 0;
}

// One event and `n` bytes of rank 0's stderr for the lease.
void Report(SqliteStore& store, const std::string& id, int64_t token, int n, int64_t offset = 0) {
  v1::Event e;
  e.set_seq(offset + 1);
  e.set_type("step");
  e.set_json("{\"event\":\"step\"}");
  ASSERT_TRUE(store.AppendEvents("w1", id, token, {e}, 2000).ok());
  auto a = store.AppendLogs("w1", id, token, {Chunk(0, "stderr", offset, std::string(static_cast<size_t>(n), 'x'))});
  ASSERT_TRUE(a.ok()) << a.status();
}

void Succeed(SqliteStore& store, const std::string& id, int64_t token, int64_t now_ms) {
  v1::Result result;
  result.set_steps(10);
  result.set_val_bpb_post_quant(1.5);
  result.set_artifact_bytes(1000);
  result.set_within_budget(true);
  Completion c{"w1", id, token, v1::JOB_STATE_SUCCEEDED, v1::EXIT_REASON_COMPLETED, "", result, false};
  ASSERT_TRUE(store.CompleteJob(c, now_ms, 3, 0).ok());
}

// Over --log-bytes-total, the logs of the jobs that ended longest ago go first
// (not those that started first), never a running job's, never events or
// results; a dropped stream says so and keeps its length.
TEST_F(SqliteStoreTest, TotalBoundDropsTheLogsOfTheJobsThatEndedLongestAgoFirst) {
  store_ = OpenBounded(dir_ / "caddie.db", 300);
  ASSERT_NE(store_, nullptr);
  auto jobs = MakeSweep(4, /*gpus=*/0);
  Register("w1", 0);
  const std::string a = jobs[0].id(), b = jobs[1].id(), c = jobs[2].id(), d = jobs[3].id();
  // a, b and c run together; they end b, a, c; d runs on.
  const int64_t ta = LeaseOne(*store_, 2000), tb = LeaseOne(*store_, 2000), tc = LeaseOne(*store_, 2000);
  const int64_t td = LeaseOne(*store_, 2000);
  Report(*store_, a, ta, 100);
  Report(*store_, b, tb, 100);
  Report(*store_, c, tc, 100);
  Report(*store_, d, td, 0);  // an event, no log bytes yet
  Succeed(*store_, b, tb, 3000);
  Succeed(*store_, a, ta, 4000);
  Succeed(*store_, c, tc, 5000);
  EXPECT_EQ(store_->LogBytesHeld(), 300);  // at the bound, not over it: nothing goes
  EXPECT_EQ(store_->TrimLogs()->dropped_bytes, 0);

  // d's 150 bytes put 450 over 300: b (ended first), then a, go.
  auto out = store_->AppendLogs("w1", d, td, {Chunk(0, "stderr", 0, std::string(150, 'd'))});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->inserted_bytes, 150);
  EXPECT_EQ(out->retention_dropped_bytes, 200);
  EXPECT_EQ(store_->LogBytesHeld(), 250);
  for (const std::string& gone : {b, a}) {
    auto r = store_->ReadLogs(gone, 0, 0, "stderr", 0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->dropped_by_retention) << gone;
    EXPECT_TRUE(r->chunks.empty()) << gone;
    EXPECT_EQ(r->end_offset, 100) << gone;
    EXPECT_EQ(r->held_from, 100) << gone;
  }
  auto kept = store_->ReadLogs(c, 0, 0, "stderr", 0);
  EXPECT_FALSE(kept->dropped_by_retention);
  EXPECT_EQ(HeldText(*kept), std::string(100, 'x'));
  // The running job's own bytes over the bound: c goes; d's are never dropped.
  out = store_->AppendLogs("w1", d, td, {Chunk(0, "stderr", 150, std::string(200, 'd'))});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->retention_dropped_bytes, 100);
  EXPECT_TRUE(store_->ReadLogs(c, 0, 0, "stderr", 0)->dropped_by_retention);
  EXPECT_EQ(HeldText(*store_->ReadLogs(d, 0, 0, "stderr", 0)), std::string(350, 'd'));
  EXPECT_EQ(store_->LogBytesHeld(), 350);
  EXPECT_EQ(store_->TrimLogs()->dropped_bytes, 0);  // only d holds logs, and it runs
  // Events and results of the jobs whose logs went are all there.
  for (const std::string& id : {a, b, c}) {
    EXPECT_EQ(store_->ListEvents(id, 0, 10)->size(), 1u) << id;
    auto job = store_->GetJob(id);
    EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED) << id;
    EXPECT_EQ(job->result().val_bpb_post_quant(), 1.5) << id;
  }
  EXPECT_EQ(store_->BestJobs("", 10)->size(), 3u);

  // The counter survives a restart as it was; once d has ended, a pass drops its logs.
  store_ = OpenBounded(dir_ / "caddie.db", 300);
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->LogBytesHeld(), 350);
  EXPECT_FALSE(store_->repaired_log_bytes_counter().has_value());
  Succeed(*store_, d, td, 6000);
  auto trimmed = store_->TrimLogs();
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(trimmed->dropped_bytes, 350);
  EXPECT_EQ(trimmed->streams, 1);
  EXPECT_EQ(trimmed->held_bytes, 0);
  EXPECT_EQ(store_->LogBytesHeld(), 0);
  EXPECT_EQ(store_->ListEvents(d, 0, 10)->size(), 1u);
}

// A job retried after a crash keeps the crashed attempt's logs, read by its
// number (0 = the current attempt); a queued or running job's earlier attempts
// are not dropped by the bound.
TEST_F(SqliteStoreTest, EarlierAttemptsKeepTheirLogsAndAreReadByNumber) {
  store_ = OpenBounded(dir_ / "caddie.db", 50);
  ASSERT_NE(store_, nullptr);
  auto jobs = MakeSweep(1, /*gpus=*/0, /*max_attempts=*/2);
  Register("w1", 0);
  const std::string id = jobs[0].id();
  const int64_t t1 = LeaseOne(*store_, 2000);
  ASSERT_TRUE(store_->AppendLogs("w1", id, t1, {Chunk(0, "stderr", 0, "attempt 1: Segmentation fault\n")}).ok());
  Completion crash{"w1", id, t1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, "rank 0 crashed", {}, true};
  auto done = store_->CompleteJob(crash, 2500, 3, 0);
  ASSERT_TRUE(done.ok() && done->retried) << done.status();
  EXPECT_EQ(store_->TrimLogs()->dropped_bytes, 0);  // queued for its retry: kept
  const int64_t t2 = LeaseOne(*store_, 3000);
  ASSERT_TRUE(store_->AppendLogs("w1", id, t2, {Chunk(0, "stderr", 0, "attempt 2 runs\n")}).ok());
  EXPECT_EQ(store_->LogBytesHeld(), 30 + 15);

  auto first = store_->ReadLogs(id, 1, 0, "stderr", 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->attempt, 1);
  EXPECT_EQ(HeldText(*first), "attempt 1: Segmentation fault\n");
  auto current = store_->ReadLogs(id, 0, 0, "stderr", 0);
  EXPECT_EQ(current->attempt, 2);
  EXPECT_EQ(HeldText(*current), "attempt 2 runs\n");
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 2, 0, "stderr", 0)), "attempt 2 runs\n");
  // An attempt that never ran holds nothing (the scheduler refuses it by name).
  auto none = store_->ReadLogs(id, 3, 0, "stderr", 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->chunks.empty());
  EXPECT_EQ(none->end_offset, 0);
  // Events by attempt, the same way.
  v1::Event e;
  e.set_seq(1);
  e.set_type("log");
  e.set_json("{\"event\":\"log\",\"message\":\"second\"}");
  ASSERT_TRUE(store_->AppendEvents("w1", id, t2, {e}, 3100).ok());
  EXPECT_EQ(store_->TailEvents(id, 10, 0)->size(), 1u);
  EXPECT_EQ(store_->TailEvents(id, 10, 2)->size(), 1u);
  EXPECT_TRUE(store_->TailEvents(id, 10, 1)->empty());
}

// Open checks the counter of held log bytes against the streams: edited by
// hand, it (and each job's count, which orders the drops) is set right.
TEST_F(SqliteStoreTest, LogBytesCounterIsCheckedAgainstTheStreamsAtOpen) {
  auto jobs = MakeSweep(2, /*gpus=*/0);
  Register("w1", 0);
  const int64_t t0 = LeaseOne(*store_, 2000), t1 = LeaseOne(*store_, 2000);
  Report(*store_, jobs[0].id(), t0, 70);
  Report(*store_, jobs[1].id(), t1, 30);
  Succeed(*store_, jobs[0].id(), t0, 3000);
  Succeed(*store_, jobs[1].id(), t1, 4000);
  EXPECT_EQ(store_->LogBytesHeld(), 100);
  Reopen();
  EXPECT_EQ(store_->LogBytesHeld(), 100);
  EXPECT_FALSE(store_->repaired_log_bytes_counter().has_value());
  store_.reset();
  ExecRaw(dir_ / "caddie.db", "UPDATE log_totals SET held_bytes = 12345; UPDATE jobs SET log_bytes = 0");
  store_ = OpenBounded(dir_ / "caddie.db", 50);
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->repaired_log_bytes_counter(), std::optional<int64_t>(12345));
  EXPECT_EQ(store_->LogBytesHeld(), 100);
  // The jobs' counts were set right too: the bound finds the first job's logs.
  auto trimmed = store_->TrimLogs();
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(trimmed->dropped_bytes, 70);
  EXPECT_TRUE(store_->ReadLogs(jobs[0].id(), 0, 0, "stderr", 0)->dropped_by_retention);
  EXPECT_FALSE(store_->ReadLogs(jobs[1].id(), 0, 0, "stderr", 0)->dropped_by_retention);
  EXPECT_EQ(store_->LogBytesHeld(), 30);
  store_ = OpenBounded(dir_ / "caddie.db", 50);
  EXPECT_EQ(store_->LogBytesHeld(), 30);
  EXPECT_FALSE(store_->repaired_log_bytes_counter().has_value());
}

// A database of schema 5 holding logs: migration 6 fills in the counter row
// and each job's count (no repair needed at open), so the bound finds them.
TEST_F(SqliteStoreTest, MigrationSixCountsTheLogsAnOlderDatabaseHolds) {
  auto jobs = MakeSweep(2, /*gpus=*/0);
  Register("w1", 0);
  const int64_t t0 = LeaseOne(*store_, 2000), t1 = LeaseOne(*store_, 2000);
  Report(*store_, jobs[0].id(), t0, 40);
  Report(*store_, jobs[1].id(), t1, 25);
  Succeed(*store_, jobs[1].id(), t1, 3000);  // ends first
  Succeed(*store_, jobs[0].id(), t0, 4000);
  store_.reset();
  // Back to schema 5: what migration 6 added, gone.
  ExecRaw(dir_ / "caddie.db",
          "DROP INDEX jobs_logs_ended; DROP TABLE log_totals; ALTER TABLE jobs DROP COLUMN log_bytes; "
          "ALTER TABLE log_streams DROP COLUMN retention_dropped; DELETE FROM schema_migrations WHERE version = 6");
  store_ = OpenBounded(dir_ / "caddie.db", 50);
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->schema_version(), 6);
  EXPECT_FALSE(store_->repaired_log_bytes_counter().has_value());
  EXPECT_EQ(store_->LogBytesHeld(), 65);
  auto trimmed = store_->TrimLogs();
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(trimmed->dropped_bytes, 25);  // the job that ended first
  EXPECT_TRUE(store_->ReadLogs(jobs[1].id(), 0, 0, "stderr", 0)->dropped_by_retention);
  EXPECT_EQ(HeldText(*store_->ReadLogs(jobs[0].id(), 0, 0, "stderr", 0)), std::string(40, 'x'));
}

// The pass that picks the job that ended longest ago reads the partial index
// of ended jobs holding logs, not every ended job (a 10,000-job sweep).
TEST_F(SqliteStoreTest, RetentionFindsTheOldestEndedJobThroughItsIndex) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "caddie.db").string().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE log_bytes > 0 AND finished_ms > 0 AND "
                               "+state IN (4, 5, 6, 7) ORDER BY finished_ms, seq LIMIT 1",
                               -1, &q, nullptr),
            SQLITE_OK);
  std::string plan;
  while (sqlite3_step(q) == SQLITE_ROW) {
    plan += std::string(reinterpret_cast<const char*>(sqlite3_column_text(q, 3))) + "\n";
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  EXPECT_TRUE(absl::StrContains(plan, "USING INDEX jobs_logs_ended")) << plan;
  EXPECT_FALSE(absl::StrContains(plan, "TEMP B-TREE")) << plan;
}

TEST_F(SqliteStoreTest, BadPathIsInvalidArgument) {
  auto s = SqliteStore::Open("/nonexistent-dir/x/caddie.db", {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("/nonexistent-dir/x/caddie.db"), std::string::npos);
}

}  // namespace
}  // namespace caddie::controller
