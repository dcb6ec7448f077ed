// Hugging Face Hub client (libcurl): a repo's file list from the API, resumable downloads checked
// against the ETag (sha256 for LFS files, the git blob sha1 otherwise), stored in the Hub cache layout
// huggingface_hub writes (blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<rev>),
// so Python and mor share one cache. $HF_ENDPOINT, $HF_TOKEN (or the HF CLI's token file) and
// $HF_HUB_OFFLINE=1 (never touch the network) are honoured.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mor {

struct HubRequest {
  std::string repo_id;                // "org/name" (or "name")
  std::string repo_type = "model";    // model | dataset
  std::string revision = "main";      // branch, tag or commit
  std::vector<std::string> include;   // fnmatch globs on repo paths ("*.json"); empty = every file
  std::string cache_dir;              // "" = hf_cache_dir()
  bool progress = true;               // the progress bar on stderr (drawn only when stderr is a terminal)
};

// $HF_HUB_OFFLINE is 1/ON/YES/TRUE (any case), as huggingface_hub reads it.
bool hub_offline();
// $HF_ENDPOINT without a trailing '/', else https://huggingface.co.
std::string hub_endpoint();
// $HF_TOKEN, else the token file ($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token);
// "" when none.
std::string hub_token();

// The cache folder of a repo: <cache>/models--org--name (datasets--org--name for datasets).
std::string hub_repo_folder(const std::string& cache_dir, const std::string& repo_type, const std::string& repo_id);
// The snapshot folder already in the cache for `revision` (refs/<revision>, or a commit folder), or "".
std::string hub_cached_snapshot(const std::string& cache_dir, const std::string& repo_type, const std::string& repo_id,
                                const std::string& revision = "main");

// Downloads the files of the request that the cache lacks and returns the snapshot folder. Offline,
// returns the cached snapshot or throws saying so (no request is made). Errors are one line naming
// the repo, the URL and what to do (401: token; 404: spelling); a file whose checksum does not match
// its ETag is deleted and reported (nothing of it is left in the cache).
std::string hub_snapshot_download(const HubRequest& req);

// True when `id` can be a Hub repo id ("org/name" or "name"): not a path.
bool looks_like_repo_id(const std::string& id);

// fnmatch(3) without flags, as huggingface_hub filters files: '*' and '?' also match '/'.
bool hub_glob_match(const std::string& pattern, const std::string& path);

// Hex digests (OpenSSL): sha256 of a file, and git's blob sha1 ("blob <size>\0" + bytes).
std::string sha256_file_hex(const std::string& path);
std::string git_blob_sha1_file_hex(const std::string& path);

}  // namespace mor
