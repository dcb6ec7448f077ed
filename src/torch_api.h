// The LibTorch API mor uses, in place of <torch/torch.h>: tensors and ATen, nn::Module with the few
// modules and functions we call, autograd functions, AdamW, serialization and the CUDA queries.
// Why not <torch/torch.h>: with it as the precompiled header GCC spends about 15 s of every translation
// unit, even an empty one, instantiating the header's pending templates (the data loaders, JIT, every
// nn module); with this subset about 6 s (issue 15, -ftime-report). Add a header here when a new API is used.
#pragma once
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>
