#include "common/core/train_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace caddie {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const std::string& text) {
  auto r = ParseTrainSpecText(text);
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.status().message();
}

TEST(TrainSpecTest, EmptyObjectIsTheBaseline) {
  auto r = ParseTrainSpecText("{}");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->vocab_size, 1024);
  EXPECT_EQ(r->num_layers, 9);
  EXPECT_EQ(r->model_dim, 512);
  EXPECT_EQ(r->num_heads, 8);
  EXPECT_EQ(r->num_kv_heads, 4);
  EXPECT_EQ(r->mlp_mult, 2);
  EXPECT_TRUE(r->tie_embeddings);
  EXPECT_DOUBLE_EQ(r->tied_embed_init_std, 0.005);
  EXPECT_DOUBLE_EQ(r->logit_softcap, 30.0);
  EXPECT_EQ(r->train_batch_tokens, 524288);
  EXPECT_EQ(r->seq_len, 1024);
  EXPECT_DOUBLE_EQ(r->matrix_lr, 0.04);
  EXPECT_DOUBLE_EQ(r->muon_momentum_warmup_start, 0.85);
  EXPECT_EQ(r->muon_backend_steps, 5);
  EXPECT_DOUBLE_EQ(r->max_wallclock_seconds, 600.0);
  EXPECT_TRUE(NonDefaultKeys(*r).empty());
}

TEST(TrainSpecTest, ParsesValuesAndRoundTripsThroughJson) {
  auto r = ParseTrainSpecText(
      R"({"num_layers": 2, "model_dim": 128, "matrix_lr": 0.02, "compression": "zlib",
          "tie_embeddings": false, "iterations": 1e3, "seq_len_schedule": "256:0.25,1024"})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->num_layers, 2);
  EXPECT_EQ(r->iterations, 1000);
  EXPECT_FALSE(r->tie_embeddings);
  EXPECT_EQ(r->compression, "zlib");
  auto again = ParseTrainSpec(ToJson(*r));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(ToJson(*again), ToJson(*r));
  EXPECT_THAT(NonDefaultKeys(*r), ::testing::ElementsAre("num_layers", "model_dim", "tie_embeddings",
                                                         "iterations", "matrix_lr", "compression",
                                                         "seq_len_schedule"));
  EXPECT_EQ(ToJson(*r).size(), TrainSpecKeys().size());
}

TEST(TrainSpecTest, UnknownKeySuggestsClosest) {
  EXPECT_EQ(ErrorOf(R"({"num_layer": 3})"),
            "unknown spec key \"num_layer\" (did you mean \"num_layers\"?)");
  EXPECT_THAT(ErrorOf(R"({"matrix_lrr": 0.1})"), HasSubstr("did you mean \"matrix_lr\""));
}

TEST(TrainSpecTest, WrongTypesNameTheKey) {
  EXPECT_EQ(ErrorOf(R"({"num_layers": "nine"})"),
            "spec key \"num_layers\" must be an integer, got \"nine\"");
  EXPECT_EQ(ErrorOf(R"({"num_layers": 2.5})"), "spec key \"num_layers\" must be an integer, got 2.5");
  EXPECT_EQ(ErrorOf(R"({"matrix_lr": true})"), "spec key \"matrix_lr\" must be a number, got true");
  EXPECT_EQ(ErrorOf(R"({"tie_embeddings": 1})"),
            "spec key \"tie_embeddings\" must be true or false, got 1");
  EXPECT_EQ(ErrorOf(R"({"mixer": "rnn"})"),
            "spec key \"mixer\" = \"rnn\" is not one of attention | ssm");
  EXPECT_EQ(ErrorOf("[1,2]"), "spec must be a JSON object, got array");
  EXPECT_EQ(ErrorOf("{not json"), "spec is not valid JSON");
}

