// Unit tests of the baseline GPT, Muon and val_bpb, in process.
#include "model/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/core/shard_format.h"
#include "model/artifact.h"

namespace caddie::model {
namespace {

// One intra-op thread, as caddie-train uses on CPU: idle OpenMP workers spinning on the
// shared 2-core machine make multi-threaded runs 5-10x slower.
const bool kOneThread = [] {
  torch::set_num_threads(1);
  return true;
}();

std::string TestData(const std::string& name) {
  const char* d = std::getenv("CADDIE_TESTDATA");
  EXPECT_NE(d, nullptr) << "CADDIE_TESTDATA is not set";
  return std::string(d ? d : "") + "/" + name;
}

TrainSpec Tiny() {
  TrainSpec s;
  s.num_layers = 3;
  s.model_dim = 32;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.vocab_size = 1024;
  s.seq_len = 16;
  return s;
}

// 17,059,912 by hand from train_gpt.py's shapes (vocab 1024, 9 x 512, 8/4 heads, MLP 2x):
//   tok_emb 1024*512                                   =    524,288
//   skip_weights min(4, 5) * 512                       =      2,048
//   per block: c_q 512*512 + c_k 512*256 + c_v 512*256 + proj 512*512 = 786,432
//              fc 512*1024 + proj 1024*512             =  1,048,576
//              q_gain 8 + attn_scale 512 + mlp_scale 512 + resid_mix 2*512 = 2,056
//              = 1,837,064; times 9                    = 16,533,576
//   total                                              = 17,059,912
TEST(GptTest, BaselineParameterCountEqualsReference) {
  torch::manual_seed(0);
  TrainSpec spec;
  Gpt model(spec);
  EXPECT_EQ(model->NumParams(), 17059912);
  EXPECT_EQ(ExpectedParamCount(spec), 17059912);
  // Names as the reference's state dict; 2-D block matrices go to Muon.
  auto named = model->named_parameters();
  EXPECT_NE(named.find("blocks.8.attn.c_k.weight"), nullptr);
  EXPECT_EQ(named["blocks.0.attn.c_k.weight"].sizes(), torch::IntArrayRef({256, 512}));
  EXPECT_EQ(named["blocks.0.resid_mix"].sizes(), torch::IntArrayRef({2, 512}));
  EXPECT_EQ(named["skip_weights"].sizes(), torch::IntArrayRef({4, 512}));
  EXPECT_EQ(model->MatrixParams().size(), 9u * 6u);
  EXPECT_EQ(model->ScalarParams().size(), 9u * 4u + 1u);
  // Zero-initialised output projections, tied embedding std 0.005.
  EXPECT_EQ(named["blocks.4.attn.proj.weight"].abs().max().item<float>(), 0.0f);
  EXPECT_EQ(named["blocks.4.mlp.proj.weight"].abs().max().item<float>(), 0.0f);
  EXPECT_NEAR(named["tok_emb.weight"].std().item<double>(), 0.005, 0.0002);
}

TEST(GptTest, UntiedAndOddDepthCountsMatchHandComputation) {
  TrainSpec s = Tiny();
  s.tie_embeddings = false;
  Gpt model(s);
  // emb 2*1024*32 + skip 1*32 + 3 * (32*32*2 + 2*32*16 + 2*32*64 + 4 + 4*32)
  const int64_t block = 32 * 32 * 2 + 2 * 32 * 16 + 2 * 32 * 64 + 4 + 4 * 32;
  EXPECT_EQ(model->NumParams(), 2 * 1024 * 32 + 32 + 3 * block);
  EXPECT_EQ(ExpectedParamCount(s), model->NumParams());
}

TEST(GptTest, ForwardIsCausal) {
  torch::manual_seed(1);
  Gpt model(Tiny());
  {
    // Non-zero projections, so every layer matters.
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  auto x = torch::randint(1024, {2, 16}, torch::kInt64);
  auto a = model->Logits(x);
  auto x2 = x.clone();
  x2.index_put_({torch::indexing::Slice(), 9}, (x.index({torch::indexing::Slice(), 9}) + 7) % 1024);
  auto b = model->Logits(x2);
  using torch::indexing::Slice;
  EXPECT_TRUE(torch::allclose(a.index({Slice(), Slice(0, 9)}), b.index({Slice(), Slice(0, 9)}), 0, 0));
  EXPECT_GT((a.index({Slice(), Slice(9, 16)}) - b.index({Slice(), Slice(9, 16)})).abs().max().item<float>(), 1e-4);
  // Softcap bounds the logits.
  EXPECT_LE(a.abs().max().item<float>(), 30.0f);
}

TEST(GptTest, InitialLossIsUniform) {
  torch::manual_seed(2);
  Gpt model(Tiny());
  auto x = torch::randint(1024, {4, 16}, torch::kInt64);
  auto y = torch::randint(1024, {4, 16}, torch::kInt64);
  // Tiny tied embedding (std 0.005) and zero projections: logits ~ 0, loss ~ ln V.
  EXPECT_NEAR(model->Loss(x, y).item<double>(), std::log(1024.0), 0.01);
}

TEST(MuonTest, NewtonSchulzSingularValuesNearOne) {
  torch::manual_seed(3);
  for (auto shape : {std::vector<int64_t>{64, 128}, std::vector<int64_t>{192, 48}}) {
    auto g = torch::randn(shape) * torch::linspace(0.5, 2.0, shape[1]);  // unequal column scales
    auto o = ZeroPowerNewtonSchulz5(g, 5);
    ASSERT_EQ(o.sizes(), g.sizes());
    auto sv = std::get<1>(torch::linalg_svd(o.to(torch::kFloat64), false));
    // The quintic's coefficients trade exactness for speed: values land in ~[0.7, 1.2].
    EXPECT_GT(sv.min().item<double>(), 0.6) << shape[0];
    EXPECT_LT(sv.max().item<double>(), 1.25) << shape[0];
    // And the direction is the polar factor U Vᵀ.
    auto [u, s, vh] = torch::linalg_svd(g.to(torch::kFloat64), false);
    auto polar = torch::matmul(u, vh);
    const double cos = (polar * o.to(torch::kFloat64)).sum().item<double>() /
                       (polar.norm().item<double>() * o.norm().item<double>());
    EXPECT_GT(cos, 0.98) << shape[0];
  }
}

TEST(MuonTest, StepAppliesScaledOrthogonalUpdate) {
  torch::manual_seed(4);
  auto w = torch::zeros({8, 32}, torch::requires_grad());
  w.mutable_grad() = torch::randn({8, 32});
  Muon muon({w}, /*lr=*/0.1, /*momentum=*/0.9, /*steps=*/5, torch::kFloat32);
  const auto g = w.grad().clone();
  muon.Step(0, 1, nullptr);
  // buf = g; nesterov: g + 0.9 g = 1.9 g; NS is scale-invariant; wide matrix: no extra scale.
  auto expect = -0.1 * ZeroPowerNewtonSchulz5(1.9 * g, 5);
  EXPECT_TRUE(torch::allclose(w.detach(), expect, 1e-5, 1e-6));
}

// val_bpb from EvalValShare equals a direct computation: Σ -log p(target) / ln 2 / Σ bytes,
// with bytes from ByteTable::TokenBytes, on real validation tokens.
TEST(ValBpbTest, EqualsIndependentComputation) {
  const std::string dir = TestData("sp1024");
  auto table = ReadByteTable(dir + "/byte_table.json");
  ASSERT_TRUE(table.ok()) << table.status().message();
  auto shards = ListShards(dir, "val");
  ASSERT_TRUE(shards.ok()) << shards.status().message();
  auto toks = ReadShard((*shards)[0]);
  ASSERT_TRUE(toks.ok());
  const int64_t seq = 16, nseq = 12;
  ASSERT_GT(static_cast<int64_t>(toks->size()), seq * nseq + 1);
  std::vector<int64_t> v(toks->begin(), toks->begin() + seq * nseq + 1);
  auto val = torch::tensor(v, torch::kInt64);

  torch::manual_seed(5);
  TrainSpec spec = Tiny();
  spec.seq_len = seq;
  Gpt model(spec);
  {
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  }
  model->to(torch::kFloat64);

  // Batches of 5 sequences (the last batch is short), then 3 rank shares summed.
  ValSums one = EvalValShare(model, val, seq, 5, *table, 0, 1, torch::kCPU, false);
  ValSums shares;
  for (int r = 0; r < 3; ++r) {
    ValSums s = EvalValShare(model, val, seq, 2, *table, r, 3, torch::kCPU, false);
    shares.loss_sum += s.loss_sum, shares.tokens += s.tokens, shares.bytes += s.bytes;
  }

  // Independent: per-token log-softmax, byte accounting token by token.
  torch::NoGradGuard ng;
  auto x = val.slice(0, 0, seq * nseq).view({nseq, seq});
  auto y = val.slice(0, 1, seq * nseq + 1).view({nseq, seq});
  auto logp = torch::log_softmax(model->Logits(x), -1);  // (N,T,V) float64
  auto nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1);
  double nats = nll.sum().item<double>();
  double bytes = 0;
  for (int64_t i = 0; i < seq * nseq; ++i) bytes += table->TokenBytes(static_cast<int>(v[i]), static_cast<int>(v[i + 1]));
  const double expected = nats / std::log(2.0) / bytes;
  EXPECT_EQ(one.tokens, seq * nseq);
  EXPECT_EQ(one.bytes, bytes);
  EXPECT_NEAR(one.val_bpb(), expected, 1e-6);
  EXPECT_NEAR(shares.val_bpb(), expected, 1e-6);
  EXPECT_EQ(shares.tokens, one.tokens);
  EXPECT_EQ(shares.bytes, one.bytes);
  // Sanity: an almost-untrained model is near uniform: log2(V) × tokens / bytes.
  EXPECT_GT(expected, 0.5 * std::log2(1024.0) * one.tokens / one.bytes);
}


// --- Architecture axes (issue 7) ---------------------------------------------

struct Variant {
  std::string name;
  std::function<void(TrainSpec&)> apply;
  int64_t params;  // by hand
};

// Tiny(): C = 32, H = 4, K = 2 (kv dim 16), MLP 2x, V = 1024. One block:
// q 32*32 + k,v 2*32*16 + proj 32*32 + fc,proj 2*32*64 + q_gain 4 + scales/mix 4*32 = 7,300.
std::vector<Variant> Variants() {
  const int64_t block = 7300, emb = 1024 * 32, c = 32;
  return {
      {"baseline", [](TrainSpec&) {}, emb + 1 * c + 3 * block},
      // 2 blocks looped twice: depth 4, skips min(2, 2).
      {"loops", [](TrainSpec& s) { s.num_layers = 2, s.loops = 2; }, emb + 2 * c + 2 * block},
      // 4 layers sharing 2 blocks: depth 4, 2 blocks stored.
      {"unique_blocks", [](TrainSpec& s) { s.num_layers = 4, s.unique_blocks = 2; }, emb + 2 * c + 2 * block},
      // layer 1 looped 3 times: schedule 0,1,1,1,2 (depth 5, skips min(2, 3)).
      {"recur_layers", [](TrainSpec& s) { s.loops = 3, s.recur_layers = "1-1"; }, emb + 2 * c + 3 * block},
      // E = 16: V*E + projections 32*16 twice.
      {"embed_dim", [](TrainSpec& s) { s.embed_dim = 16; }, 1024 * 16 + 2 * 32 * 16 + 1 * c + 3 * block},
      {"alibi", [](TrainSpec& s) { s.pos_scheme = "alibi"; }, emb + 1 * c + 3 * block},
      {"no_pos", [](TrainSpec& s) { s.pos_scheme = "none"; }, emb + 1 * c + 3 * block},
      {"rope_half", [](TrainSpec& s) { s.rope_fraction = 0.5; }, emb + 1 * c + 3 * block},
      // SSM block (D_in = 64, N = 16, W = 4, dt rank 2): in_proj 32*128 + conv 64*4 + 64
      // + x_proj 64*(2+32) + dt_proj 2*64 + 64 + A_log 64*16 + D 64 + out_proj 64*32 = 9,920,
      // plus MLP 4,096 and scales/mix 128 = 14,144.
      {"ssm", [](TrainSpec& s) { s.mixer = "ssm"; }, emb + 1 * c + 3 * 14144},
      {"hybrid_ASA", [](TrainSpec& s) { s.mixer_pattern = "ASA"; }, emb + 1 * c + 2 * block + 14144},
      // recur_layers schedule plus (loops, C) gains and (loops, C) loop embeddings.
      {"loop_params", [](TrainSpec& s) { s.loops = 3, s.recur_layers = "1-1", s.loop_scalars = s.loop_embedding = true; },
       emb + 2 * c + 3 * block + 2 * 3 * c},
      // Blocks A and S shared by 2 layers looped 3 times: depth 6, skips min(3, 3), 2 blocks stored.
      {"hybrid_shared_loops", [](TrainSpec& s) { s.num_layers = 2, s.unique_blocks = 2, s.loops = 3, s.mixer_pattern = "AS"; },
       emb + 3 * c + block + 14144},
      // Width, heads and MLP, each block from its shapes: q + k + v + proj + fc + proj + q_gain
      // + attn_scale, mlp_scale, resid_mix (4C); kv dim = kv_heads * C / heads.
      // kv_heads 4 (= heads, kv dim 32) and 1 (kv dim 8).
      {"kv_heads_4", [](TrainSpec& s) { s.num_kv_heads = 4; },
       emb + 1 * c + 3 * (32 * 32 + 32 * 32 + 32 * 32 + 32 * 32 + 32 * 64 + 64 * 32 + 4 + 4 * 32)},
      {"kv_heads_1", [](TrainSpec& s) { s.num_kv_heads = 1; },
       emb + 1 * c + 3 * (32 * 32 + 32 * 8 + 32 * 8 + 32 * 32 + 32 * 64 + 64 * 32 + 4 + 4 * 32)},
      // heads 8 (head dim 4), kv_heads 2 (kv dim 8): 8 q gains.
      {"heads_8", [](TrainSpec& s) { s.num_heads = 8; },
       emb + 1 * c + 3 * (32 * 32 + 32 * 8 + 32 * 8 + 32 * 32 + 32 * 64 + 64 * 32 + 8 + 4 * 32)},
      // mlp_mult 3: fc 32 -> 96 and proj 96 -> 32.
      {"mlp_mult_3", [](TrainSpec& s) { s.mlp_mult = 3; },
       emb + 1 * c + 3 * (32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 32 * 96 + 96 * 32 + 4 + 4 * 32)},
      // model_dim 64 (head dim 16, kv dim 32, MLP 128): embedding 1024 x 64 and a 64-wide skip.
      {"model_dim_64", [](TrainSpec& s) { s.model_dim = 64; },
       1024 * 64 + 1 * 64 + 3 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 64 * 128 + 128 * 64 + 4 + 4 * 64)},
  };
}

TEST(SsmTest, ChunkedScanEqualsSequentialScan) {
  torch::manual_seed(21);
  const int64_t b = 2, t = 37, d = 8, n = 4;  // 37: the last chunk is partial
  auto u = torch::randn({b, t, d});
  auto dt = torch::softplus(torch::randn({b, t, d}));
  auto A = -torch::exp(torch::randn({d, n}));
  auto B = torch::randn({b, t, n}), C = torch::randn({b, t, n});
  auto ref = SelectiveScanSequential(u, dt, A, B, C);
  for (int64_t chunk : {0, 1, 5, 16, 64}) {
    auto y = SelectiveScan(u, dt, A, B, C, chunk);
    EXPECT_LT((y - ref).abs().max().item<float>(), 1e-5) << "chunk " << chunk;
  }
}

TEST(SsmTest, ScanStaysExactWithFastDecayAndItsGradientsMatch) {
  // Steps of Δ·A up to ~50: the chunk length must shrink (and the per-step clamp engage)
  // for exp(-Σ Δ A) to stay finite; values and gradients still equal the sequential scan.
  torch::manual_seed(22);
  const int64_t b = 2, t = 45, d = 6, n = 5;
  auto u = torch::randn({b, t, d}, torch::requires_grad());
  auto dt = (torch::softplus(2 * torch::randn({b, t, d}) + 1)).detach().requires_grad_();
  auto A = (-torch::exp(torch::randn({d, n}) + 1)).detach().requires_grad_();
  auto B = torch::randn({b, t, n}, torch::requires_grad()), C = torch::randn({b, t, n}, torch::requires_grad());
  ASSERT_GT((dt.unsqueeze(-1) * A).min().item<double>(), -1e3);
  ASSERT_LT((dt.unsqueeze(-1) * A).min().item<double>(), -kScanMinLogDecay);  // the clamp is exercised
  auto weights = torch::randn({b, t, d});
  auto ref = SelectiveScanSequential(u, dt, A, B, C);
  auto ref_grads = torch::autograd::grad({(ref * weights).sum()}, {u, dt, A, B, C});
  auto y = SelectiveScan(u, dt, A, B, C);
  ASSERT_TRUE(torch::isfinite(y).all().item<bool>());
  EXPECT_LT((y - ref).abs().max().item<float>(), 1e-5);
  auto grads = torch::autograd::grad({(y * weights).sum()}, {u, dt, A, B, C});
  const char* names[] = {"u", "dt", "A", "B", "C"};
  for (size_t i = 0; i < grads.size(); ++i) {
    ASSERT_TRUE(torch::isfinite(grads[i]).all().item<bool>()) << names[i];
    const double scale = ref_grads[i].abs().max().item<double>();
    EXPECT_LT((grads[i] - ref_grads[i]).abs().max().item<double>(), 1e-4 * std::max(1.0, scale)) << names[i];
  }
}

// The per-time largest step |Δ A| (over rows, channels and states), as SelectiveScan cuts
// its chunks from.
std::vector<double> StepsOf(const torch::Tensor& dt, const torch::Tensor& A) {
  auto st = (dt.unsqueeze(-1) * A).clamp_min(-kScanMinLogDecay).amin({0, 2, 3}).neg().to(torch::kFloat64).contiguous();
  return std::vector<double>(st.data_ptr<double>(), st.data_ptr<double>() + st.numel());
}

std::vector<int64_t> Repeat(int64_t len, int64_t times, int64_t last = 0) {
  std::vector<int64_t> out(static_cast<size_t>(times), len);
  if (last > 0) out.push_back(last);
  return out;
}

TEST(SsmTest, ChunkLengthsAreTheLongestThatKeepFp32Finite) {
  using V = std::vector<double>;
  // The baseline-sized SSM at init: Δ ≤ 0.1, A down to -16, so steps ≤ 1.6 -> 37 steps a chunk
  // (28 chunks over 1,024 tokens), whatever the batch size.
  EXPECT_EQ(ScanChunkLengths(V(1024, 1.6), 0), Repeat(37, 27, 25));
  EXPECT_EQ(ScanChunkLengths(V(64, kScanMaxLogRange / 16), 0), Repeat(16, 4));
  // Slow decay: one chunk over the whole sequence.
  EXPECT_EQ(ScanChunkLengths(V(1024, 0.01), 0), Repeat(1024, 1));
  EXPECT_EQ(ScanChunkLengths(V(64, 0.0), 0), Repeat(64, 1));
  // The clamped per-step maximum still gives chunks of 3.
  EXPECT_EQ(ScanChunkLengths(V(10, kScanMinLogDecay), 0), Repeat(3, 3, 1));
  // A requested length is a cap, never a license to overflow.
  EXPECT_EQ(ScanChunkLengths(V(40, 0.01), 16), Repeat(16, 2, 8));
  EXPECT_EQ(ScanChunkLengths(V(5, 30.0), 16), Repeat(2, 2, 1));
  EXPECT_EQ(ScanChunkLengths(V(3, 1e9), 0), Repeat(1, 3));
  EXPECT_TRUE(ScanChunkLengths(V(), 0).empty());
  // Steps that vary: a chunk is cut where the next step would take its sum past the range.
  // 20+20+20 = 60 | 1+1+19+18+20 = 59 (+5 would be 64) | 5+2.
  EXPECT_EQ(ScanChunkLengths(V({20, 20, 20, 1, 1, 19, 18, 20, 5, 2}), 0), (std::vector<int64_t>{3, 5, 2}));
}

TEST(SsmTest, ChunkEdgesDependOnEarlierStepsOnly) {
  // Random steps up to the clamp, with and without a cap: (1) every chunk's steps sum to at
  // most kScanMaxLogRange and the next step would not fit (or the cap is reached); (2) the
  // chunk edges at or before time p are the same whatever the steps after p are.
  torch::manual_seed(26);
  for (int64_t cap : {0, 7}) {
    for (int trial = 0; trial < 20; ++trial) {
      auto r = (torch::rand({200}, torch::kFloat64) * (trial % 2 ? kScanMinLogDecay : 4.0)).contiguous();
      std::vector<double> steps(r.data_ptr<double>(), r.data_ptr<double>() + 200);
      const auto lens = ScanChunkLengths(steps, cap);
      std::vector<int64_t> starts;
      int64_t t0 = 0;
      for (size_t c = 0; c < lens.size(); ++c) {
        ASSERT_GE(lens[c], 1);
        if (cap > 0) {
          ASSERT_LE(lens[c], cap);
        }
        double sum = 0;
        for (int64_t i = t0; i < t0 + lens[c]; ++i) sum += steps[static_cast<size_t>(i)];
        ASSERT_LE(sum, kScanMaxLogRange);
        if (c + 1 < lens.size() && lens[c] != cap) {  // cut because the next step would not fit
          ASSERT_GT(sum + steps[static_cast<size_t>(t0 + lens[c])], kScanMaxLogRange);
        }
        starts.push_back(t0);
        t0 += lens[c];
      }
      ASSERT_EQ(t0, 200);
      for (int64_t p : {0, 1, 17, 99, 150, 199}) {
        auto changed = steps;
        for (size_t i = static_cast<size_t>(p) + 1; i < changed.size(); ++i) changed[i] = kScanMinLogDecay - changed[i];
        std::vector<int64_t> starts2;
        int64_t t = 0;
        for (int64_t l : ScanChunkLengths(changed, cap)) starts2.push_back(t), t += l;
        auto upto = [p](const std::vector<int64_t>& v) {
          std::vector<int64_t> out;
          for (int64_t x : v) if (x <= p) out.push_back(x);
          return out;
        };
        ASSERT_EQ(upto(starts), upto(starts2)) << "cap " << cap << " trial " << trial << " p " << p;
      }
    }
  }
}

TEST(AxesTest, ScheduleFollowsLoopsAndSharing) {
  TrainSpec s = Tiny();
  s.num_layers = 3, s.loops = 3, s.recur_layers = "1-1";
  EXPECT_EQ(LayerSchedule(s), (std::vector<int64_t>{0, 1, 1, 1, 2}));
  s = Tiny();
  s.num_layers = 2, s.loops = 3;
  EXPECT_EQ(LayerSchedule(s), (std::vector<int64_t>{0, 1, 0, 1, 0, 1}));
  s = Tiny();
  s.num_layers = 6, s.unique_blocks = 3;
  EXPECT_EQ(LayerSchedule(s), (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
}

TEST(AxesTest, ParameterCountsMatchHandComputation) {
  for (const auto& v : Variants()) {
    TrainSpec s = Tiny();
    v.apply(s);
    ASSERT_TRUE(ValidateTrainSpec(s).ok()) << v.name << ": " << ValidateTrainSpec(s).message();
    Gpt model(s);
    EXPECT_EQ(model->NumParams(), v.params) << v.name;
    EXPECT_EQ(ExpectedParamCount(s), v.params) << v.name;
  }
}

TEST(AxesTest, EveryVariantIsCausal) {
  using torch::indexing::Slice;
  for (const auto& v : Variants()) {
    TrainSpec s = Tiny();
    v.apply(s);
    torch::manual_seed(11);
    Gpt model(s);
    {
      torch::NoGradGuard ng;
      for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
    }
    auto x = torch::randint(1024, {2, 16}, torch::kInt64);
    auto x2 = x.clone();
    x2.index_put_({Slice(), 6}, (x.index({Slice(), 6}) + 5) % 1024);
    auto a = model->Logits(x), b = model->Logits(x2);
    EXPECT_TRUE(torch::allclose(a.index({Slice(), Slice(0, 6)}), b.index({Slice(), Slice(0, 6)}), 0, 0)) << v.name;
    EXPECT_GT((a.index({Slice(), Slice(6, 16)}) - b.index({Slice(), Slice(6, 16)})).abs().max().item<float>(), 1e-5)
        << v.name;
  }
}

TEST(AxesTest, LoopParamsAddLoopsTimesWidthEachAndStartAsIdentity) {
  TrainSpec base = Tiny();
  base.loops = 3, base.recur_layers = "1-2";  // schedule 0,1,2,1,2,1,2
  torch::manual_seed(5);
  Gpt plain(base);
  auto x = torch::randint(1024, {2, 16}, torch::kInt64);
  for (int which = 0; which < 2; ++which) {
    TrainSpec s = base;
    (which == 0 ? s.loop_scalars : s.loop_embedding) = true;
    const std::string name = which == 0 ? "loop_scalars" : "loop_embedding";
    torch::manual_seed(5);
    Gpt m(s);
    EXPECT_EQ(m->NumParams() - plain->NumParams(), 3 * 32) << name;
    EXPECT_EQ(ExpectedParamCount(s), m->NumParams()) << name;
    EXPECT_EQ(m->named_parameters()[name].sizes(), torch::IntArrayRef({3, 32}));
    EXPECT_EQ(m->ScalarParams().size(), plain->ScalarParams().size() + 1) << name;
    EXPECT_EQ(m->MatrixParams().size(), plain->MatrixParams().size()) << name;
    // Gains of 1 and embeddings of 0 leave the function unchanged at init.
    auto a = m->Logits(x);
    EXPECT_EQ(a.sizes(), torch::IntArrayRef({2, 16, 1024}));
    EXPECT_TRUE(torch::equal(a, plain->Logits(x))) << name;
  }
}

TEST(AxesTest, EveryLoopsParamsGetAGradientAndSurviveTheArtifact) {
  TrainSpec s = Tiny();
  s.loops = 3, s.recur_layers = "1-1", s.loop_scalars = s.loop_embedding = true;
  torch::manual_seed(6);
  Gpt m(s);
  {
    // Non-zero projections: at init a block's update is 0 and so is the gains' gradient.
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  auto x = torch::randint(1024, {2, 16}, torch::kInt64);
  m->Loss(x, x).backward();
  for (const auto& p : {m->loop_scalars, m->loop_embedding}) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum(1).min().item<float>(), 0.0f);  // every loop's row
  }
  NamedTensors state;
  for (const auto& kv : m->named_parameters()) state.emplace_back(kv.key(), kv.value().detach());
  auto art = ExportArtifact(state, ExportOptions());
  ASSERT_TRUE(art.ok()) << art.status().message();
  auto info = DescribeArtifact(*art);
  ASSERT_TRUE(info.ok());
  int kept = 0;
  for (const auto& t : *info) {
    if (t.name == "loop_scalars" || t.name == "loop_embedding") kept += t.bits == 0 && t.storage_dtype == torch::kHalf;
  }
  EXPECT_EQ(kept, 2);
  auto back = ImportArtifact(*art);
  ASSERT_TRUE(back.ok());
  int found = 0;
  for (const auto& [name, t] : *back) {
    if (name != "loop_scalars" && name != "loop_embedding") continue;
    ++found;
    auto want = m->named_parameters()[name].detach().to(torch::kHalf).to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(t.to(torch::kFloat32), want)) << name;
  }
  EXPECT_EQ(found, 2);
}

// Each variant learns the real corpus: 100 steps (Muon + Adam, as the trainer splits them).
TEST(AxesTest, EveryVariantsLossFallsOnTheRealCorpus) {
  auto shards = ListShards(TestData("sp1024"), "train");
  ASSERT_TRUE(shards.ok()) << shards.status().message();
  auto toks = ReadShard((*shards)[0]);
  ASSERT_TRUE(toks.ok());
  auto stream = torch::tensor(std::vector<int64_t>(toks->begin(), toks->begin() + 200000), torch::kInt64);
  for (const auto& v : Variants()) {
    TrainSpec s = Tiny();
    s.seq_len = 32;
    v.apply(s);
    torch::manual_seed(12);
    Gpt model(s);
    Muon muon(model->MatrixParams(), 0.02, 0.9, 5, torch::kFloat32);
    std::vector<torch::Tensor> rest = model->ScalarParams();
    rest.push_back(model->tok_emb->weight);
    torch::optim::Adam adam(rest, torch::optim::AdamOptions(0.01).betas({0.9, 0.95}));
    double first = 0, last = 0;
    for (int step = 0; step < 100; ++step) {
      auto starts = torch::randint(stream.numel() - 33, {8}, torch::kInt64);
      std::vector<torch::Tensor> rows;
      for (int i = 0; i < 8; ++i) rows.push_back(stream.slice(0, starts[i].item<int64_t>(), starts[i].item<int64_t>() + 33));
      auto batch = torch::stack(rows);  // (8, 33)
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      auto loss = model->Loss(batch.slice(1, 0, 32), batch.slice(1, 1, 33));
      loss.backward();
      adam.step();
      muon.Step(0, 1, nullptr);
      if (step < 10) first += loss.item<double>() / 10;
      if (step >= 90) last += loss.item<double>() / 10;
    }
    EXPECT_LT(last, first - 0.8) << v.name << ": " << first << " -> " << last;
    std::printf("%-14s params %6lld  loss %.3f -> %.3f\n", v.name.c_str(),
                static_cast<long long>(model->NumParams()), first, last);
  }
}


// --- mixer_pattern with shared and looped blocks -----------------------------

// The mixer each applied layer runs, read off the built model: "ASSA..." over the schedule.
std::string AppliedMixers(Gpt& m) {
  std::string out;
  for (int64_t b : m->schedule) out += m->blocks[b]->as<BlockImpl>()->ssm ? 'S' : 'A';
  return out;
}

TEST(MixerPatternTest, ConsistentPatternsBuildTheirMixerPerAppliedLayer) {
  struct Case {
    std::string name;
    std::function<void(TrainSpec&)> apply;
    std::string applied;  // by hand, one letter per applied layer
  };
  const std::vector<Case> cases = {
      // 2 layers, 2 blocks, the stack looped 3 times: A S A S A S.
      {"AS_u2_l3", [](TrainSpec& s) { s.num_layers = 2, s.unique_blocks = 2, s.loops = 3, s.mixer_pattern = "AS"; }, "ASASAS"},
      // 4 layers sharing 2 blocks (layer i runs block i % 2), looped twice.
      {"ASAS_u2_l2", [](TrainSpec& s) { s.num_layers = 4, s.unique_blocks = 2, s.loops = 2, s.mixer_pattern = "ASAS"; }, "ASASASAS"},
      // Only layer 1 (S) looped 3 times: 0,1,1,1,2.
      {"ASA_r1", [](TrainSpec& s) { s.mixer_pattern = "ASA", s.loops = 3, s.recur_layers = "1-1"; }, "ASSSA"},
      // 3 layers on 1 shared SSM block.
      {"SSS_u1", [](TrainSpec& s) { s.mixer_pattern = "SSS", s.unique_blocks = 1; }, "SSS"},
      // mixer_pattern wins over mixer.
      {"SAA_mixer_ssm", [](TrainSpec& s) { s.mixer = "ssm", s.mixer_pattern = "SAA"; }, "SAA"},
  };
  for (const auto& c : cases) {
    TrainSpec s = Tiny();
    c.apply(s);
    ASSERT_TRUE(ValidateTrainSpec(s).ok()) << c.name << ": " << ValidateTrainSpec(s).message();
    torch::manual_seed(31);
    Gpt m(s);
    EXPECT_EQ(AppliedMixers(m), c.applied) << c.name;
    // Each stored block has exactly one mixer, and it is the pattern's letter for that block.
    for (size_t b = 0; b < m->blocks->size(); ++b) {
      auto* blk = m->blocks[b]->as<BlockImpl>();
      EXPECT_NE(static_cast<bool>(blk->ssm), static_cast<bool>(blk->attn)) << c.name << " block " << b;
      EXPECT_EQ(blk->ssm ? 'S' : 'A', s.mixer_pattern[b]) << c.name << " block " << b;
    }
    auto logits = m->Logits(torch::randint(1024, {1, 16}, torch::kInt64));
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>()) << c.name;
  }
}

