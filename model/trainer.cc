// caddie-train's run, in the order of train_gpt.py: distributed setup, data
// loading, model + optimizers, warm-up, the training loop under the wall-clock
// budget, evaluation, export and the round trip. Events go to stdout as JSON lines.
#include "model/trainer.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// The GPU machine's LibTorch ships no gloo headers: there, NCCL is the only backend.
#if __has_include(<gloo/algorithm.h>) && __has_include(<gloo/rendezvous/store.h>)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define CADDIE_HAVE_GLOO 1
#endif
#include <torch/cuda.h>
#include <torch/torch.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "common/core/events.h"
#include "common/core/shard_format.h"
#include "model/artifact.h"
#include "model/code_files.h"
#include "model/gpt.h"
#include "model/perf_knobs.h"
#include "model/perf_profile.h"
#include "model/torch_compat.h"

namespace caddie::model {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::atomic<bool> g_stop_requested{false};

void OnStopSignal(int) { g_stop_requested.store(true); }

// Bad spec or bad data: exit code 2.
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------
// Events and logs (rank 0 only)
// ---------------------------------------------------------------------------

// Writes events to stdout and <run_dir>/events.jsonl, human lines to <run_dir>/train.log.
class EventLog {
 public:
  EventLog(bool enabled, const std::string& run_dir) : enabled_(enabled) {
    if (!enabled_ || run_dir.empty()) return;
    events_.open(fs::path(run_dir) / "events.jsonl", std::ios::app);
    log_.open(fs::path(run_dir) / "train.log", std::ios::app);
  }
  void Emit(const char* type, json fields) {
    if (!enabled_) return;
    json j = {{events::kEvent, type}, {events::kTime, UnixSeconds()}};
    j.update(fields);
    const std::string line = j.dump();
    std::fprintf(stdout, "%s\n", line.c_str());
    std::fflush(stdout);
    if (events_.is_open()) events_ << line << '\n' << std::flush;
  }
  void Log(const std::string& msg) {
    if (enabled_ && log_.is_open()) log_ << msg << '\n' << std::flush;
  }

 private:
  bool enabled_;
  std::ofstream events_, log_;
};

// ---------------------------------------------------------------------------
// Distributed: c10d gloo (CPU) / NCCL (CUDA) behind sum and max all-reduce.
// ---------------------------------------------------------------------------

#if CADDIE_TORCH_AT_LEAST_2
using ProcessGroupBase = c10d::Backend;
#else
using ProcessGroupBase = c10d::ProcessGroup;
#endif

class Dist {
 public:
  Dist(const RankEnv& env, bool cuda) : rank(env.rank), world(env.world_size) {
    if (world == 1) return;
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(env.master_port);
    opts.isServer = env.rank == 0;
    opts.numWorkers = env.world_size;
    opts.waitWorkers = true;
    opts.timeout = std::chrono::seconds(120);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
    store_ = c10::make_intrusive<c10d::PrefixStore>("caddie", tcp);
#ifdef USE_C10D_NCCL
    if (cuda) {
      pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, rank, world);
      return;
    }
#endif
    (void)cuda;
#ifdef CADDIE_HAVE_GLOO
    auto gopts = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(300));
    gopts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    gopts->threads = 2;
    pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, rank, world, gopts);
#else
    throw BadInput("WORLD_SIZE = " + std::to_string(world) + " on " + (cuda ? "CUDA" : "CPU") +
                   " needs a process group this caddie-train was built without (gloo / NCCL)");
#endif
  }

  void AllReduce(torch::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    if (world == 1) return;
    std::vector<torch::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    pg_->allreduce(v, o)->wait();
  }

  // Starts a sum all-reduce of t in place; the caller waits on the work.
  c10::intrusive_ptr<c10d::Work> AllReduceAsync(torch::Tensor& t) {
    std::vector<torch::Tensor> v{t};
    return pg_->allreduce(v);
  }

  void Broadcast(torch::Tensor& t) {
    if (world == 1) return;
    std::vector<torch::Tensor> v{t};
    pg_->broadcast(v)->wait();
  }

  const int rank, world;

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<ProcessGroupBase> pg_;
};

