// The embedded default behind `mor quickstart`: a synthetic ScienceQA-style dataset (multiple choice,
// facts a tiny model can learn), a sentencepiece tokenizer trained on it, and a random tiny LLaMA with
// a fixed seed — everything the main job needs, made offline.
#pragma once
#include <cstdint>
#include <string>

#include "dataset.h"

namespace mor {

// Rows with the columns prepare-scienceqa writes (image null, question, choices, answer letter, hint,
// task, grade, subject, topic, category, skill, lecture, solution, input, instruction, output).
DatasetDict make_synthetic_scienceqa(uint64_t seed, int64_t n_train, int64_t n_validation, int64_t n_test);

// Trains a BPE sentencepiece model (unk 0, bos 1, eos 2, like LLaMA) on the dataset's prompts and
// writes `dir/tokenizer.model`; returns its vocabulary size.
int64_t train_quickstart_tokenizer(const DatasetDict& data, const std::string& dir);

// Writes config.json + model.safetensors + tokenizer.model of a tiny random LLaMA into `dir`.
void write_quickstart_model(const DatasetDict& data, const std::string& dir, uint64_t seed);

}  // namespace mor