TEST(TrainSpecTest, OutOfRangeNamesKeyAndRange) {
  EXPECT_EQ(ErrorOf(R"({"num_layers": 0})"), "spec key \"num_layers\" = 0 is out of range [1, 256]");
  EXPECT_EQ(ErrorOf(R"({"muon_momentum": 1.5})"),
            "spec key \"muon_momentum\" = 1.5 is out of range [0, 1]");
  EXPECT_EQ(ErrorOf(R"({"qat_bits": 9})"), "spec key \"qat_bits\" = 9 is out of range [0, 8]");
  EXPECT_EQ(ErrorOf(R"({"qat_bits": 1})"), "qat_bits = 1 is out of range: 0 (off) or 2..8");
  EXPECT_EQ(ErrorOf(R"({"loops": 0})"), "spec key \"loops\" = 0 is out of range [1, 64]");
}

TEST(TrainSpecTest, CrossKeyConstraints) {
  EXPECT_EQ(ErrorOf(R"({"num_heads": 3})"), "num_heads = 3 must divide model_dim = 512");
  EXPECT_EQ(ErrorOf(R"({"num_kv_heads": 3})"), "num_kv_heads = 3 must divide num_heads = 8");
  EXPECT_EQ(ErrorOf(R"({"model_dim": 24, "num_heads": 8, "num_kv_heads": 1})"),
            "head_dim = model_dim / num_heads = 3 must be even (RoPE rotates pairs)");
  EXPECT_EQ(ErrorOf(R"({"embed_dim": 1024})"), "embed_dim = 1024 must be <= model_dim = 512");
  EXPECT_EQ(ErrorOf(R"({"num_layers": 3, "mixer_pattern": "AXA"})"),
            "mixer_pattern \"AXA\" has unknown mixer letter 'X' (A = attention, S = ssm)");
  EXPECT_EQ(ErrorOf(R"({"num_layers": 3, "mixer_pattern": "AS"})"),
            "mixer_pattern \"AS\" has 2 letters; num_layers = 3");
  EXPECT_EQ(ErrorOf(R"({"recur_layers": "5-4"})"),
            "spec key \"recur_layers\" = \"5-4\" must be \"A-B\" with 0 <= A <= B (layer indices)");
  EXPECT_THAT(ErrorOf(R"({"recur_layers": "4-9"})"), HasSubstr("reaches past the last layer"));
  EXPECT_EQ(ErrorOf(R"({"loop_scalars": true})"),
            "loop_scalars = true needs depth recurrence: loops = 1 must be >= 2");
  EXPECT_EQ(ErrorOf(R"({"loop_embedding": true, "unique_blocks": 3})"),
            "loop_embedding = true needs depth recurrence: loops = 1 must be >= 2");
  EXPECT_TRUE(ParseTrainSpecText(R"({"loop_embedding": true, "loops": 2, "loop_scalars": true})").ok());
  EXPECT_THAT(ErrorOf(R"({"seq_len_schedule": "300:0.5,1024"})"),
              HasSubstr("length 300 must divide seq_len = 1024"));
  EXPECT_THAT(ErrorOf(R"({"seq_len_schedule": "256:x"})"), HasSubstr("bad stage \"256:x\""));
  // A sequence-length warm-up: a stage shorter than the one before is refused, naming both.
  EXPECT_EQ(ErrorOf(R"({"seq_len_schedule": "512:0.5,256"})"),
            "spec key \"seq_len_schedule\": stage 2 \"256\" is shorter than stage 1 \"512:0.5\" "
            "(a warm-up: LEN must not fall)");
  EXPECT_TRUE(ParseTrainSpecText(R"({"seq_len_schedule": "256:0.3,256:0.6,1024"})").ok());
  // mixer_pattern must fit the shared blocks (layer i runs block i % unique_blocks).
  EXPECT_EQ(ErrorOf(R"({"num_layers": 3, "unique_blocks": 1, "mixer_pattern": "SSA"})"),
            "mixer_pattern \"SSA\" does not fit unique_blocks = 1: layer 2 is 'A' but runs block 0, "
            "which is 'S' (letter i must equal letter i % unique_blocks)");
  EXPECT_TRUE(ParseTrainSpecText(R"({"num_layers": 3, "unique_blocks": 1, "mixer_pattern": "SSS"})").ok());
  // A rope_fraction that rounds to no rotated pair (head_dim 512 / 8 = 64).
  EXPECT_THAT(ErrorOf(R"({"rope_fraction": 0.01})"),
              HasSubstr("rope_fraction = 0.01 rotates 0 of the head_dim = 64 dims"));
  // NaN compares false both ways: it must not slip past the increasing-fraction check.
  EXPECT_THAT(ErrorOf(R"({"seq_len_schedule": "16:0.5,32:nan,64"})"),
              HasSubstr("FRAC increasing within (0, 1]"));
  // The scale floor defaults to the reference's 1/127 and stays within [0, 1].
  EXPECT_DOUBLE_EQ(ParseTrainSpecText("{}")->quant_scale_floor, 1.0 / 127.0);
  EXPECT_DOUBLE_EQ(ParseTrainSpecText(R"({"quant_scale_floor": 0})")->quant_scale_floor, 0.0);
  EXPECT_THAT(ErrorOf(R"({"quant_scale_floor": 2})"), HasSubstr("quant_scale_floor"));
  EXPECT_THAT(ErrorOf(R"({"quant_scale_floor": -0.1})"), HasSubstr("quant_scale_floor"));
}