// Averages gradients over ranks in flat buckets of about bucket_bytes, as DDP's reducer:
// buckets are filled in reverse registration order (the order backward yields gradients).
// Overlapped, each parameter's gradient hook, armed for the last micro-batch only, copies
// its full gradient (accumulated + incoming) into its bucket, and a filled bucket is
// all-reduced while backward goes on. Buckets launch strictly in index order, so every
// rank issues the same collectives in the same order whatever order its hooks fire in.
// Not overlapped (CADDIE_PERF_OFF=overlap), Finish() fills and launches all buckets.
// Hooks run on autograd's thread while the caller waits in backward(): no locking.
class GradAverager {
 public:
  GradAverager(Dist& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes, bool overlap)
      : dist_(dist), params_(std::move(params)), overlap_(overlap) {
    bucket_of_.resize(params_.size());
    offset_.resize(params_.size());
    got_.assign(params_.size(), false);
    int64_t bytes = 0;
    for (size_t k = params_.size(); k-- > 0;) {
      const auto& p = params_[k];
      const int64_t nb = p.numel() * static_cast<int64_t>(p.element_size());
      const bool fits = !buckets_.empty() && bytes + nb <= bucket_bytes &&
                        buckets_.back().flat_options.dtype() == p.dtype() &&
                        buckets_.back().flat_options.device() == p.device();
      if (!fits) buckets_.push_back({{}, 0, p.options(), {}, 0}), bytes = 0;
      auto& b = buckets_.back();
      bucket_of_[k] = buckets_.size() - 1;
      offset_[k] = b.numel;
      b.members.push_back(k);
      b.numel += p.numel();
      bytes += nb;
    }
    for (auto& b : buckets_) b.flat = torch::zeros({b.numel}, b.flat_options), b.pending = b.members.size();
    if (!overlap_) return;
    for (size_t k = 0; k < params_.size(); ++k) {
      hooks_.push_back(params_[k].register_hook([this, k](const torch::Tensor& g) { OnGrad(k, g); }));
    }
  }
  ~GradAverager() {
    for (size_t k = 0; k < hooks_.size(); ++k) params_[k].remove_hook(hooks_[k]);
  }
  GradAverager(const GradAverager&) = delete;
  GradAverager& operator=(const GradAverager&) = delete;

  // For train.log: how much of the all-reduce the hooks started during backward.
  std::string Summary() const {
    return "grad_allreduce buckets:" + std::to_string(buckets_.size()) + " overlap:" + std::to_string(overlap_) +
           " launched_in_backward:" + std::to_string(launched_in_backward_) + " launched:" + std::to_string(launched_);
  }

  // Call before the backward of the step's last micro-batch.
  void ArmForLastMicroBatch() { armed_ = overlap_; }

  // After the last backward: launches what is left, waits, and leaves every defined
  // .grad() equal to the mean over ranks (undefined grads stay undefined).
  void Finish() {
    torch::NoGradGuard ng;
    for (; next_ < buckets_.size(); ++next_) {
      for (size_t k : buckets_[next_].members) {
        if (!got_[k]) Fill(k, params_[k].grad());
      }
      Launch(next_);
    }
    for (auto& w : works_) w->wait();
    for (auto& b : buckets_) {
      b.flat.div_(dist_.world);
      for (size_t k : b.members) {
        auto& p = params_[k];
        if (p.grad().defined()) p.mutable_grad().copy_(Slice(k).view_as(p));
        got_[k] = false;
      }
      b.pending = b.members.size();
    }
    works_.clear();
    next_ = 0;
    armed_ = false;
  }

 private:
  struct Bucket {
    std::vector<size_t> members;
    int64_t numel;
    torch::TensorOptions flat_options;
    torch::Tensor flat;
    size_t pending;  // members whose gradient has not come in this step
  };

  torch::Tensor Slice(size_t k) { return buckets_[bucket_of_[k]].flat.narrow(0, offset_[k], params_[k].numel()); }
  void Fill(size_t k, const torch::Tensor& g) {
    if (g.defined()) {
      Slice(k).copy_(g.reshape(-1));
    } else {
      Slice(k).zero_();
    }
  }
  void Launch(size_t b) {
    works_.push_back(dist_.AllReduceAsync(buckets_[b].flat));
    ++launched_;
  }

  // The hook runs before AccumulateGrad adds g to .grad(), so the full gradient is the sum.
  void OnGrad(size_t k, const torch::Tensor& g) {
    if (!armed_ || got_[k]) return;
    torch::NoGradGuard ng;
    const auto& acc = params_[k].grad();
    Fill(k, acc.defined() ? acc + g : g);
    got_[k] = true;
    --buckets_[bucket_of_[k]].pending;
    while (next_ < buckets_.size() && buckets_[next_].pending == 0) Launch(next_++), ++launched_in_backward_;
  }

  Dist& dist_;
  std::vector<torch::Tensor> params_;
  bool overlap_, armed_ = false;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_;
  std::vector<bool> got_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;
  size_t next_ = 0;  // buckets [0, next_) are launched
  int64_t launched_ = 0, launched_in_backward_ = 0;
};

// ---------------------------------------------------------------------------
// Data: the reference's TokenStream + DistributedTokenLoader
// ---------------------------------------------------------------------------

