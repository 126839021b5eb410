#include "controller/early_stopping.h"

#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace caddie::controller {
namespace {

std::set<std::string> Ids(const std::vector<StopDecision>& d) {
  std::set<std::string> s;
  for (const auto& x : d) s.insert(x.job_id);
  return s;
}

TEST(EarlyStoppingTest, AshaStopsTheWorseHalfAtARung) {
  EarlyStoppingConfig c;
  c.type = "asha";
  c.grace_steps = 100;
  c.reduction_factor = 2;
  c.min_trials = 8;
  std::vector<ValPoint> pts;
  // Eight jobs; job k has val_bpb 1.0 + 0.1·k at step 100.
  for (int k = 0; k < 8; ++k) pts.push_back({absl::StrCat("j", k), 100, 1.0 + 0.1 * k, v1::JOB_STATE_RUNNING});
  // Seven reported: below min_trials, nobody stops.
  std::vector<ValPoint> seven(pts.begin(), pts.begin() + 7);
  EXPECT_TRUE(DecideEarlyStops(c, seven).empty());
  auto d = DecideEarlyStops(c, pts);
  EXPECT_EQ(Ids(d), (std::set<std::string>{"j4", "j5", "j6", "j7"}));
  EXPECT_NE(d[0].reason.find("early_stopped (asha)"), std::string::npos) << d[0].reason;
  EXPECT_NE(d[0].reason.find("best 4 of 8"), std::string::npos) << d[0].reason;
}

TEST(EarlyStoppingTest, AshaIgnoresStepsBeforeGraceAndFinishedJobs) {
  EarlyStoppingConfig c;
  c.type = "asha";
  c.grace_steps = 100;
  c.reduction_factor = 2;
  std::vector<ValPoint> pts = {{"a", 50, 1.0, v1::JOB_STATE_RUNNING}, {"b", 50, 3.0, v1::JOB_STATE_RUNNING}};
  EXPECT_TRUE(DecideEarlyStops(c, pts).empty());
  pts = {{"a", 100, 1.0, v1::JOB_STATE_RUNNING}, {"b", 120, 3.0, v1::JOB_STATE_SUCCEEDED}};
  EXPECT_TRUE(DecideEarlyStops(c, pts).empty());  // the worse one already finished
  pts = {{"a", 100, 1.0, v1::JOB_STATE_SUCCEEDED}, {"b", 120, 3.0, v1::JOB_STATE_RUNNING}};
  EXPECT_EQ(Ids(DecideEarlyStops(c, pts)), (std::set<std::string>{"b"}));
}

TEST(EarlyStoppingTest, MedianRuleStopsJobsWorseThanTheMedian) {
  EarlyStoppingConfig c;
  c.type = "median";
  c.grace_steps = 10;
  std::vector<ValPoint> pts = {{"a", 20, 1.0, v1::JOB_STATE_RUNNING},
                               {"b", 20, 1.1, v1::JOB_STATE_RUNNING},
                               {"c", 20, 1.2, v1::JOB_STATE_RUNNING},
                               {"d", 20, 2.0, v1::JOB_STATE_RUNNING}};
  auto d = DecideEarlyStops(c, pts);
  // d: median of {1.0,1.1,1.2} = 1.1 < 2.0; c: median of {1.0,1.1,2.0} = 1.1 < 1.2.
  EXPECT_EQ(Ids(d), (std::set<std::string>{"c", "d"}));
  c.type = "";
  EXPECT_TRUE(DecideEarlyStops(c, pts).empty());
}

}  // namespace
}  // namespace caddie::controller