TEST(MixerPatternTest, InconsistentCombinationsAreClearErrors) {
  // With unique_blocks 2, layer 2 runs block 0 (A): a pattern saying S there cannot be built.
  // The spec check refuses it (caddie-train exits 2, `caddie sweep validate` reports it), and
  // the model's constructor, for specs built in code, throws the same message.
  TrainSpec s = Tiny();
  s.num_layers = 4, s.unique_blocks = 2, s.mixer_pattern = "AASS";
  const LiteStatus st = ValidateTrainSpec(s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "mixer_pattern \"AASS\" does not fit unique_blocks = 2: layer 2 is 'S' but runs block 0, "
            "which is 'A' (letter i must equal letter i % unique_blocks)");
  EXPECT_EQ(ValidateLayerLayout(s).message(), st.message());
  try {
    Gpt m(s);
    ADD_FAILURE() << "an inconsistent mixer_pattern built a model";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), st.message());
  }
  // The parser too, on the JSON a job carries.
  auto parsed = ParseTrainSpecText(R"({"num_layers": 4, "unique_blocks": 2, "mixer_pattern": "AASS"})");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().message(), st.message());
  // Layers 3 and 4 fit blocks 0 and 1; layer 5 (S) runs block 2 (A), also with loops.
  s.num_layers = 6, s.unique_blocks = 3, s.loops = 2, s.mixer_pattern = "ASAASS";
  ASSERT_FALSE(ValidateTrainSpec(s).ok());
  EXPECT_NE(ValidateTrainSpec(s).message().find("layer 5 is 'S' but runs block 2, which is 'A'"), std::string::npos)
      << ValidateTrainSpec(s).message();
  // The same pattern on blocks it fits is fine: the check compares letters, not positions.
  s.mixer_pattern = "ASSASS";
  EXPECT_TRUE(ValidateTrainSpec(s).ok()) << ValidateTrainSpec(s).message();

  // A pattern whose length is the number of unique blocks (or anything but num_layers) is
  // refused by the parser, naming the key and num_layers.
  for (const std::string& text : {std::string(R"({"num_layers": 4, "unique_blocks": 2, "mixer_pattern": "AS"})"),
                                  std::string(R"({"num_layers": 2, "loops": 3, "mixer_pattern": "ASASAS"})"),
                                  std::string(R"({"num_layers": 3, "mixer_pattern": "AS", "recur_layers": "1-1", "loops": 2})")}) {
    auto parsed = ParseTrainSpecText(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.status().message().find("mixer_pattern"), std::string::npos) << parsed.status().message();
    EXPECT_NE(parsed.status().message().find("num_layers = "), std::string::npos) << parsed.status().message();
  }
  // A spec built in code with a short pattern, or more unique blocks than layers, is refused
  // by the model, not read past the pattern's end.
  s = Tiny();
  s.mixer_pattern = "AS";
  EXPECT_THROW(Gpt m(s), std::invalid_argument);
  EXPECT_EQ(ValidateLayerLayout(s).message(), "mixer_pattern \"AS\" has 2 letters; num_layers = 3");
  s.mixer_pattern = "ASA", s.unique_blocks = 4;
  EXPECT_THROW(Gpt m(s), std::invalid_argument);
  EXPECT_EQ(ValidateLayerLayout(s).message(), "unique_blocks = 4 must be <= num_layers = 3");
  // The parser's own checks on the letters and unique_blocks stay.
  auto bad = ParseTrainSpecText(R"({"num_layers": 2, "mixer_pattern": "Aa"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown mixer letter 'a'"), std::string::npos) << bad.status().message();
  bad = ParseTrainSpecText(R"({"num_layers": 2, "unique_blocks": 3, "mixer_pattern": "AS"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unique_blocks = 3 must be <= num_layers = 2"), std::string::npos)
      << bad.status().message();
}