torch::Tensor LoadShardTensor(const std::string& path, int64_t vocab) {
  auto r = ReadShard(path);
  if (!r.ok()) throw BadInput(r.status().message());
  const auto& v = *r;
  auto t = torch::empty({static_cast<int64_t>(v.size())}, torch::kInt32);
  auto* p = t.data_ptr<int32_t>();
  int32_t mx = 0;
  for (size_t i = 0; i < v.size(); ++i) mx = std::max<int32_t>(mx, p[i] = v[i]);
  if (mx >= vocab) {
    throw BadInput(path + ": token id " + std::to_string(mx) + " is not below vocab_size = " +
                   std::to_string(vocab));
  }
  return t;
}

// Reads train shards in order and wraps around forever; no sampling.
class TokenStream {
 public:
  TokenStream(std::vector<std::string> files, int64_t vocab) : files_(std::move(files)), vocab_(vocab) {
    tokens_ = LoadShardTensor(files_[0], vocab_);
  }
  torch::Tensor Take(int64_t n) {  // (n) int32
    std::vector<torch::Tensor> chunks;
    while (n > 0) {
      const int64_t avail = tokens_.numel() - pos_;
      if (avail <= 0) {
        idx_ = (idx_ + 1) % files_.size();
        tokens_ = LoadShardTensor(files_[idx_], vocab_);
        pos_ = 0;
        continue;
      }
      const int64_t k = std::min(n, avail);
      chunks.push_back(tokens_.slice(0, pos_, pos_ + k));
      pos_ += k;
      n -= k;
    }
    return chunks.size() == 1 ? chunks[0] : torch::cat(chunks);
  }

 private:
  std::vector<std::string> files_;
  int64_t vocab_;
  size_t idx_ = 0;
  int64_t pos_ = 0;
  torch::Tensor tokens_;
};

// Each call takes one contiguous chunk of the stream for all ranks and gives this
// rank its disjoint span (+1 token so that y is x shifted by one).
class DistributedTokenLoader {
 public:
  DistributedTokenLoader(std::vector<std::string> files, int64_t vocab, int rank, int world)
      : stream_(std::move(files), vocab), rank_(rank), world_(world) {}
  // x, y: (local_tokens / seq_len, seq_len) int64 on `device`.
  std::pair<torch::Tensor, torch::Tensor> Next(int64_t global_tokens, int64_t seq_len, int64_t accum,
                                               torch::Device device) {
    const int64_t local = global_tokens / (world_ * accum);
    const int64_t span = local + 1;
    auto chunk = stream_.Take(span * world_);
    auto mine = chunk.slice(0, rank_ * span, (rank_ + 1) * span).to(torch::kInt64);
    if (device.is_cuda() && !PerfOff("pin")) {
      // One pinned, asynchronous copy: a pageable copy would block the host until the
      // GPU drained its queue, so the CPU could not queue the next micro-batch ahead.
      auto dev = mine.pin_memory().to(device, /*non_blocking=*/true);
      return {dev.slice(0, 0, local).view({-1, seq_len}), dev.slice(0, 1, local + 1).view({-1, seq_len})};
    }
    auto x = mine.slice(0, 0, local).view({-1, seq_len});
    auto y = mine.slice(0, 1, local + 1).view({-1, seq_len});
    return {x.to(device), y.to(device)};
  }

 private:
  TokenStream stream_;
  int rank_, world_;
};

torch::Tensor LoadValTokens(const std::string& dir, const TrainSpec& spec) {
  auto files = ListShards(dir, "val");
  if (!files.ok()) throw BadInput(files.status().message());
  std::vector<torch::Tensor> parts;
  for (const auto& f : *files) parts.push_back(LoadShardTensor(f, spec.vocab_size));
  auto tokens = torch::cat(parts);
  if (spec.val_max_tokens > 0 && tokens.numel() > spec.val_max_tokens + 1) {
    tokens = tokens.slice(0, 0, spec.val_max_tokens + 1);
  }
  const int64_t usable = ((tokens.numel() - 1) / spec.seq_len) * spec.seq_len;
  if (usable <= 0) {
    throw BadInput(dir + ": validation split has " + std::to_string(tokens.numel()) +
                   " tokens, too short for seq_len = " + std::to_string(spec.seq_len));
  }
  return tokens.slice(0, 0, usable + 1);
}

// ---------------------------------------------------------------------------
// What this trainer implements of the spec
// ---------------------------------------------------------------------------

int64_t GradAccumSteps(const TrainSpec& spec, int world) {
  if (spec.grad_accum_steps > 0) return spec.grad_accum_steps;
  return 8 % world == 0 ? 8 / world : 1;  // the reference: 8 micro-batches over all ranks
}

// ---------------------------------------------------------------------------
// Optimizers: Muon for block matrices, Adam for embeddings / head / scalars.
// ---------------------------------------------------------------------------

