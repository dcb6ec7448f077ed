// The Hub client against a local stand-in (scripts/fake_hub.py on 127.0.0.1, started here on a free
// port and killed at the end): a model downloaded into the Hub cache layout and used by
// `mor generate --base_model org/name`, a parquet dataset repo, an interrupted download resumed with
// HTTP Range, 401/404 as one clear line, a checksum mismatch leaving nothing in the cache, and
// HF_HUB_OFFLINE=1 making no request (the server logs every request).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "helpers.h"
#include "hub.h"

namespace fs = std::filesystem;
using mor::test::read_file;
using mor::test::run_mor;
using mor::test::scratch_dir;
using mor::test::write_file;

namespace {

// Sets environment variables for the scope and restores them after (tests share one process).
class EnvGuard {
 public:
  void set(const std::string& k, const std::optional<std::string>& v) {
    if (!saved_.count(k)) {
      const char* old = std::getenv(k.c_str());
      saved_[k] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (v) ::setenv(k.c_str(), v->c_str(), 1);
    else ::unsetenv(k.c_str());
  }
  ~EnvGuard() {
    for (auto& [k, v] : saved_) {
      if (v) ::setenv(k.c_str(), v->c_str(), 1);
      else ::unsetenv(k.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

std::string golden_model() { return mor::test::source_dir() + "/tests/golden/mola_tiny/model"; }

// A fake Hub serving ROOT: org/tiny (a tiny random LLaMA with stories260K's tokenizer, plus a
// README and a .bin that a model download skips), org/private (the same, needs the token) and the
// dataset org/sqa (parquet files under data/).
class FakeHub {
 public:
  explicit FakeHub(const std::string& name, const std::vector<std::string>& extra = {}) {
    dir_ = scratch_dir(name);
    root_ = dir_ + "/root";
    for (const char* repo : {"models/org/tiny", "models/org/private"}) {
      const std::string d = root_ + "/" + repo;
      fs::create_directories(d);
      fs::copy_file(golden_model() + "/config.json", d + "/config.json");
      fs::copy_file(golden_model() + "/model.safetensors", d + "/model.safetensors");
      fs::copy_file(mor::test::testdata_dir() + "/stories260K/tokenizer.model", d + "/tokenizer.model");
      write_file(d + "/README.md", "# a tiny random model\n");
      write_file(d + "/pytorch_model.bin", std::string(4096, 'x'));
    }
    const std::string ds = root_ + "/datasets/org/sqa";
    fs::create_directories(ds + "/data");
    for (const char* split : {"train", "validation", "test"})
      write_file(ds + "/data/" + std::string(split) + "-00000-of-00001.parquet", std::string("PAR1") + split + std::string(3000, 's') + "PAR1");
    write_file(ds + "/README.md", "---\ndataset_info: {}\n---\n");
    // derek-thomas/ScienceQA as the Hub serves it: the parquet fixture of the release fixture's rows
    // (tests/fixtures/parquet/scienceqa, written with parquet-wasm) under data/, and a README.
    const std::string sqa = root_ + "/datasets/derek-thomas/ScienceQA";
    fs::create_directories(sqa + "/data");
    for (const auto& e : fs::directory_iterator(mor::test::source_dir() + "/tests/fixtures/parquet/scienceqa"))
      fs::copy_file(e.path(), sqa + "/data/" + e.path().filename().string());
    write_file(sqa + "/README.md", "# ScienceQA\n");
    log_ = dir_ + "/requests.log";
    write_file(log_, "");
    const std::string port_file = dir_ + "/port";
    std::vector<std::string> argv = {"python3", mor::test::source_dir() + "/scripts/fake_hub.py", "--root", root_,
                                     "--port-file", port_file, "--log", log_, "--private", "org/private"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execvp("python3", a.data());
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !fs::exists(port_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(port_file)) throw std::runtime_error("scripts/fake_hub.py did not start");
    endpoint_ = "http://127.0.0.1:" + read_file(port_file);
  }
  ~FakeHub() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  const std::string& endpoint() const { return endpoint_; }
  std::string repo_file(const std::string& repo, const std::string& f) const { return root_ + "/" + repo + "/" + f; }
  std::vector<std::string> requests() const {
    std::vector<std::string> out;
    std::istringstream in(read_file(log_));
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  // The env a client of this hub runs with: endpoint, a fresh cache, no token, not offline.
  void point(EnvGuard& env, const std::string& cache) const {
    env.set("HF_ENDPOINT", endpoint_);
    env.set("HF_HUB_CACHE", cache);
    env.set("HF_HOME", dir_ + "/hf_home");  // no token file from the machine's own login
    env.set("HF_TOKEN", std::nullopt);
    env.set("HF_TOKEN_PATH", std::nullopt);
    env.set("HF_HUB_OFFLINE", std::nullopt);
    env.set("MOR_HUB_PROGRESS", std::nullopt);
  }

 private:
  std::string dir_, root_, log_, endpoint_;
  pid_t pid_ = -1;
};

size_t count_with(const std::vector<std::string>& lines, const std::string& needle) {
  size_t n = 0;
  for (const auto& l : lines) n += l.find(needle) != std::string::npos;
  return n;
}

}  // namespace

TEST(Hub, GlobsHashesAndEnvironment) {
  EXPECT_TRUE(mor::hub_glob_match("*.json", "config.json"));
  EXPECT_TRUE(mor::hub_glob_match("*.json", "sub/dir/x.json"));  // fnmatch: '*' crosses '/'
  EXPECT_TRUE(mor::hub_glob_match("data/*.parquet", "data/train-00000-of-00001.parquet"));
  EXPECT_FALSE(mor::hub_glob_match("*.safetensors", "model.safetensors.index.json"));
  const std::string d = scratch_dir("hub-pure");
  write_file(d + "/abc", "abc");
  EXPECT_EQ(mor::sha256_file_hex(d + "/abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  write_file(d + "/hello", "hello\n");  // `echo hello | git hash-object --stdin`
  EXPECT_EQ(mor::git_blob_sha1_file_hex(d + "/hello"), "ce013625030ba8dba906f756967f9e9ca394464a");
  EXPECT_TRUE(mor::looks_like_repo_id("NousResearch/Llama-2-7b-hf"));
  EXPECT_TRUE(mor::looks_like_repo_id("gpt2"));
  EXPECT_FALSE(mor::looks_like_repo_id("./model"));
  EXPECT_FALSE(mor::looks_like_repo_id("/abs/model"));
  EXPECT_FALSE(mor::looks_like_repo_id("a/b/c"));
  EnvGuard env;
  for (const char* v : {"1", "ON", "yes", "True"}) {
    env.set("HF_HUB_OFFLINE", v);
    EXPECT_TRUE(mor::hub_offline()) << v;
  }
  for (const char* v : {"0", "off", "", "no"}) {
    env.set("HF_HUB_OFFLINE", v);
    EXPECT_FALSE(mor::hub_offline()) << v;
  }
  env.set("HF_ENDPOINT", "http://127.0.0.1:9/");
  EXPECT_EQ(mor::hub_endpoint(), "http://127.0.0.1:9");
  env.set("HF_ENDPOINT", std::nullopt);
  EXPECT_EQ(mor::hub_endpoint(), "https://huggingface.co");
  // Token: HF_TOKEN, else $HF_TOKEN_PATH, else $HF_HOME/token (the HF CLI's file), else none.
  env.set("HOME", d);
  env.set("HF_TOKEN", std::nullopt);
  env.set("HF_TOKEN_PATH", std::nullopt);
  env.set("HF_HOME", d + "/home");
  EXPECT_EQ(mor::hub_token(), "");
  fs::create_directories(d + "/home");
  write_file(d + "/home/token", "hf_from_home\n");
  EXPECT_EQ(mor::hub_token(), "hf_from_home");
  write_file(d + "/tok", "  hf_from_path \n");
  env.set("HF_TOKEN_PATH", d + "/tok");
  EXPECT_EQ(mor::hub_token(), "hf_from_path");
  env.set("HF_TOKEN", "hf_env");
  EXPECT_EQ(mor::hub_token(), "hf_env");
  env.set("HF_TOKEN", std::nullopt);
  env.set("HF_TOKEN_PATH", std::nullopt);
  env.set("HF_HOME", std::nullopt);
  fs::create_directories(d + "/.cache/huggingface");
  write_file(d + "/.cache/huggingface/token", "hf_default");
  EXPECT_EQ(mor::hub_token(), "hf_default");
}

TEST(Hub, ModelDownloadedIntoTheCacheLayoutThenUsedByGenerate) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-model");
  EnvGuard env;
  const std::string cache = scratch_dir("hub-model-cache");
  hub.point(env, cache);
  const std::string gen = " --prompt 'Once upon a time' --template none --max_new_tokens 8 --dtype float32 --threads 1";
  auto r = run_mor("generate --base_model org/tiny" + gen);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("downloading org/tiny: model.safetensors"), std::string::npos) << r.err;

  // The layout huggingface_hub writes: refs/main -> commit, snapshot links -> ../../blobs/<etag>.
  const fs::path repo = fs::path(cache) / "models--org--tiny";
  const std::string commit = read_file((repo / "refs" / "main").string());
  ASSERT_EQ(commit.size(), 40u);
  const fs::path snap = repo / "snapshots" / commit;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) {
    ASSERT_TRUE(fs::is_symlink(snap / f)) << f;
    const std::string src = hub.repo_file("models/org/tiny", f);
    const std::string etag = std::string(f) == "config.json" ? mor::git_blob_sha1_file_hex(src) : mor::sha256_file_hex(src);
    EXPECT_EQ(fs::read_symlink(snap / f).string(), "../../blobs/" + etag) << f;
    EXPECT_EQ(read_file((snap / f).string()), read_file(src)) << f;
  }
  // A model needs no README or .bin weights: never requested.
  EXPECT_FALSE(fs::exists(snap / "README.md"));
  EXPECT_FALSE(fs::exists(snap / "pytorch_model.bin"));
  auto reqs = hub.requests();
  EXPECT_EQ(count_with(reqs, "pytorch_model.bin"), 0u);
  for (const auto& e : fs::directory_iterator(repo / "blobs"))
    EXPECT_EQ(e.path().extension(), "") << e.path();  // no .incomplete left

  // The same text as from the folder itself.
  auto local = run_mor("generate --base_model " + snap.string() + gen);
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_EQ(r.out, local.out);
  EXPECT_FALSE(r.out.empty());

  // Again: found in the cache, no request at all.
  const size_t before = hub.requests().size();
  r = run_mor("generate --base_model org/tiny" + gen);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(hub.requests().size(), before);

  // mor download fetches the rest of the repo (README, .bin) into the same snapshot; --include narrows it.
  r = run_mor("download org/tiny --include '*.md'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, snap.string() + "\n");
  EXPECT_TRUE(fs::is_symlink(snap / "README.md"));
  EXPECT_FALSE(fs::exists(snap / "pytorch_model.bin"));
  // Files already in the snapshot are not requested again (only the API and README's HEAD + GET).
  reqs = hub.requests();
  EXPECT_EQ(count_with(std::vector<std::string>(reqs.begin() + before, reqs.end()), "resolve"), 2u);
}

TEST(Hub, DatasetRepoDownloaded) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-dataset");
  EnvGuard env;
  const std::string cache = scratch_dir("hub-dataset-cache");
  hub.point(env, cache);
  env.set("MOR_HUB_PROGRESS", "1");  // the bar without a terminal: one line a second and a final one
  auto r = run_mor("download org/sqa --repo-type dataset --include 'data/*.parquet'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path repo = fs::path(cache) / "datasets--org--sqa";
  const std::string commit = read_file((repo / "refs" / "main").string());
  EXPECT_EQ(r.out, (repo / "snapshots" / commit).string() + "\n");
  for (const char* split : {"train", "validation", "test"}) {
    const std::string f = "data/" + std::string(split) + "-00000-of-00001.parquet";
    const fs::path link = repo / "snapshots" / commit / f;
    ASSERT_TRUE(fs::is_symlink(link)) << f;
    EXPECT_EQ(fs::read_symlink(link).string(), "../../../blobs/" + mor::sha256_file_hex(hub.repo_file("datasets/org/sqa", f)));
    EXPECT_EQ(read_file(link.string()), read_file(hub.repo_file("datasets/org/sqa", f)));
  }
  EXPECT_FALSE(fs::exists(repo / "snapshots" / commit / "README.md"));
  EXPECT_NE(r.err.find("100% |########################| 3.0 kB/3.0 kB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/s"), std::string::npos) << r.err;
  EXPECT_EQ(count_with(hub.requests(), "GET /api/datasets/org/sqa/revision/main"), 1u);
  EXPECT_EQ(count_with(hub.requests(), "HEAD /datasets/org/sqa/resolve/"), 3u);
}

TEST(Hub, InterruptedDownloadResumesWithRange) {
  MOR_REQUIRE_TESTDATA();
  // The server cuts the first response of model.safetensors half-way: mor resumes from that byte.
  FakeHub hub("hub-resume", {"--cut", "model.safetensors"});
  EnvGuard env;
  const std::string cache = scratch_dir("hub-resume-cache");
  hub.point(env, cache);
  const std::string src = hub.repo_file("models/org/tiny", "model.safetensors");
  const int64_t size = int64_t(fs::file_size(src));
  // tokenizer.model was half downloaded by an earlier run that died: its .incomplete is continued.
  const std::string tok_src = hub.repo_file("models/org/tiny", "tokenizer.model");
  const std::string tok_sha = mor::sha256_file_hex(tok_src);
  const fs::path blobs = fs::path(cache) / "models--org--tiny" / "blobs";
  fs::create_directories(blobs);
  write_file((blobs / (tok_sha + ".incomplete")).string(), read_file(tok_src).substr(0, 1000));

  auto r = run_mor("download org/tiny --include '*.safetensors' --include tokenizer.model");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming (attempt 2 of 5)"), std::string::npos) << r.err;
  const std::string snap = r.out.substr(0, r.out.size() - 1);
  EXPECT_EQ(read_file(snap + "/model.safetensors"), read_file(src));
  EXPECT_EQ(read_file(snap + "/tokenizer.model"), read_file(tok_src));
  auto reqs = hub.requests();
  EXPECT_EQ(count_with(reqs, "GET /lfs/model/org/tiny/model.safetensors -"), 1u);
  EXPECT_EQ(count_with(reqs, "GET /lfs/model/org/tiny/model.safetensors bytes=" + std::to_string(size / 2) + "-"), 1u);
  EXPECT_EQ(count_with(reqs, "GET /lfs/model/org/tiny/tokenizer.model bytes=1000-"), 1u);
  EXPECT_EQ(count_with(reqs, "GET /lfs/model/org/tiny/tokenizer.model -"), 0u);
  for (const auto& e : fs::directory_iterator(blobs)) EXPECT_EQ(e.path().extension(), "") << e.path();
}

TEST(Hub, UnauthorizedAndNotFoundAreOneClearLine) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-auth");
  EnvGuard env;
  const std::string cache = scratch_dir("hub-auth-cache");
  hub.point(env, cache);
  const std::string api = hub.endpoint() + "/api/models/org/private/revision/main";
  auto r = run_mor("download org/private");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mor download: error: model 'org/private': 401 Unauthorized from " + api +
                       ": the repo is private or gated, or does not exist; set HF_TOKEN (or log in with "
                       "`huggingface-cli login`) and check the repo id's spelling (a dataset needs --repo-type dataset)\n");
  env.set("HF_TOKEN", "hf_wrong");
  r = run_mor("download org/private");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("401 Unauthorized from " + api + ": the repo is private or gated, or does not exist; the token "
                       "from HF_TOKEN was refused: check it and check the repo id's spelling"),
            std::string::npos) << r.err;
  // The right token, from the HF CLI's token file.
  env.set("HF_TOKEN", std::nullopt);
  const std::string home = scratch_dir("hub-auth-home");
  write_file(home + "/token", "hf_test_token\n");
  env.set("HF_HOME", home);
  r = run_mor("download org/private --include config.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(r.out.substr(0, r.out.size() - 1) + "/config.json"));

  r = run_mor("download org/nope");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mor download: error: model 'org/nope': 404 Not Found from " + hub.endpoint() +
                       "/api/models/org/nope/revision/main: check the repo id's spelling (a dataset needs --repo-type dataset)\n");
  r = run_mor("download org/sqa --revision v9 --repo-type dataset");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("dataset 'org/sqa': 404 Not Found from " + hub.endpoint() +
                       "/api/datasets/org/sqa/revision/v9: check --revision 'v9'"), std::string::npos) << r.err;
  // --base_model: the cache miss, then the download's own line.
  r = run_mor("generate --base_model org/nope --prompt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot find model 'org/nope'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("downloading failed: model 'org/nope': 404 Not Found"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
  // Nothing reachable: one line saying what to do.
  env.set("HF_ENDPOINT", "http://127.0.0.1:1");
  r = run_mor("download org/tiny");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach http://127.0.0.1:1/api/models/org/tiny/revision/main"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("set HF_HUB_OFFLINE=1 to use the cache only"), std::string::npos) << r.err;
}

TEST(Hub, ChecksumMismatchLeavesNoFileInTheCache) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-corrupt", {"--corrupt", "model.safetensors", "--corrupt", "config.json"});
  EnvGuard env;
  const std::string cache = scratch_dir("hub-corrupt-cache");
  hub.point(env, cache);
  const std::string sha = mor::sha256_file_hex(hub.repo_file("models/org/tiny", "model.safetensors"));
  auto r = run_mor("download org/tiny --include model.safetensors");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("mor download: error: model 'org/tiny', file 'model.safetensors': checksum mismatch: the sha256 of "
                       "the downloaded bytes is "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(", the Hub's ETag says " + sha + "; the download was deleted (run again)"), std::string::npos) << r.err;
  const fs::path repo = fs::path(cache) / "models--org--tiny";
  EXPECT_TRUE(fs::is_empty(repo / "blobs"));
  EXPECT_FALSE(fs::exists(repo / "refs" / "main"));
  EXPECT_FALSE(fs::exists(repo / "snapshots"));
  // A regular file is checked against its git blob sha1 the same way.
  r = run_mor("download org/tiny --include config.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("file 'config.json': checksum mismatch: the git blob sha1 of the downloaded bytes is"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_empty(repo / "blobs"));
  // And --base_model does not leave a half model behind either.
  r = run_mor("generate --base_model org/tiny --prompt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(repo / "refs" / "main"));
}

TEST(Hub, OfflineMakesNoRequest) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-offline");
  EnvGuard env;
  const std::string cache = scratch_dir("hub-offline-cache");
  hub.point(env, cache);
  env.set("HF_HUB_OFFLINE", "1");
  auto r = run_mor("download org/tiny");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mor download: error: model 'org/tiny' is not in the cache (" + cache +
                       "/models--org--tiny/refs/main or its snapshot is missing) and HF_HUB_OFFLINE is set: unset it to download\n");
  r = run_mor("generate --base_model org/tiny --prompt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot find model 'org/tiny'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("HF_HUB_OFFLINE is set: nothing downloaded"), std::string::npos) << r.err;
  EXPECT_EQ(hub.requests().size(), 0u);
  // Online once, then offline again: the cache serves both commands without a request.
  env.set("HF_HUB_OFFLINE", std::nullopt);
  r = run_mor("download org/tiny --include '*.json' --include '*.safetensors' --include tokenizer.model");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string snap = r.out;
  const size_t n = hub.requests().size();
  EXPECT_GT(n, 0u);
  env.set("HF_HUB_OFFLINE", "1");
  r = run_mor("download org/tiny");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, snap);
  r = run_mor("generate --base_model org/tiny --prompt x --max_new_tokens 2 --dtype float32 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(hub.requests().size(), n);
}

// The seed's preparation with its default dataset id: `mor prepare-scienceqa --dataset derek-thomas/ScienceQA`
// on empty caches downloads the parquet files into the Hub cache and writes the bytes Python writes.
TEST(Hub, PrepareScienceQADownloadsTheHubDataset) {
  MOR_REQUIRE_TESTDATA();
  FakeHub hub("hub-sqa");
  EnvGuard env;
  const std::string cache = scratch_dir("hub-sqa-cache");
  hub.point(env, cache);
  env.set("HF_DATASETS_CACHE", std::nullopt);  // $HF_HOME/datasets: empty
  env.set("XDG_CACHE_HOME", std::nullopt);
  const std::string out = scratch_dir("hub-sqa-out") + "/scienceqa";
  auto r = run_mor("prepare-scienceqa --dataset derek-thomas/ScienceQA --save_path " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("train: kept 3 of 4 problems"), std::string::npos) << r.out;
  const std::string expected = mor::test::source_dir() + "/tests/fixtures/scienceqa/expected";
  for (const char* split : {"train", "validation", "test"}) {
    const std::string name = std::string("scienceq_") + split + ".json";
    EXPECT_EQ(read_file(out + "/" + name), read_file(expected + "/" + name)) << name;
  }
  const fs::path repo = fs::path(cache) / "datasets--derek-thomas--ScienceQA";
  const std::string commit = read_file((repo / "refs" / "main").string());
  EXPECT_EQ(std::distance(fs::directory_iterator(repo / "snapshots" / commit / "data"), fs::directory_iterator()), 3);
  EXPECT_FALSE(fs::exists(repo / "snapshots" / commit / "README.md"));  // only the parquet files
  // Found in the Hub cache the second time: no request; offline too.
  const size_t n = hub.requests().size();
  env.set("HF_HUB_OFFLINE", "1");
  r = run_mor("prepare-scienceqa --dataset derek-thomas/ScienceQA --save_path " + out + "2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(out + "2/scienceq_test.json"), read_file(expected + "/scienceq_test.json"));
  EXPECT_EQ(hub.requests().size(), n);
  // An id the Hub does not have: the places looked, then the download's one-line reason.
  env.set("HF_HUB_OFFLINE", std::nullopt);
  r = run_mor("prepare-scienceqa --dataset org/missing --save_path " + out + "3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("org/missing: no such file or folder, and no cached copy of the Hub dataset 'org/missing'; looked in:"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("downloading it failed: dataset 'org/missing': 404 Not Found from " + hub.endpoint() +
                       "/api/datasets/org/missing/revision/main: check the repo id's spelling"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out + "3"));
}
