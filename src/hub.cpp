// Hugging Face Hub client (see hub.h): the API's file list, HEAD for each file's ETag and size,
// resumable GETs (HTTP Range) into blobs/<etag>.incomplete, the checksum, then the rename and the
// snapshot link; refs/<revision> is written once every requested file is in place.
#include "hub.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fnmatch.h>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "config.h"
#include "files.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t b = 0;
  while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  return s.substr(b);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// Percent-encoding as Python's urllib.parse.quote (safe "/" for paths, "" for a revision).
std::string url_quote(const std::string& s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' || (keep_slash && c == '/')) out += char(c);
    else out += '%', out += hex[c >> 4], out += hex[c & 15];
  }
  return out;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

void ensure_curl() {
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!ok) throw std::runtime_error("libcurl failed to initialise");
}

// The progress bar of one file on stderr: on a terminal redrawn in place at most 10 times a second;
// with MOR_HUB_PROGRESS=1 but no terminal, one line a second (logs stay small).
struct Progress {
  std::string name;
  int64_t total = -1, offset = 0;  // bytes expected (-1 unknown), bytes already on disk when resumed
  bool tty = false, forced = false, drawn = false;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last{};

  void update(int64_t done, bool final_line) {
    if (!tty && !forced) return;
    auto now = std::chrono::steady_clock::now();
    auto gap = std::chrono::milliseconds(tty ? 100 : 1000);
    if (!final_line && drawn && now - last < gap) return;
    last = now;
    drawn = true;
    const double secs = std::max(1e-3, std::chrono::duration<double>(now - start).count());
    const double rate = double(done - offset) / secs;
    std::string line = "  " + name + " ";
    if (total > 0) {
      const double f = std::min(1.0, double(done) / double(total));
      const int width = 24, fill = int(f * width + 0.5);
      char pct[16];
      std::snprintf(pct, sizeof pct, "%3d%% ", int(f * 100));
      line += pct + std::string("|") + std::string(fill, '#') + std::string(width - fill, ' ') + "| " +
              human_bytes(double(done)) + "/" + human_bytes(double(total));
    } else {
      line += human_bytes(double(done));
    }
    line += "  " + human_bytes(rate) + "/s";
    if (total > 0 && rate > 0 && done < total) {
      const int64_t eta = int64_t(double(total - done) / rate);
      char buf[32];
      std::snprintf(buf, sizeof buf, "  ETA %lld:%02lld", (long long)(eta / 60), (long long)(eta % 60));
      line += buf;
    }
    if (tty) std::cerr << "\r" << line << "\x1b[K" << (final_line ? "\n" : "") << std::flush;
    else std::cerr << line << "\n" << std::flush;
  }
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, of the last response
  std::string body;                              // non-2xx bodies, and API bodies
  CURLcode code = CURLE_OK;
  std::string curl_error;
};

// One transfer's state shared with libcurl's callbacks.
struct Transfer {
  CURL* h = nullptr;
  Response* r = nullptr;
  std::FILE* out = nullptr;  // body target for a 200/206 download
  int64_t offset = 0;        // bytes already in `out` when the request asked for a Range
  bool decided = false, to_file = false;
  Progress* progress = nullptr;
  int64_t written = 0;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->r->headers.clear();  // a new response (after a redirect)
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    t->r->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (!t->decided) {
    t->decided = true;
    curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &t->r->status);
    if (t->out && (t->r->status == 200 || t->r->status == 206)) {
      t->to_file = true;
      if (t->r->status == 200 && t->offset > 0) {  // the server ignored the Range: start over
        if (std::fflush(t->out) != 0 || ::ftruncate(fileno(t->out), 0) != 0 || std::fseek(t->out, 0, SEEK_SET) != 0) return 0;
        t->offset = 0;
        if (t->progress) t->progress->offset = 0;
      }
    }
  }
  if (!t->to_file) {
    if (t->r->body.size() < (64u << 20)) t->r->body.append(data, len);
    return len;
  }
  if (std::fwrite(data, 1, len, t->out) != len) return 0;  // disk full: libcurl reports a write error
  t->written += int64_t(len);
  if (t->progress) t->progress->update(t->offset + t->written, false);
  return len;
}

