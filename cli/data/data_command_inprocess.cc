#include "cli/data/data_command.h"

#include <cstdio>
#include <memory>

#include "absl/status/status.h"
#include "cli/data/builder.h"
#include "cli/data/corpus.h"

namespace caddie::cli {
namespace {

struct DataArgs {
  data::DataOptions build;
  std::string from_shards;
  std::string tokenizer;
  std::string val_split = "seeded";
  bool out_given = false;
  bool quiet = false;
};

// Exit codes as elsewhere in caddie: 2 for bad input (bad vocab, empty corpus,
// malformed shards or files, missing tokenizer or package), 1 for anything else
// (I/O, the registry unreachable, SentencePiece failing).
int ExitCode(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

void Run(const DataArgs& a) {
  if (!a.from_shards.empty()) {
    data::ImportOptions io;
    io.shards_dir = a.from_shards;
    io.tokenizer = a.tokenizer;
    io.out_dir = a.out_given ? a.build.out_dir : "";
    auto vs = data::ImportShards(io);
    if (!vs.ok()) {
      std::fprintf(stderr, "caddie data: %s\n", std::string(vs.status().message()).c_str());
      throw CLI::RuntimeError(ExitCode(vs.status()));
    }
    const double bpt = vs->val.table_bytes > 0 && vs->val.tokens > 0
                           ? static_cast<double>(vs->val.table_bytes) / static_cast<double>(vs->val.tokens)
                           : 0;
    std::printf("imported %s: vocab %d, train %lld tokens in %lld shards, val %lld tokens in %lld "
                "shards (%lld documents, %lld bytes by the byte table, %.3f bytes/token)\n",
                vs->dir.c_str(), vs->vocab, static_cast<long long>(vs->train.tokens),
                static_cast<long long>(vs->train.shards), static_cast<long long>(vs->val.tokens),
                static_cast<long long>(vs->val.shards), static_cast<long long>(vs->val.docs),
                static_cast<long long>(vs->val.table_bytes), bpt);
    return;
  }
  data::DataOptions o = a.build;
  o.progress = !a.quiet;
  auto s = data::BuildData(o);
  if (!s.ok()) {
    std::fprintf(stderr, "caddie data: %s\n", std::string(s.status().message()).c_str());
    throw CLI::RuntimeError(ExitCode(s.status()));
  }
  std::fputs(data::FormatSummary(*s).c_str(), stdout);
}

}  // namespace

void RegisterDataCommandInProcess(CLI::App& app) {
  auto args = std::make_shared<DataArgs>();
  CLI::App* cmd = app.add_subcommand(
      "data", "Build the corpus, SentencePiece tokenizers, shards and byte tables (<out>/sp<V>/)");
  args->build.vocabs.clear();
  CLI::Option* vocab = cmd->add_option("--vocab", args->build.vocabs,
                  "Vocab size(s), 256..65535; repeat or comma-separate (default 1024)")
      ->delimiter(',');
  auto* out = cmd->add_option("--out", args->build.out_dir, "Output data directory")
                  ->capture_default_str();
  args->build.corpus.clear();
  CLI::Option* corpus = cmd->add_option("--corpus", args->build.corpus,
                  "Corpus: 'builtin' (real English, pinned npm + Debian packages) and/or "
                  ".jsonl / text files (default builtin)")
      ->delimiter(',');
  CLI::Option* max_bytes = cmd->add_option("--max-bytes", args->build.max_bytes,
                  "Use a seeded random subset of about this many text bytes (0 = all)")
      ->capture_default_str();
  cmd->add_option("--seed", args->build.seed, "Seed of the train/val split")->capture_default_str();
  cmd->add_option("--val-fraction", args->build.val_fraction,
                  "Share of validation: of the bytes (seeded split) or of the documents (head split)")
      ->capture_default_str();
  cmd->add_option("--val-split", args->val_split,
                  "seeded: shuffle with --seed, validation by bytes; head: the first documents in "
                  "input order, as the Parameter Golf reference splits its (pre-shuffled) docs file")
      ->check(CLI::IsMember({"seeded", "head"}))
      ->capture_default_str();
  cmd->add_option("--cache-dir", args->build.cache_dir,
                  "Download and tokenizer cache (default $CADDIE_CACHE_DIR or ~/.cache/caddie)");
  cmd->add_option("--shard-tokens", args->build.shard_tokens, "Tokens per shard")->capture_default_str();
  cmd->add_option("--threads", args->build.threads, "Encoding / training threads (0 = all cores)");
  cmd->add_flag("--force", args->build.force, "Rebuild even what is up to date");
  cmd->add_flag("--quiet", args->quiet, "No progress bars");
  CLI::Option* from = cmd->add_option("--from-shards", args->from_shards,
                  "Use existing Parameter Golf shards (e.g. fineweb10B_sp1024) unchanged: check "
                  "them and write byte_table.json / meta.json")
                         ->excludes(vocab)
                         ->excludes(corpus)
                         ->excludes(max_bytes);
  cmd->add_option("--tokenizer", args->tokenizer, "The .model of --from-shards")->needs(from);
  cmd->callback([args, out] {
    args->out_given = out->count() > 0;
    if (args->build.vocabs.empty()) args->build.vocabs = {1024};
    if (args->build.corpus.empty()) args->build.corpus = {"builtin"};
    // IsMember above already refused anything else.
    args->build.split_order = *data::ParseSplitOrder(args->val_split);
    Run(*args);
  });
}

}  // namespace caddie::cli
