// mor prepare-scienceqa: the seed's preparation_scienceqa_data.py. Reads the ScienceQA release
// (problems.json + pid_splits.json) or a copy of derek-thomas/ScienceQA (save_to_disk, datasets cache,
// Hub-cache parquet, by folder or Hub id) and writes
// SAVE_PATH/science_qa.hf and SAVE_PATH/scienceq_{train,validation,test}.json.
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "scienceqa.h"

int mor::cmd_prepare_scienceqa(int argc, char** argv) {
  std::string dataset, save_path = "./scienceqa";
  return run_command(
      "prepare-scienceqa", "Prepare ScienceQA (problems without image) for MoLA training", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "dataset", dataset,
                "ScienceQA release folder (problems.json + pid_splits.json), or a copy of derek-thomas/ScienceQA: save_to_disk folder, parquet files, or the Hub id itself (found in the datasets cache, then the Hub cache)")
            ->required();
        add_opt(app, "save_path", save_path, "output folder");
      },
      [&]() {
        std::vector<ScienceQASplitCount> counts;
        DatasetDict dd = prepare_scienceqa(dataset, &counts);
        write_scienceqa(dd, save_path);
        for (const auto& c : counts)
          std::cout << c.split << ": kept " << c.kept << " of " << c.total << " problems (without image)\n";
        std::cout << "wrote " << save_path << "/science_qa.hf and " << save_path << "/scienceq_{train,validation,test}.json\n";
        return 0;
      });
}
