// Sweep files: the YAML a researcher writes, converted to the sweep JSON of
// docs/contracts.md ("Sweep JSON") plus the scheduling fields of
// caddie.v1.SweepSpec, and checked completely before anything is submitted.
//
// A check reports EVERY problem at once, each with the line and column of the
// YAML node it concerns: syntax errors, unknown keys (with the closest valid
// key), wrong types, values outside their allowed range (naming the range),
// and trainer-spec inconsistencies of each expanded job (via ParseTrainSpec).
//
// Thread-safe: free functions and value types.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "caddie/v1/types.pb.h"
#include "common/sweep.h"

namespace caddie::cli {

// 1-based position in the YAML text; line 0 = unknown (e.g. a whole-file problem).
struct SourcePos {
  int line = 0;
  int column = 0;
};

struct SweepIssue {
  SourcePos pos;
  std::string key;      // dotted path of the offending node ("base.qat_bits", "axes.loops[1]")
  std::string message;  // names the value and what is allowed
};

// One job of the expanded sweep (index, params, spec), as the controller runs it.
using SweepJobPreview = caddie::SweepJob;

struct SweepCheck {
  std::string path;                  // file name used in messages
  std::vector<SweepIssue> errors;    // empty = valid
  std::vector<SweepIssue> warnings;  // valid but probably unintended
  caddie::v1::SweepSpec spec;        // name, sweep_json and scheduling fields (valid only if no errors)
  nlohmann::json sweep_json;         // the same sweep JSON, parsed
  std::vector<SweepJobPreview> jobs; // every job, when the sweep itself is valid

  bool ok() const { return errors.empty(); }
};

// Top-level keys of a sweep file, with their meaning (for help and suggestions).
const std::vector<std::pair<std::string, std::string>>& SweepFileKeys();

// Parses and checks YAML text. `path` only names the file in messages.
SweepCheck CheckSweepText(const std::string& yaml_text, const std::string& path);

// Reads `path` and checks it; an unreadable file is one error at line 0.
SweepCheck CheckSweepFile(const std::string& path);

// "FILE:LINE:COL: error: KEY: MESSAGE" lines, one per issue (warnings after errors).
std::string FormatIssues(const SweepCheck& check, bool color);

// The closest of `candidates` to `word` by edit distance, or "" when none is
// reasonably close (more than half of the word would have to change).
std::string ClosestKey(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace caddie::cli