// --- Positional schemes -------------------------------------------------------

// A model of `s` from `seed` with every parameter moved off its init (zero projections
// would hide the mixers), in float64 (comparisons are sharp) unless asked otherwise.
Gpt Perturbed(const TrainSpec& s, uint64_t seed, torch::ScalarType dtype = torch::kFloat64) {
  torch::manual_seed(seed);
  Gpt m(s);
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  m->to(dtype);
  return m;
}

// Token p of x (B,T) changed: the largest logit change before p and at p, from `base` = Logits(x).
std::pair<double, double> ChangeFromToken(Gpt& m, const torch::Tensor& x, const torch::Tensor& base, int64_t p) {
  using torch::indexing::Slice;
  auto y = x.clone();
  y.index_put_({Slice(), p}, (x.index({Slice(), p}) + 17) % 1024);
  auto out = m->Logits(y);
  const double before = p == 0 ? 0.0 : (base.index({Slice(), Slice(0, p)}) - out.index({Slice(), Slice(0, p)})).abs().max().item<double>();
  return {before, (base.index({Slice(), p}) - out.index({Slice(), p})).abs().max().item<double>()};
}

TEST(PositionTest, RopeFractionZeroIsExactlyNoPositions) {
  TrainSpec zero = Tiny(), none = Tiny(), full = Tiny();
  zero.rope_fraction = 0.0;
  none.pos_scheme = "none";
  Gpt a = Perturbed(zero, 41), b = Perturbed(none, 41), c = Perturbed(full, 41);
  EXPECT_EQ(a->rope_dims, 0);
  EXPECT_EQ(c->rope_dims, 32 / 4);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& kv : pa) ASSERT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  auto x = torch::randint(1024, {2, 16}, torch::kInt64);
  auto la = a->Logits(x);
  EXPECT_TRUE(torch::equal(la, b->Logits(x)));
  // The same weights with RoPE on give other logits: the comparison can tell.
  EXPECT_GT((la - c->Logits(x)).abs().max().item<double>(), 1e-3);
}