// Step-event fields added after common/core/events.h (docs/contracts.md lists them; they
// belong there with the others, which this change does not touch).
constexpr char kLrMatrix[] = "lr_matrix";
constexpr char kLrEmbed[] = "lr_embed";
constexpr char kLrHead[] = "lr_head";
constexpr char kLrScalar[] = "lr_scalar";
constexpr char kQatBitsNow[] = "qat_bits";

struct Optimizers {
  struct AdamGroup {
    std::unique_ptr<torch::optim::Adam> opt;
    double base_lr;
    const char* event_key;  // its absolute lr in step events
  };
  std::vector<AdamGroup> adams;
  std::unique_ptr<Muon> muon;
  double muon_base_lr = 0;

  Optimizers(Gpt& model, const TrainSpec& s, torch::ScalarType ns_dtype) {
    auto adam = [&](std::vector<torch::Tensor> params, double lr, const char* key) {
      auto o = torch::optim::AdamOptions(lr).betas({s.beta1, s.beta2}).eps(s.adam_eps);
      adams.push_back({std::make_unique<torch::optim::Adam>(std::move(params), o), lr, key});
    };
    adam({model->tok_emb->weight}, s.tie_embeddings ? s.tied_embed_lr : s.embed_lr, kLrEmbed);
    if (!s.tie_embeddings) adam({model->lm_head->weight}, s.head_lr, kLrHead);
    adam(model->ScalarParams(), s.scalar_lr, kLrScalar);
    muon = std::make_unique<Muon>(model->MatrixParams(), s.matrix_lr, s.muon_momentum,
                                  s.muon_backend_steps, ns_dtype);
    muon_base_lr = s.matrix_lr;
  }
  void SetLrScale(double scale) {
    for (auto& a : adams) {
      for (auto& g : a.opt->param_groups()) {
        static_cast<torch::optim::AdamOptions&>(g.options()).lr(a.base_lr * scale);
      }
    }
    muon->lr = muon_base_lr * scale;
  }
  // The learning rates in force, read back from the optimizers: lr_matrix (Muon),
  // lr_embed, lr_head (untied only), lr_scalar.
  json Lrs() const {
    json j = {{kLrMatrix, muon->lr}};
    for (const auto& a : adams) {
      j[a.event_key] = static_cast<const torch::optim::AdamOptions&>(a.opt->param_groups()[0].options()).lr();
    }
    return j;
  }
  void Step(Dist& dist) {
    for (auto& a : adams) a.opt->step();
    muon->Step(dist.rank, dist.world, [&](torch::Tensor& t) { dist.AllReduce(t); });
  }
};

void ZeroGrads(Gpt& model) {
  for (auto& p : model->parameters()) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

int64_t SeqLenAt(const TrainSpec& spec, const std::vector<SeqLenStage>& stages, double frac) {
  for (const auto& st : stages) {
    if (frac < st.until_frac) return st.seq_len;
  }
  return stages.empty() ? spec.seq_len : stages.back().seq_len;
}

torch::Device PickDevice(const TrainSpec& spec, const RankEnv& env) {
  const bool want_cuda = spec.device == "cuda" || (spec.device == "auto" && torch::cuda::is_available());
  if (want_cuda && !torch::cuda::is_available()) throw BadInput("spec device = \"cuda\" but no CUDA device is available");
  return want_cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank))
                   : torch::Device(torch::kCPU);
}

// CPU threads per rank: OMP_NUM_THREADS when set, else 1. Measured on the shared 2-core
// machine: a tiny config runs 75 ms/step with 1 intra-op thread and 590-2250 ms/step with
// 2, because idle OpenMP workers spin while OpenBLAS and other processes need the cores.
void SetThreads(bool cuda) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr || cuda) return;
  torch::set_num_threads(1);
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

