// Size checks on a model configuration (issue 15): sane bounds on every size in config.json, checked
// before anything is allocated, the base parameter count with checked multiplication, and the sizes
// against what the weight files hold. Implemented in config.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "config.h"

namespace mor {

// Sane bounds on every size in a config.json, checked before anything is allocated (a hidden_size of
// 10^12 must be an error naming the key, not an allocator failure), and the base parameter count with
// checked multiplication. Called from ModelConfig::validate. Throws naming `source` and the key.
void check_config_sizes(const ModelConfig& cfg, const std::string& source);
// The base model's parameter count (embeddings, layers, norms, lm_head unless tied); throws when it does
// not fit int64 (checked multiplication, never wraps).
int64_t checked_base_parameters(const ModelConfig& cfg, const std::string& source);
// Before a model is allocated from `cfg`: its weights' bytes at 2 bytes a parameter (the smallest
// supported dtype) must not exceed what the weight files hold (`weight_bytes`, from their headers).
void check_config_fits_weights(const ModelConfig& cfg, uint64_t weight_bytes, const std::string& source,
                               const std::string& weights_description);

}  // namespace mor