TEST(PositionTest, RopeFractionRotatesWholePairsAndNeverRoundsToNoneOrAll) {
  // Tiny: head_dim 32 / 4 = 8, four pairs. The model rotates RopeDims(spec), the dims the spec
  // check counted; a fraction in (0, 1) that would round to 0 or 8 dims is refused, naming the
  // dims, head_dim and the fraction to use.
  const std::vector<std::pair<double, int64_t>> fits = {{0.0, 0}, {0.125, 2}, {0.25, 2}, {0.5, 4}, {0.75, 6}, {0.8, 6}, {1.0, 8}};
  for (const auto& [frac, dims] : fits) {
    TrainSpec s = Tiny();
    s.rope_fraction = frac;
    ASSERT_TRUE(ValidateTrainSpec(s).ok()) << frac << ": " << ValidateTrainSpec(s).message();
    EXPECT_EQ(RopeDims(s), dims) << frac;
    torch::manual_seed(40);
    EXPECT_EQ(Gpt(s)->rope_dims, dims) << frac;
  }
  TrainSpec s = Tiny();
  s.rope_fraction = 0.1;  // 0.8 dims: 0 pairs
  EXPECT_EQ(ValidateTrainSpec(s).message(),
            "rope_fraction = 0.1 rotates 0 of the head_dim = 8 dims (model_dim / num_heads; rounded to whole "
            "pairs): use rope_fraction >= 0.25 (2 / head_dim, one pair) or 0 for no rotation");
  s.rope_fraction = 0.9;  // 7.2 dims: 4 pairs, all of them
  EXPECT_EQ(ValidateTrainSpec(s).message(),
            "rope_fraction = 0.9 rotates 8 of the head_dim = 8 dims (model_dim / num_heads; rounded to whole "
            "pairs): use rope_fraction <= 0.75 ((head_dim - 2) / head_dim) or 1 to rotate all");
  // The baseline's head_dim 64: 0.01 rotates nothing, 0.03125 one pair.
  TrainSpec base;
  base.rope_fraction = 0.01;
  EXPECT_NE(ValidateTrainSpec(base).message().find("rotates 0 of the head_dim = 64 dims"), std::string::npos)
      << ValidateTrainSpec(base).message();
  base.rope_fraction = 0.03125;
  EXPECT_TRUE(ValidateTrainSpec(base).ok());
  EXPECT_EQ(RopeDims(base), 2);
  // Without RoPE the fraction rotates nothing by design: no error.
  s.pos_scheme = "alibi";
  EXPECT_TRUE(ValidateTrainSpec(s).ok()) << ValidateTrainSpec(s).message();
  EXPECT_EQ(RopeDims(s), 0);
}

