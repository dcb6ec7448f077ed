// What `mor train` establishes before any weights load: every option checked, the model folder's
// config and tokenizer (the vocabulary check included), the allocation, the data split and tokenized,
// the step plan for this process's share, and the resume plan. Throws naming the flag or file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "allocation.h"
#include "checkpoint.h"
#include "examples.h"
#include "open_model.h"
#include "trainer.h"

namespace mor {

struct TrainInputs {
  TrainOptions opt;  // with the defaults filled in (eval_steps, number_experts)
  ModelSource source;
  Allocation alloc;
  ResumePlan resume;
  std::vector<TokenizedExample> train, val;
  std::vector<int64_t> train_lengths;
  int64_t world = 1;  // processes sharing each optimizer step
  StepPlan plan;      // of one process's share of the epoch
  int64_t total_steps = 0;
};

// world: the data-parallel world size (batch_size must divide by micro_batch_size * world).
TrainInputs prepare_training(const TrainOptions& opt, int64_t world = 1);

// training_args.json
nlohmann::json training_args_json(const TrainOptions& o);

}  // namespace mor