int Train(const TrainSpec& spec, const RankEnv& env) {
  const torch::Device device = PickDevice(spec, env);
  const bool cuda = device.is_cuda();
  SetThreads(cuda);
  const bool master = env.rank == 0;
  Dist dist(env, cuda);

  if (!spec.run_dir.empty() && master) {
    std::error_code ec;
    fs::create_directories(spec.run_dir, ec);
    if (ec) throw BadInput("run_dir " + spec.run_dir + ": " + ec.message());
    std::ofstream(fs::path(spec.run_dir) / "spec.json") << ToJson(spec).dump(2) << '\n';
  }
  EventLog log(master, spec.run_dir);

  // --- Data and the val_bpb tables ---
  if (spec.data.empty()) throw BadInput("no data directory: set spec key \"data\" or --data");
  auto train_files = ListShards(spec.data, "train");
  if (!train_files.ok()) throw BadInput(train_files.status().message());
  auto table = ReadByteTable((fs::path(spec.data) / "byte_table.json").string());
  if (!table.ok()) throw BadInput(table.status().message());
  if (table->vocab_size() != spec.vocab_size) {
    throw BadInput("byte_table.json has vocab_size " + std::to_string(table->vocab_size()) +
                   " but spec vocab_size = " + std::to_string(spec.vocab_size));
  }
  const torch::Tensor val_tokens = LoadValTokens(spec.data, spec);
  const int64_t accum = GradAccumSteps(spec, dist.world);
  auto stages = ParseSeqLenSchedule(spec.seq_len_schedule);
  if (!stages.ok()) throw BadInput(stages.status().message());
  // Curriculum lengths divide seq_len (ValidateTrainSpec), so this covers them too.
  if (spec.train_batch_tokens % (dist.world * accum * spec.seq_len) != 0) {
    throw BadInput("train_batch_tokens = " + std::to_string(spec.train_batch_tokens) +
                   " must be a multiple of world_size x grad_accum_steps x seq_len = " +
                   std::to_string(dist.world) + " x " + std::to_string(accum) + " x " +
                   std::to_string(spec.seq_len));
  }
  const int64_t val_local = spec.val_batch_tokens / (dist.world * accum);
  if (val_local < spec.seq_len) {
    throw BadInput("val_batch_tokens = " + std::to_string(spec.val_batch_tokens) +
                   " gives less than one sequence per rank and micro-batch");
  }
  const int64_t val_batch_seqs = val_local / spec.seq_len;

  // --- Model and optimizers ---
  torch::manual_seed(spec.seed);
  Gpt model(spec);
  model->to(device);
  for (auto& p : model->parameters()) dist.Broadcast(p);
  const int64_t n_params = model->NumParams();
  // bf16 autocast and bf16 Newton–Schulz on CUDA, as the reference; CADDIE_CUDA_FP32
  // runs CUDA in fp32 to check it against the CPU loss curve.
  const bool amp = cuda && !CudaFp32Forced();
  const auto ns_dtype = amp ? torch::kBFloat16 : torch::kFloat32;
  auto opts = std::make_unique<Optimizers>(model, spec, ns_dtype);
  const auto params = model->parameters();
  // DDP's default bucket size, 25 MiB; CADDIE_GRAD_BUCKET_KB changes it (tests: many buckets).
  std::unique_ptr<GradAverager> averager;
  if (dist.world > 1) {
    averager = std::make_unique<GradAverager>(dist, params, int64_t{1024} * EnvLong("CADDIE_GRAD_BUCKET_KB", 25 * 1024),
                                              !PerfOff("overlap"));
  }

  log.Emit(events::kStart, {{events::kParams, n_params},
                            {events::kWorldSize, dist.world},
                            {events::kDevice, cuda ? "cuda" : "cpu"},
                            {events::kSpec, ToJson(spec)},
                            {events::kCodeBytes, CodeBytes()}});
  log.Log("model_params:" + std::to_string(n_params) + " world_size:" + std::to_string(dist.world) +
          " grad_accum_steps:" + std::to_string(accum) + " torch:" + TorchVersionString());

  auto make_loader = [&] {
    return std::make_unique<DistributedTokenLoader>(*train_files, spec.vocab_size, dist.rank, dist.world);
  };
  auto loader = make_loader();

  // One optimizer step over `accum` micro-batches; returns the mean train loss.
  auto train_step = [&](int64_t seq_len) {
    ZeroGrads(model);
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
    for (int64_t m = 0; m < accum; ++m) {
      auto [x, y] = loader->Next(spec.train_batch_tokens, seq_len, accum, device);
      torch::Tensor loss;
      {
        AutocastGuard ac(amp);
        loss = model->Loss(x, y);
      }
      loss_sum += loss.detach().to(torch::kFloat32);
      if (averager && m == accum - 1) averager->ArmForLastMicroBatch();
      (loss / static_cast<double>(accum)).backward();
    }
    if (averager) averager->Finish();
    return loss_sum / static_cast<double>(accum);
  };

  const double max_ms = spec.max_wallclock_seconds > 0 ? 1000.0 * spec.max_wallclock_seconds : -1;
  // lr multiplier: linear warmdown over the last warmdown_iters steps, measured in wall
  // clock (estimated from the mean step time) when there is a budget, as the reference.
  auto lr_mul = [&](int64_t step, double elapsed_ms) {
    if (spec.warmdown_iters <= 0) return 1.0;
    if (max_ms < 0) {
      const int64_t start = std::max<int64_t>(spec.iterations - spec.warmdown_iters, 0);
      return (start <= step && step < spec.iterations)
                 ? std::max(static_cast<double>(spec.iterations - step) / spec.warmdown_iters, 0.0)
                 : 1.0;
    }
    const double step_ms = elapsed_ms / std::max<int64_t>(step, 1);
    const double warmdown_ms = spec.warmdown_iters * step_ms;
    const double remaining = std::max(max_ms - elapsed_ms, 0.0);
    return remaining <= warmdown_ms ? remaining / std::max(warmdown_ms, 1e-9) : 1.0;
  };
  // Fraction of the run done, for QAT start and the seq-len curriculum.
  auto progress = [&](int64_t step, double elapsed_ms) {
    if (max_ms > 0) return std::min(1.0, elapsed_ms / max_ms);
    return spec.iterations > 0 ? static_cast<double>(step) / spec.iterations : 1.0;
  };
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };

  // --- Warm-up: run real steps, then restore the initial weights and optimizer state,
  // so measured training starts from the true init (the reference primes compilation).
  if (spec.warmup_steps > 0) {
    std::vector<torch::Tensor> init;
    {
      torch::NoGradGuard ng;
      for (auto& p : params) init.push_back(p.detach().clone());
    }
    model->train();
    for (int64_t i = 0; i < spec.warmup_steps; ++i) {
      train_step(SeqLenAt(spec, *stages, 0.0));
      opts->Step(dist);
    }
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(init[i]);
    ZeroGrads(model);
    opts = std::make_unique<Optimizers>(model, spec, ns_dtype);
    loader = make_loader();
  }

  // --- Training loop ---
  auto eval = [&] {
    ValSums s = EvalValShare(model, val_tokens, spec.seq_len, val_batch_seqs, *table, dist.rank,
                             dist.world, device, amp);
    auto t = torch::tensor({s.loss_sum, s.tokens, s.bytes}, torch::kFloat64).to(device);
    dist.AllReduce(t);
    t = t.cpu();
    return ValSums{t[0].item<double>(), t[1].item<double>(), t[2].item<double>()};
  };

  model->train();
  StepProfiler profiler(master);  // CADDIE_PROFILE: a trace of a few steps
  double training_ms = 0;
  std::optional<int64_t> stop_after;
  std::string exit_reason = events::kCompleted;
  double last_val_loss = NAN, last_val_bpb = NAN;
  int64_t step = 0, tokens_since_log = 0, steps_since_log = 0;
  double log_t0_ms = 0;
  sync();
  auto t0 = Clock::now();
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  while (true) {
    const bool last = step == spec.iterations || (stop_after && step >= *stop_after);
    if (last || (spec.val_every > 0 && step % spec.val_every == 0)) {
      sync();
      training_ms += ms_since(t0);
      ValSums v = eval();
      last_val_loss = v.val_loss();
      last_val_bpb = v.val_bpb();
      log.Emit(events::kVal, {{events::kStepNum, step}, {events::kValLoss, last_val_loss},
                              {events::kValBpb, last_val_bpb}, {events::kTrainTimeS, training_ms / 1000.0}});
      log.Log("step:" + std::to_string(step) + " val_loss:" + std::to_string(last_val_loss) +
              " val_bpb:" + std::to_string(last_val_bpb));
      sync();
      t0 = Clock::now();
    }
    if (last) break;

    const double elapsed = training_ms + ms_since(t0);
    const double frac = progress(step, elapsed);
    const double scale = lr_mul(step, elapsed);
    if (spec.qat_bits > 0 && model->qat_bits() == 0 && frac >= spec.qat_start_frac) {
      model->SetQat(static_cast<int>(spec.qat_bits), QuantOptions().clip_percentile, spec.quant_scale_floor);
      log.Log("qat:on bits:" + std::to_string(spec.qat_bits) + " step:" + std::to_string(step));
    }
    const int64_t seq_len = SeqLenAt(spec, *stages, frac);
    profiler.BeforeStep(step);
    auto train_loss = train_step(seq_len);
    const double mfrac = spec.muon_momentum_warmup_steps > 0
                             ? std::min(static_cast<double>(step) / spec.muon_momentum_warmup_steps, 1.0)
                             : 1.0;
    opts->muon->momentum = (1 - mfrac) * spec.muon_momentum_warmup_start + mfrac * spec.muon_momentum;
    opts->SetLrScale(scale);
    if (spec.grad_clip_norm > 0) torch::nn::utils::clip_grad_norm_(params, spec.grad_clip_norm);
    opts->Step(dist);
    ZeroGrads(model);
    profiler.AfterStep(step);
    ++step;
    ++steps_since_log;
    tokens_since_log += spec.train_batch_tokens;

    // One rank agrees with no one: it reads the loss back (a host sync) only on log steps
    // and at the stop, so the CPU queues the next step while the GPU runs this one.
    const bool log_due = spec.log_every > 0 && (step <= 10 || step % spec.log_every == 0);
    const bool lone = dist.world == 1 && !PerfOff("sync");
    if (lone && log_due) sync();
    const double approx_ms = training_ms + ms_since(t0);
    bool budget_hit = max_ms > 0 && approx_ms >= max_ms, term_hit = g_stop_requested.load();
    double loss = NAN;
    if (!lone) {
      // Every rank must stop after the same step: agree on the budget and on SIGTERM
      // (sums > 0 = some rank saw it). The train loss is averaged over ranks with them.
      auto shared = torch::stack({budget_hit ? torch::ones({}) : torch::zeros({}),
                                  term_hit ? torch::ones({}) : torch::zeros({}),
                                  train_loss.detach().to(torch::kCPU, torch::kFloat32)})
                        .to(device);
      dist.AllReduce(shared);
      shared = shared.cpu();
      budget_hit = shared[0].item<float>() > 0, term_hit = shared[1].item<float>() > 0;
      loss = shared[2].item<double>() / dist.world;
    } else if (log_due || budget_hit || term_hit) {
      loss = train_loss.item<double>();
    }
    if (!stop_after && (budget_hit || term_hit)) {
      stop_after = step;
      // The budget first: the worker's SIGTERM at the training limit can land on the step
      // the trainer's own clock runs out on, and that run is not cut short.
      exit_reason = budget_hit ? events::kTimeBudget : events::kTerminated;
    }
    if (spec.log_every > 0 && (step <= 10 || step % spec.log_every == 0 || stop_after)) {
      // tokens_per_s and step_ms: over the steps since the previous step event (training
      // clock: evaluation excluded); the run's mean is 1000 * train_time_s / step.
      const double dt = std::max(approx_ms - log_t0_ms, 1e-6);
      json fields = {{events::kStepNum, step},
                     {events::kTrainLoss, loss},
                     {events::kLrScale, scale},
                     {events::kTokensPerS, tokens_since_log / (dt / 1000.0)},
                     {events::kStepMs, dt / static_cast<double>(steps_since_log)},
                     {events::kTrainTimeS, approx_ms / 1000.0},
                     {events::kMemBytes, MemoryBytesNow(cuda, env.local_rank)},
                     {kQatBitsNow, model->qat_bits()}};
      fields.update(opts->Lrs());
      log.Emit(events::kStep, std::move(fields));
      tokens_since_log = 0;
      steps_since_log = 0;
      log_t0_ms = approx_ms;
    }
  }
  const double tokens_per_s = training_ms > 0 ? step * spec.train_batch_tokens / (training_ms / 1000.0) : 0;
  log.Log("stopped step:" + std::to_string(step) + " reason:" + exit_reason +
          " train_time_ms:" + std::to_string(training_ms));
  if (averager) log.Log(averager->Summary());

  // --- Export: final model, quantised artifact, round trip ---
  model->SetQat(0, 0, 0);
  if (master && !spec.run_dir.empty()) {
    torch::serialize::OutputArchive ar;
    for (const auto& kv : model->named_parameters()) ar.write(kv.key(), kv.value().detach().cpu());
    ar.save_to((fs::path(spec.run_dir) / "final_model.pt").string());
  }
  NamedTensors state;
  for (const auto& kv : model->named_parameters()) state.emplace_back(kv.key(), kv.value().detach());
  ExportOptions eo;
  eo.quant.bits = static_cast<int>(spec.export_bits);
  eo.quant.min_scale = spec.quant_scale_floor;
  auto comp = ParseCompression(spec.compression);
  if (!comp.ok()) throw BadInput(comp.status().message());
  eo.compression = *comp;
  eo.zstd_level = static_cast<int>(spec.zstd_level);
  auto artifact = ExportArtifact(state, eo);
  if (!artifact.ok()) throw std::runtime_error("export failed: " + artifact.status().message());
  std::string artifact_path;
  if (master && !spec.run_dir.empty()) {
    artifact_path = (fs::path(spec.run_dir) / "final_model.caddie").string();
    std::ofstream(artifact_path, std::ios::binary).write(artifact->data(), artifact->size());
  }
  auto imported = ImportArtifact(*artifact);
  if (!imported.ok()) throw std::runtime_error("artifact round trip failed: " + imported.status().message());
  {
    torch::NoGradGuard ng;
    auto named = model->named_parameters();
    for (const auto& [name, t] : *imported) {
      auto* p = named.find(name);
      if (p == nullptr) throw std::runtime_error("artifact has unknown tensor " + name);
      p->copy_(t.to(p->device(), p->scalar_type()));
    }
  }
  ValSums q = eval();
  const int64_t model_bytes = static_cast<int64_t>(artifact->size());
  const BudgetVerdict verdict = CheckBudget(model_bytes + CodeBytes());
  log.Emit(events::kFinal, {{events::kExitReason, exit_reason},
                            {events::kSteps, step},
                            {events::kTrainTimeS, training_ms / 1000.0},
                            {events::kValLoss, last_val_loss},
                            {events::kValBpb, last_val_bpb},
                            {events::kValBpbPostQuant, q.val_bpb()},
                            {events::kQuantGap, q.val_bpb() - last_val_bpb},
                            {events::kArtifactPath, artifact_path},
                            {events::kArtifactBytes, verdict.artifact_bytes},
                            {events::kModelBytes, model_bytes},
                            {events::kCodeBytes, CodeBytes()},
                            {events::kLimitBytes, verdict.limit_bytes},
                            {events::kWithinBudget, verdict.within_budget},
                            {events::kParams, n_params},
                            {events::kTokensPerS, tokens_per_s},
                            {events::kPeakMemBytes, PeakMemoryBytes(cuda, env.local_rank)}});
  return kExitOk;
}

}  // namespace