TEST(PositionTest, AlibiBiasIsMinusSlopeTimesDistanceWithGeometricSlopes) {
  // Press et al.: H a power of two -> 2^(-8/H), 2^(-16/H), ...; H = 6 -> the 4 slopes of H = 4,
  // then slopes 1 and 3 (0-based 0 and 2) of H = 8; H = 12 -> the 8 of H = 8, then 0, 2, 4, 6 of 16.
  const std::vector<std::pair<int64_t, std::vector<double>>> cases = {
      {1, {std::pow(2.0, -8)}},
      {4, {std::pow(2.0, -2), std::pow(2.0, -4), std::pow(2.0, -6), std::pow(2.0, -8)}},
      {8, {std::pow(2.0, -1), std::pow(2.0, -2), std::pow(2.0, -3), std::pow(2.0, -4), std::pow(2.0, -5),
           std::pow(2.0, -6), std::pow(2.0, -7), std::pow(2.0, -8)}},
      {6, {std::pow(2.0, -2), std::pow(2.0, -4), std::pow(2.0, -6), std::pow(2.0, -8), std::pow(2.0, -1),
           std::pow(2.0, -3)}},
      {12, {std::pow(2.0, -1), std::pow(2.0, -2), std::pow(2.0, -3), std::pow(2.0, -4), std::pow(2.0, -5),
            std::pow(2.0, -6), std::pow(2.0, -7), std::pow(2.0, -8), std::pow(2.0, -0.5), std::pow(2.0, -1.5),
            std::pow(2.0, -2.5), std::pow(2.0, -3.5)}},
  };
  const int64_t t = 9;
  for (const auto& [heads, slopes] : cases) {
    auto bias = AlibiBias(heads, t);
    ASSERT_EQ(bias.sizes(), torch::IntArrayRef({1, heads, t, t}));
    ASSERT_EQ(bias.scalar_type(), torch::kFloat32);
    auto acc = bias.accessor<float, 4>();
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < t; ++j) {
          const float want = j <= i ? static_cast<float>(-slopes[h] * static_cast<double>(i - j))
                                    : -std::numeric_limits<float>::infinity();
          ASSERT_EQ(acc[0][h][i][j], want) << "H " << heads << " head " << h << " i " << i << " j " << j;
        }
      }
    }
  }
}

