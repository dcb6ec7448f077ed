// mor download: fetch a Hub repo (model or dataset) into the Hugging Face cache, as
// `huggingface-cli download` does, and print the snapshot folder (see src/hub.h).
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "hub.h"

int mor::cmd_download(int argc, char** argv) {
  HubRequest q;
  return run_command(
      "download", "Download a Hub repo into the Hugging Face cache (shared with Python) and print its snapshot folder",
      argc, argv,
      [&](CLI::App& app) {
        app.add_option("repo_id", q.repo_id, "the repo, e.g. NousResearch/Llama-2-7b-hf or derek-thomas/ScienceQA")->required();
        add_opt(app, "repo_type", q.repo_type, "model | dataset");
        add_opt(app, "include", q.include, "only files matching these globs (fnmatch; repeat the flag or give several)")
            ->expected(0, -1);
        add_opt(app, "revision", q.revision, "branch, tag or commit");
        add_opt(app, "cache_dir", q.cache_dir, "the Hub cache (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)");
      },
      [&]() {
        std::cout << hub_snapshot_download(q) << "\n";
        return 0;
      });
}
