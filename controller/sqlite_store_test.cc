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
  EXPECT_EQ(store_->schema_version(), 5);
  MakeSweep(2);
  Reopen();
  EXPECT_EQ(store_->schema_version(), 5);
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
  EXPECT_EQ(store_->schema_version(), 5);
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

  auto r = store_->ReadLogs(id, 1, "stderr", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(HeldText(*r), "r1 line 1\nr1 line 2\nr1 line 3\n");
  EXPECT_EQ(r->end_offset, 30);
  EXPECT_EQ(r->held_from, 0);
  EXPECT_EQ(r->attempt, 1);
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 0, "stderr", 0)), "r0\n");
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 1, "stdout", 0)), "out\n");
  // From an offset: the chunks that end after it.
  r = store_->ReadLogs(id, 1, "stderr", 20);
  ASSERT_EQ(r->chunks.size(), 1u);
  EXPECT_EQ(r->chunks[0].offset(), 20);
  // A rank with no output yet: nothing, not an error.
  r = store_->ReadLogs(id, 0, "stdout", 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->chunks.empty());
  EXPECT_EQ(r->end_offset, 0);
  EXPECT_EQ(store_->ReadLogs("s404-j0", 0, "stderr", 0).status().code(), absl::StatusCode::kNotFound);

  // Survives a restart; a replay after the completion stores nothing new.
  Completion c{"w1", id, 1, v1::JOB_STATE_FAILED, v1::EXIT_REASON_CRASHED, "rank 1 exited", {}, false};
  ASSERT_TRUE(store_->CompleteJob(c, 2400, 3, 0).ok());
  Reopen();
  a = store_->AppendLogs("w1", id, 1, batch1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inserted_bytes, 0);
  EXPECT_EQ(HeldText(*store_->ReadLogs(id, 1, "stderr", 0)), "r1 line 1\nr1 line 2\nr1 line 3\n");
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
  EXPECT_TRUE(store_->ReadLogs(id, 1, "stderr", 0)->chunks.empty());
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
  auto r = store_->ReadLogs(id, 0, "stderr", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(HeldText(*r), all.substr(42 - 25));  // the newest 25 bytes, cut inside "line 3"
  EXPECT_EQ(r->held_from, 17);
  EXPECT_EQ(r->end_offset, 42);
}

TEST_F(SqliteStoreTest, BadPathIsInvalidArgument) {
  auto s = SqliteStore::Open("/nonexistent-dir/x/caddie.db", {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("/nonexistent-dir/x/caddie.db"), std::string::npos);
}

}  // namespace
}  // namespace caddie::controller