TEST(PositionTest, AlibiModelDiffersFromNoneExactlyWhereTheBiasIsNonZero) {
  // Same weights: at position 0 the ALiBi row is [0, -inf, ...], the causal mask itself, so
  // the outputs agree there; from position 1 on the bias is applied and they differ.
  TrainSpec s = Tiny(), n = Tiny();
  s.pos_scheme = "alibi";
  n.pos_scheme = "none";
  Gpt a = Perturbed(s, 42), b = Perturbed(n, 42);
  auto x = torch::randint(1024, {2, 16}, torch::kInt64);
  auto la = a->Logits(x), lb = b->Logits(x);
  using torch::indexing::Slice;
  // Position 0 attends to itself only: no bias to apply, identical.
  EXPECT_LT((la.index({Slice(), 0}) - lb.index({Slice(), 0})).abs().max().item<double>(), 1e-12);
  EXPECT_GT((la.index({Slice(), Slice(1, 16)}) - lb.index({Slice(), Slice(1, 16)})).abs().max().item<double>(), 1e-4);
}

TEST(PositionTest, EverySchemeIsCausalAtEveryPosition) {
  using torch::indexing::Slice;
  const std::vector<std::pair<std::string, std::function<void(TrainSpec&)>>> schemes = {
      {"rope", [](TrainSpec&) {}},
      {"rope_half", [](TrainSpec& s) { s.rope_fraction = 0.5; }},
      {"alibi", [](TrainSpec& s) { s.pos_scheme = "alibi"; }},
      {"none", [](TrainSpec& s) { s.pos_scheme = "none"; }},
  };
  const int64_t t = 20;
  for (const auto& [name, apply] : schemes) {
    TrainSpec s = Tiny();
    s.seq_len = t;
    apply(s);
    Gpt m = Perturbed(s, 43);
    torch::manual_seed(44);
    auto x = torch::randint(1024, {2, t}, torch::kInt64);
    auto base = m->Logits(x);
    for (int64_t p = 0; p + 1 < t; ++p) {
      // Every token after p replaced: outputs at <= p unchanged, bit for bit; at p + 1 changed.
      auto y = x.clone();
      y.index_put_({Slice(), Slice(p + 1, t)}, (x.index({Slice(), Slice(p + 1, t)}) + 1 +
                                                 torch::randint(1022, {2, t - p - 1}, torch::kInt64)) % 1024);
      auto out = m->Logits(y);
      ASSERT_TRUE(torch::equal(base.index({Slice(), Slice(0, p + 1)}), out.index({Slice(), Slice(0, p + 1)})))
          << name << ": an output at <= " << p << " moved with later tokens";
      EXPECT_GT((base.index({Slice(), p + 1}) - out.index({Slice(), p + 1})).abs().max().item<double>(), 1e-6)
          << name << " position " << p + 1;
    }
  }
}

