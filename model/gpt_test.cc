// Unit tests of the baseline GPT, Muon and val_bpb, in process.
#include "model/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "common/core/shard_format.h"

namespace caddie::model {
namespace {

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

}  // namespace
}  // namespace caddie::model