Response http(const std::string& url, bool head, bool follow, std::FILE* out = nullptr, int64_t range_from = 0,
              Progress* progress = nullptr) {
  ensure_curl();
  Response r;
  std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
  if (!h) throw std::runtime_error("libcurl: cannot create a handle");
  Transfer t;
  t.h = h.get();
  t.r = &r;
  t.out = out;
  t.offset = range_from;
  t.progress = progress;
  curl_slist* hdrs = nullptr;
  const std::string token = hub_token();
  if (!token.empty()) hdrs = curl_slist_append(hdrs, ("Authorization: Bearer " + token).c_str());
  if (head) hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> hguard(hdrs, curl_slist_free_all);
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(t.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(t.h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(t.h, CURLOPT_USERAGENT, "mor/1 (huggingface_hub-compatible cache)");
  curl_easy_setopt(t.h, CURLOPT_NOBODY, head ? 1L : 0L);
  curl_easy_setopt(t.h, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);  // the token is not sent to other hosts
  curl_easy_setopt(t.h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(t.h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(t.h, CURLOPT_LOW_SPEED_LIMIT, 1L);  // stalled for a minute: give up (then retried)
  curl_easy_setopt(t.h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(t.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(t.h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(t.h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(t.h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(t.h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(t.h, CURLOPT_WRITEDATA, &t);
  const std::string range = std::to_string(range_from) + "-";
  if (range_from > 0) curl_easy_setopt(t.h, CURLOPT_RANGE, range.c_str());
  r.code = curl_easy_perform(t.h);
  curl_easy_getinfo(t.h, CURLINFO_RESPONSE_CODE, &r.status);
  r.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(r.code);
  return r;
}

// "model 'org/name'" / "dataset 'org/name'"
std::string what(const HubRequest& q) { return q.repo_type + " '" + q.repo_id + "'"; }

std::string token_source() {
  if (env("HF_TOKEN")) return "HF_TOKEN";
  if (const char* p = env("HF_TOKEN_PATH")) return p;
  if (const char* h = env("HF_HOME")) return (fs::path(h) / "token").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home ? home : "") / ".cache" / "huggingface" / "token").string();
}

[[noreturn]] void throw_http(const HubRequest& q, const std::string& url, const Response& r, const std::string& file = "") {
  const std::string head = what(q) + (file.empty() ? "" : ", file '" + file + "'");
  if (r.code != CURLE_OK && r.status == 0)
    throw std::runtime_error(head + ": cannot reach " + url + " (" + r.curl_error +
                             "): check the network or $HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only");
  const bool has_token = !hub_token().empty();
  const std::string code = std::to_string(r.status);
  auto it = r.headers.find("x-error-code");
  const std::string hub_code = it == r.headers.end() ? "" : it->second;
  if (r.status == 401)
    throw std::runtime_error(head + ": 401 Unauthorized from " + url + ": the repo is private or gated, or does not exist; " +
                             (has_token ? "the token from " + token_source() + " was refused: check it and "
                                        : "set HF_TOKEN (or log in with `huggingface-cli login`) and ") +
                             "check the repo id's spelling" + (q.repo_type == "model" ? " (a dataset needs --repo-type dataset)" : ""));
  if (r.status == 403)
    throw std::runtime_error(head + ": 403 Forbidden from " + url + ": the token from " + token_source() +
                             " has no access (a gated repo: accept its terms on the Hub page first)");
  if (r.status == 404) {
    std::string hint = hub_code == "RevisionNotFound" ? "check --revision '" + q.revision + "'"
                       : hub_code == "EntryNotFound"  ? "the file is not in the repo at revision '" + q.revision + "'"
                                                      : "check the repo id's spelling" +
                                                           std::string(q.repo_type == "model" ? " (a dataset needs --repo-type dataset)" : "");
    throw std::runtime_error(head + ": 404 Not Found from " + url + ": " + hint);
  }
  throw std::runtime_error(head + ": HTTP " + code + " from " + url +
                           (r.code != CURLE_OK ? " (" + r.curl_error + ")" : ""));
}

std::string normalize_etag(std::string e) {
  if (e.rfind("W/", 0) == 0) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

bool is_hex(const std::string& s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// A repo path from the API must stay inside the snapshot folder.
void check_repo_path(const HubRequest& q, const std::string& p) {
  fs::path rel(p);
  bool bad = p.empty() || rel.is_absolute() || p.find('\\') != std::string::npos;
  for (const auto& part : rel) bad = bad || part == ".." || part == ".";
  if (bad) throw std::runtime_error(what(q) + ": the file list names '" + p + "', which is not a relative path inside the repo");
}

std::string digest_file(const std::string& path, const EVP_MD* md, const std::string& prefix) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), md, nullptr);
  EVP_DigestUpdate(ctx.get(), prefix.data(), prefix.size());
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), size_t(in.gcount()));
  }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), d, &n);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += hex[d[i] >> 4], out += hex[d[i] & 15];
  return out;
}

struct FileMeta {
  std::string etag;
  int64_t size = -1;
  std::string url;  // where to GET (the resolve URL; libcurl follows the redirect)
};

// HEAD on the resolve URL without following redirects: an LFS file answers 302 with X-Linked-Etag
// and X-Linked-Size; a relative redirect (renamed repo) is followed by hand.
FileMeta head_file(const HubRequest& q, const std::string& file, const std::string& commit) {
  const std::string prefix = q.repo_type == "dataset" ? "/datasets/" : q.repo_type == "space" ? "/spaces/" : "/";
  std::string url = hub_endpoint() + prefix + q.repo_id + "/resolve/" + url_quote(commit, false) + "/" + url_quote(file, true);
  FileMeta m;
  m.url = url;
  for (int hop = 0; hop < 5; ++hop) {
    Response r = http(url, true, false);
    if (r.code != CURLE_OK || (r.status >= 400)) throw_http(q, url, r, file);
    auto get = [&](const char* k) { auto it = r.headers.find(k); return it == r.headers.end() ? std::string() : it->second; };
    const std::string linked = get("x-linked-etag"), loc = get("location");
    if (r.status >= 300 && r.status < 400 && linked.empty() && !loc.empty() && loc[0] == '/') {
      url = hub_endpoint() + loc;
      m.url = url;
      continue;
    }
    m.etag = normalize_etag(linked.empty() ? get("etag") : linked);
    const std::string size = get("x-linked-size").empty() ? get("content-length") : get("x-linked-size");
    if (!size.empty()) m.size = std::atoll(size.c_str());
    if (m.etag.empty() || m.etag.find('/') != std::string::npos || m.etag.find("..") != std::string::npos)
      throw std::runtime_error(what(q) + ", file '" + file + "': " + url + " gave no usable ETag ('" + m.etag +
                               "'); is $HF_ENDPOINT a Hugging Face Hub?");
    return m;
  }
  throw std::runtime_error(what(q) + ", file '" + file + "': too many redirects from " + url);
}

bool transient(const Response& r) {
  if (r.code == CURLE_OK) return r.status >= 500 || r.status == 429;
  return r.code == CURLE_PARTIAL_FILE || r.code == CURLE_RECV_ERROR || r.code == CURLE_OPERATION_TIMEDOUT ||
         r.code == CURLE_GOT_NOTHING || r.code == CURLE_SEND_ERROR || r.code == CURLE_COULDNT_CONNECT ||
         r.code == CURLE_HTTP2 || r.code == CURLE_HTTP2_STREAM;
}

// Downloads one blob to blobs/<etag> through blobs/<etag>.incomplete, resuming what is there.
void fetch_blob(const HubRequest& q, const std::string& file, const FileMeta& m, const fs::path& blob) {
  const fs::path part = blob.string() + ".incomplete";
  fs::create_directories(blob.parent_path());
  Progress bar;
  bar.name = file;
  bar.total = m.size;
  bar.tty = q.progress && ::isatty(2) && !env("HF_HUB_DISABLE_PROGRESS_BARS");
  bar.forced = q.progress && env("MOR_HUB_PROGRESS") && std::string(env("MOR_HUB_PROGRESS")) == "1";
  if (!bar.tty) std::cerr << "downloading " << q.repo_id << ": " << file << (m.size >= 0 ? " (" + human_bytes(double(m.size)) + ")" : "") << "\n";
  const int attempts = 5;
  for (int a = 1;; ++a) {
    std::error_code ec;
    int64_t have = fs::exists(part) ? int64_t(fs::file_size(part, ec)) : 0;
    if (m.size >= 0 && have > m.size) {  // longer than the file: not a prefix of it
      fs::remove(part, ec);
      have = 0;
    }
    Response r;
    if (m.size < 0 || have < m.size) {
      std::FILE* out = std::fopen(part.c_str(), "ab");
      if (!out) throw std::runtime_error("cannot write " + part.string() + ": " + std::strerror(errno));
      bar.offset = have;
      bar.start = std::chrono::steady_clock::now();
      r = http(m.url, false, true, out, have, &bar);
      const bool closed = std::fclose(out) == 0;
      if (!closed || r.code == CURLE_WRITE_ERROR)
        throw std::runtime_error("cannot write " + part.string() + " (disk full?); the partial download is kept for a retry");
      if (r.status == 416 && have > 0) {  // Range not satisfiable: the part is already whole (or bad)
        r.code = CURLE_OK;
      } else if (r.code != CURLE_OK || (r.status != 200 && r.status != 206)) {
        if (transient(r) && a < attempts) {
          std::cerr << "  " << file << ": " << (r.code != CURLE_OK ? r.curl_error : "HTTP " + std::to_string(r.status))
                    << "; resuming (attempt " << a + 1 << " of " << attempts << ")\n";
          std::this_thread::sleep_for(std::chrono::milliseconds(200 * a));
          continue;
        }
        throw_http(q, m.url, r, file);
      }
    }
    const int64_t got = int64_t(fs::file_size(part));
    if (m.size >= 0 && got != m.size) {
      if (a < attempts) continue;
      throw std::runtime_error(what(q) + ", file '" + file + "': got " + std::to_string(got) + " bytes, expected " +
                               std::to_string(m.size) + " (partial download kept in " + part.string() + " for a retry)");
    }
    bar.update(got, true);
    break;
  }
  // The checksum: sha256 for LFS files (64 hex), git's blob sha1 otherwise (40 hex).
  std::string kind, digest;
  if (is_hex(m.etag, 64)) kind = "sha256", digest = sha256_file_hex(part.string());
  else if (is_hex(m.etag, 40)) kind = "git blob sha1", digest = git_blob_sha1_file_hex(part.string());
  if (!kind.empty() && digest != lower(m.etag)) {
    std::error_code ec;
    fs::remove(part, ec);
    throw std::runtime_error(what(q) + ", file '" + file + "': checksum mismatch: the " + kind + " of the downloaded bytes is " +
                             digest + ", the Hub's ETag says " + m.etag + "; the download was deleted (run again)");
  }
  fs::rename(part, blob);
}

// snapshots/<commit>/<file> -> ../../blobs/<etag> (relative, as huggingface_hub links it).
void link_snapshot(const fs::path& repo_dir, const std::string& commit, const std::string& file, const std::string& etag) {
  const fs::path link = repo_dir / "snapshots" / commit / file;
  fs::create_directories(link.parent_path());
  const fs::path target = (repo_dir / "blobs" / etag).lexically_relative(link.parent_path());
  std::error_code ec;
  fs::remove(link, ec);
  fs::create_symlink(target, link, ec);
  if (ec) {  // no symlinks (some file systems): a copy, as huggingface_hub falls back to
    fs::copy_file(repo_dir / "blobs" / etag, link, fs::copy_options::overwrite_existing);
  }
}

}  // namespace

bool hub_offline() {
  const char* v = env("HF_HUB_OFFLINE");
  if (!v) return false;
  const std::string s = lower(trim(v));
  return s == "1" || s == "on" || s == "yes" || s == "true";
}

std::string hub_endpoint() {
  std::string e = env("HF_ENDPOINT") ? env("HF_ENDPOINT") : "https://huggingface.co";
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

std::string hub_token() {
  if (const char* t = env("HF_TOKEN")) return trim(t);
  std::string path = token_source();
  std::ifstream in(path);
  if (!in) return "";
  std::string tok((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return trim(tok);
}

bool looks_like_repo_id(const std::string& id) {
  if (id.empty() || id.front() == '/' || id.front() == '.' || id.back() == '/' || id.find("//") != std::string::npos) return false;
  if (std::count(id.begin(), id.end(), '/') > 1) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/';
  });
}

bool hub_glob_match(const std::string& pattern, const std::string& path) {
  return ::fnmatch(pattern.c_str(), path.c_str(), 0) == 0;
}

std::string sha256_file_hex(const std::string& path) { return digest_file(path, EVP_sha256(), ""); }

std::string git_blob_sha1_file_hex(const std::string& path) {
  return digest_file(path, EVP_sha1(), "blob " + std::to_string(fs::file_size(path)) + std::string(1, '\0'));
}

std::string hub_repo_folder(const std::string& cache_dir, const std::string& repo_type, const std::string& repo_id) {
  std::string folder = repo_type + "s--" + repo_id;
  for (size_t p; (p = folder.find('/')) != std::string::npos;) folder.replace(p, 1, "--");
  return (fs::path(cache_dir) / folder).string();
}

std::string hub_cached_snapshot(const std::string& cache_dir, const std::string& repo_type, const std::string& repo_id,
                                const std::string& revision) {
  const fs::path repo = hub_repo_folder(cache_dir, repo_type, repo_id);
  std::string commit = revision;
  std::ifstream in(repo / "refs" / revision);
  if (in) std::getline(in, commit);
  commit = trim(commit);
  if (commit.empty() || commit.find('/') != std::string::npos) return "";
  const fs::path snap = repo / "snapshots" / commit;
  return fs::is_directory(snap) ? snap.string() : "";
}

std::string hub_snapshot_download(const HubRequest& q) {
  if (!looks_like_repo_id(q.repo_id)) throw std::runtime_error("'" + q.repo_id + "' is not a Hub repo id (org/name)");
  if (q.repo_type != "model" && q.repo_type != "dataset" && q.repo_type != "space")
    throw std::runtime_error("--repo-type: '" + q.repo_type + "', expected model or dataset");
  const std::string cache = fs::absolute(q.cache_dir.empty() ? hf_cache_dir() : q.cache_dir).lexically_normal().string();
  const fs::path repo_dir = hub_repo_folder(cache, q.repo_type, q.repo_id);
  if (hub_offline()) {
    std::string snap = hub_cached_snapshot(cache, q.repo_type, q.repo_id, q.revision);
    if (snap.empty())
      throw std::runtime_error(what(q) + " is not in the cache (" + (repo_dir / "refs" / q.revision).string() +
                               " or its snapshot is missing) and HF_HUB_OFFLINE is set: unset it to download");
    return snap;
  }
  // The file list and the commit the revision names.
  const std::string api = hub_endpoint() + "/api/" + q.repo_type + "s/" + q.repo_id + "/revision/" + url_quote(q.revision, false);
  Response r = http(api, false, true);
  if (r.code != CURLE_OK || r.status != 200) throw_http(q, api, r);
  nlohmann::json info;
  try {
    info = nlohmann::json::parse(r.body);
  } catch (const std::exception& e) {
    throw std::runtime_error(what(q) + ": " + api + " did not answer JSON (" + std::string(e.what()) + "); is $HF_ENDPOINT a Hugging Face Hub?");
  }
  if (!info.is_object() || !info.contains("sha") || !info["sha"].is_string() || !info.contains("siblings") || !info["siblings"].is_array())
    throw std::runtime_error(what(q) + ": " + api + " gave no \"sha\" and \"siblings\" (the file list)");
  const std::string commit = info["sha"].get<std::string>();
  if (commit.empty() || commit.find('/') != std::string::npos || commit.find("..") != std::string::npos)
    throw std::runtime_error(what(q) + ": " + api + " gave an unusable commit '" + commit + "'");
  std::vector<std::string> files;
  for (const auto& s : info["siblings"]) {
    if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    const std::string f = s["rfilename"].get<std::string>();
    bool take = q.include.empty();
    for (const auto& g : q.include) take = take || hub_glob_match(g, f);
    if (!take) continue;
    check_repo_path(q, f);
    files.push_back(f);
  }
  if (files.empty())
    throw std::runtime_error(what(q) + " at revision '" + q.revision + "' has no file matching --include" +
                             (q.include.empty() ? "" : " (" + [&] { std::string s; for (auto& g : q.include) s += (s.empty() ? "" : " ") + g; return s; }() + ")"));
  const fs::path snap = repo_dir / "snapshots" / commit;
  for (const auto& f : files) {
    if (fs::exists(snap / f)) continue;  // already there (exists() follows the link to its blob)
    const FileMeta m = head_file(q, f, commit);
    const fs::path blob = repo_dir / "blobs" / m.etag;
    if (!fs::exists(blob)) fetch_blob(q, f, m, blob);
    link_snapshot(repo_dir, commit, f, m.etag);
  }
  fs::create_directories(snap);
  fs::create_directories((repo_dir / "refs" / q.revision).parent_path());
  if (q.revision != commit) write_file_atomic((repo_dir / "refs" / q.revision).string(), commit);
  return snap.string();
}

}  // namespace mor