// --- SSM across scan chunks --------------------------------------------------

TEST(SsmTest, ChunkedScanWithItsOwnChunkLengthEqualsSequentialOverManyChunks) {
  // Per-step decays up to 6 at every time: the automatic chunks are 10 long, so 3, 3 + 1 and
  // 5.5 chunks.
  torch::manual_seed(23);
  const int64_t b = 2, d = 5, n = 3;
  using torch::indexing::Slice;
  for (int64_t t : {30, 31, 55}) {
    auto u = torch::randn({b, t, d});
    auto dt = torch::rand({b, t, d}) * 0.5 + 0.5;               // (0.5, 1]
    auto A = -(torch::rand({d, n}) * 5 + 1);                    // [-6, -1)
    A.index_put_({0, 0}, -6.0);
    dt.index_put_({0, Slice(), 0}, 1.0);                         // a step of exactly 6 at every time
    const auto lens = ScanChunkLengths(StepsOf(dt, A), 0);
    ASSERT_EQ(lens, Repeat(10, t / 10, t % 10)) << "t " << t;
    auto B = torch::randn({b, t, n}), C = torch::randn({b, t, n});
    auto ref = SelectiveScanSequential(u, dt, A, B, C);
    auto y = SelectiveScan(u, dt, A, B, C);
    EXPECT_LT((y - ref).abs().max().item<float>(), 1e-5) << "t " << t;
  }
}