LiteStatusOr<RankEnv> RankEnvFromEnvironment() {
  RankEnv env;
  auto read_int = [](const char* name, int def, int lo, int hi) -> LiteStatusOr<int> {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return def;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (*end != '\0' || x < lo || x > hi) {
      return LiteStatus::Error("environment variable " + std::string(name) + "=\"" + v +
                               "\" must be an integer in [" + std::to_string(lo) + ", " +
                               std::to_string(hi) + "]");
    }
    return static_cast<int>(x);
  };
  auto ws = read_int("WORLD_SIZE", 1, 1, 4096);
  if (!ws.ok()) return ws.status();
  env.world_size = *ws;
  for (auto [name, dst, def, hi] : {std::tuple{"RANK", &env.rank, 0, env.world_size - 1},
                                    std::tuple{"LOCAL_RANK", &env.local_rank, 0, 4095},
                                    std::tuple{"LOCAL_WORLD_SIZE", &env.local_world_size, env.world_size, 4096},
                                    std::tuple{"MASTER_PORT", &env.master_port, 29500, 65535}}) {
    auto r = read_int(name, def, 0, hi);
    if (!r.ok()) return r.status();
    *dst = *r;
  }
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') env.master_addr = a;
  return env;
}

void InstallStopSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int RunTrainer(const TrainSpec& spec, const RankEnv& env) {
  auto fail = [&](int code, const std::string& msg) {
    std::fprintf(stderr, "caddie-train: %s\n", msg.c_str());
    if (env.rank == 0) {
      json j = {{events::kEvent, events::kError}, {events::kTime, UnixSeconds()}, {events::kMessage, msg}};
      std::fprintf(stdout, "%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
    return code;
  };
  try {
    return Train(spec, env);
  } catch (const BadInput& e) {
    return fail(kExitBadInput, e.what());
  } catch (const c10::Error& e) {
    return fail(kExitOther, e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(kExitOther, e.what());
  }
}

int RunBenchmark(const TrainSpec& spec, int64_t steps) {
  try {
    RankEnv env;
    const torch::Device device = PickDevice(spec, env);
    const bool cuda = device.is_cuda();
    SetThreads(cuda);
    torch::manual_seed(spec.seed);
    Gpt model(spec);
    model->to(device);
    Optimizers opts(model, spec, cuda ? torch::kBFloat16 : torch::kFloat32);
    Dist dist(env, cuda);
    // Micro-batches as in training (8 on one rank by the reference rule).
    const int64_t accum = GradAccumSteps(spec, 1);
    const int64_t b = std::max<int64_t>(1, spec.train_batch_tokens / accum / spec.seq_len);
    auto step = [&] {
      ZeroGrads(model);
      double total = 0;
      for (int64_t m = 0; m < accum; ++m) {
        auto xy = torch::randint(spec.vocab_size, {b, spec.seq_len + 1}, torch::kInt64).to(device);
        torch::Tensor loss;
        {
          AutocastGuard ac(cuda);
          loss = model->Loss(xy.slice(1, 0, spec.seq_len), xy.slice(1, 1, spec.seq_len + 1));
        }
        (loss / static_cast<double>(accum)).backward();
        total += loss.item<double>();
      }
      opts.Step(dist);
      return total / accum;
    };
    step();  // warm-up
    if (cuda) torch::cuda::synchronize();
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) step();
    if (cuda) torch::cuda::synchronize();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    json j = {{"benchmark", "train_step"},
              {"device", cuda ? "cuda" : "cpu"},
              {"threads", torch::get_num_threads()},
              {"params", model->NumParams()},
              {"steps", steps},
              {"batch_tokens", accum * b * spec.seq_len},
              {"grad_accum_steps", accum},
              {"step_ms", 1000.0 * s / steps},
              {"tokens_per_s", steps * accum * b * spec.seq_len / s},
              {"peak_mem_bytes", PeakMemoryBytes(cuda, 0)}};
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "caddie-train: benchmark failed: %s\n", e.what());
    return kExitOther;
  }
}

}  // namespace caddie::model