// QAT trains for one width; export uses it unless export_bits says otherwise.
TEST(TrainSpecTest, ExportBitsFollowQatBitsUnlessGiven) {
  auto r = ParseTrainSpecText("{}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->export_bits, 8);  // no QAT: the baseline's int8
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    r = ParseTrainSpecText(R"({"qat_bits": )" + std::to_string(bits) + "}");
    ASSERT_TRUE(r.ok()) << bits << ": " << r.status().message();
    EXPECT_EQ(r->export_bits, bits);
    EXPECT_EQ(ToJson(*r)["export_bits"], bits);  // the resolved spec says what export does
  }
  r = ParseTrainSpecText(R"({"qat_bits": 4, "export_bits": 6})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->export_bits, 6);  // explicit wins
  r = ParseTrainSpecText(R"({"qat_bits": 4, "export_bits": 8})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->export_bits, 8);  // also when it is the default value
  r = ParseTrainSpecText(R"({"qat_bits": 0, "export_bits": 4})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->export_bits, 4);
  r = ParseTrainSpecText(R"({"qat_bits": 0})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->export_bits, 8);
  // The resolved spec parses back to the same spec, and its diff names both keys.
  r = ParseTrainSpecText(R"({"qat_bits": 4})");
  ASSERT_TRUE(r.ok());
  auto again = ParseTrainSpec(ToJson(*r));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(ToJson(*again), ToJson(*r));
  EXPECT_THAT(NonDefaultKeys(*r), ::testing::ElementsAre("qat_bits", "export_bits"));
  // 7 bits trains but does not export: the message names both keys.
  EXPECT_EQ(ErrorOf(R"({"qat_bits": 7})"),
            "qat_bits = 7 needs export_bits: export_bits follows qat_bits when it is not set, and 7 "
            "is not an export width (one of 2,3,4,5,6,8)");
  r = ParseTrainSpecText(R"({"qat_bits": 7, "export_bits": 8})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->export_bits, 8);
}

TEST(TrainSpecTest, ValidateCatchesSpecsBuiltInCode) {
  TrainSpec s;
  s.num_layers = 0;
  EXPECT_EQ(ValidateTrainSpec(s).message(), "spec key \"num_layers\" = 0 is out of range [1, 256]");
  s = TrainSpec();
  EXPECT_TRUE(ValidateTrainSpec(s).ok());
}

TEST(TrainSpecTest, SeqLenScheduleParses) {
  auto st = ParseSeqLenSchedule("128:0.2,512:0.6,1024");
  ASSERT_TRUE(st.ok()) << st.status().message();
  ASSERT_EQ(st->size(), 3u);
  EXPECT_EQ((*st)[0].seq_len, 128);
  EXPECT_DOUBLE_EQ((*st)[1].until_frac, 0.6);
  EXPECT_DOUBLE_EQ((*st)[2].until_frac, 1.0);
  auto r = ParseRecurLayers("4-5");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 4);
  EXPECT_EQ(r->second, 5);
}

}  // namespace
}  // namespace caddie