TEST(SsmTest, ScanIsCausalAcrossChunkBoundaries) {
  // Chunks of at most 4 over 17 steps (5 chunks): a change of any input at step p moves no
  // output before p, bit for bit, and moves the output at p, also at the chunk edges, also
  // when the change is to Δ (from p on) and cuts the chunks from p on differently.
  torch::manual_seed(24);
  const int64_t b = 1, t = 17, d = 4, n = 3, len = 4;
  auto u = torch::randn({b, t, d}), dt = torch::softplus(torch::randn({b, t, d}));
  auto A = -torch::exp(torch::randn({d, n})), B = torch::randn({b, t, n}), C = torch::randn({b, t, n});
  ASSERT_EQ(ScanChunkLengths(StepsOf(dt, A), len), Repeat(len, 4, 1));
  auto y = SelectiveScan(u, dt, A, B, C, len);
  using torch::indexing::Slice;
  for (int64_t p : {3, 4, 5, 8, 11, 12, 16}) {
    for (int which = 0; which < 4; ++which) {  // u, B, C, dt at step p
      auto u2 = u.clone(), B2 = B.clone(), C2 = C.clone(), dt2 = dt.clone();
      auto& z = which == 0 ? u2 : which == 1 ? B2 : which == 2 ? C2 : dt2;
      if (which < 3) {
        z.index_put_({Slice(), p}, z.index({Slice(), p}) + 1.0);
      } else {  // Δ + 20 from p on: steps at the clamp, chunks of 3 from p on
        z.index_put_({Slice(), Slice(p, t)}, z.index({Slice(), Slice(p, t)}) + 20.0);
        if (p < t - 1) {  // (step 16 is a chunk of its own either way)
          ASSERT_NE(ScanChunkLengths(StepsOf(dt2, A), len), Repeat(len, 4, 1)) << "a large Δ from " << p << " re-chunks";
        }
      }
      auto y2 = SelectiveScan(u2, dt2, A, B2, C2, len);
      EXPECT_TRUE(torch::equal(y.index({Slice(), Slice(0, p)}), y2.index({Slice(), Slice(0, p)})))
          << "input " << which << " at " << p;
      EXPECT_GT((y.index({Slice(), p}) - y2.index({Slice(), p})).abs().max().item<float>(), 1e-6)
          << "input " << which << " at " << p;
    }
  }
}

TEST(SsmTest, ALaterStepThatReChunksTheScanLeavesEarlierOutputsBitIdentical) {
  // The automatic chunks follow the largest step Δ·|A| at each time (over all rows), cut front
  // to back: a large Δ at step p re-chunks the scan from p on (one chunk of 17 -> chunks of 3),
  // and every output before p stays bit for bit as it was, in both rows. Later outputs of the
  // other row may move by rounding (its chunks change too), not more.
  torch::manual_seed(25);
  const int64_t b = 2, t = 17, d = 4, n = 3;
  auto u = torch::randn({b, t, d}), dt = torch::rand({b, t, d}) * 0.2 + 0.1;
  auto A = -(torch::rand({d, n}) * 4 + 1), B = torch::randn({b, t, n}), C = torch::randn({b, t, n});
  ASSERT_EQ(ScanChunkLengths(StepsOf(dt, A), 0), Repeat(t, 1));
  auto y = SelectiveScan(u, dt, A, B, C);
  using torch::indexing::Slice;
  for (int64_t p : {4, 9, 13}) {
    auto dt2 = dt.clone();
    dt2.index_put_({1, Slice(p, t)}, 5.0);  // row 1 only, from p on: steps near the clamp
    const auto lens = ScanChunkLengths(StepsOf(dt2, A), 0);
    ASSERT_GT(lens.size(), 1u) << p;
    ASSERT_GT(lens.front(), p) << p;  // the first edge falls after p: the small steps before fit
    auto y2 = SelectiveScan(u, dt2, A, B, C);
    auto ref2 = SelectiveScanSequential(u, dt2, A, B, C);
    EXPECT_LT((y2 - ref2).abs().max().item<float>(), 1e-5) << p;
    EXPECT_TRUE(torch::equal(y.index({Slice(), Slice(0, p)}), y2.index({Slice(), Slice(0, p)}))) << p;
    EXPECT_LT((y.index({0}) - y2.index({0})).abs().max().item<float>(), 1e-5) << "row 0, " << p;
    EXPECT_GT((y.index({1, p}) - y2.index({1, p})).abs().max().item<float>(), 1e-3) << p;
  }
}

TEST(SsmTest, SsmModelIsCausalAcrossChunkBoundaries) {
  // An SSM model whose Δ is fixed per channel (dt_proj weight 0, bias softplus⁻¹(0.45)) and A
  // down to -12: the per-step decay tops at 5.4, so every layer scans in chunks of 11, and a
  // sequence of 40 spans 4 of them. Changing token p moves no logit before p, bit for bit.
  TrainSpec s = Tiny();
  s.mixer = "ssm";
  s.seq_len = 40;
  Gpt m = Perturbed(s, 45, torch::kFloat32);
  const int64_t t = 40;
  for (const auto& blk : *m->blocks) {
    torch::NoGradGuard ng;
    auto& ssm = *blk->as<BlockImpl>()->ssm;
    ssm.dt_proj->weight.zero_();
    ssm.dt_proj->bias.fill_(std::log(std::expm1(0.45)));
    ssm.A_log.copy_(torch::log(torch::linspace(1.0, 12.0, ssm.state)).repeat({ssm.inner, 1}));
    auto step = -(torch::softplus(ssm.dt_proj->bias).unsqueeze(-1) * -torch::exp(ssm.A_log))
                     .clamp_min(-kScanMinLogDecay)
                     .min()
                     .item<double>();
    ASSERT_EQ(ScanChunkLengths(std::vector<double>(t, step), 0), Repeat(11, 3, 7)) << step;
  }
  torch::manual_seed(46);
  auto x = torch::randint(1024, {2, t}, torch::kInt64);
  auto base = m->Logits(x);
  for (int64_t p : {5, 10, 11, 12, 21, 22, 23, 33, 39}) {
    auto [before, at] = ChangeFromToken(m, x, base, p);
    EXPECT_EQ(before, 0.0) << "token " << p;
    EXPECT_GT(at, 1e-5) << "token " << p;
  }
}

TEST(SsmTest, SsmModelWithInputDependentStepsIsCausalOverLongSequences) {
  // Trained-like Δ (input-dependent, larger than at init) over 96 tokens: many chunks, whose
  // edges move with the tokens. The edges are cut from earlier steps only, so a change of
  // token p leaves every earlier logit bit for bit as it was.
  TrainSpec s = Tiny();
  s.mixer = "ssm";
  s.seq_len = 96;
  Gpt m = Perturbed(s, 47, torch::kFloat32);
  for (const auto& blk : *m->blocks) {
    torch::NoGradGuard ng;
    blk->as<BlockImpl>()->ssm->dt_proj->bias.add_(2.0);  // Δ ~ 0.1-1
  }
  const int64_t t = 96;
  torch::manual_seed(48);
  auto x = torch::randint(1024, {2, t}, torch::kInt64);
  auto base = m->Logits(x);
  for (int64_t p : {1, 20, 47, 48, 70, 95}) {
    auto [before, at] = ChangeFromToken(m, x, base, p);
    EXPECT_EQ(before, 0.0) << "token " << p;
    EXPECT_GT(at, 1e-5) << "token " << p;
  }
}

}  // namespace
}  // namespace caddie::model
