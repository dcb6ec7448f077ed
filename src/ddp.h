// Data parallelism on LibTorch's own c10d, for `mor train` launched by torchrun: the torchrun
// environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
// TORCHELASTIC_USE_AGENT_STORE), a TCPStore (hosted by rank 0, or the torchrun agent's), and a
// ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA builds) with --ddp_timeout on every collective.
// Without the environment it is one process and every call is a no-op.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "torch_api.h"

namespace mor {

struct DdpEnv {
  bool present = false;  // RANK and WORLD_SIZE set
  int64_t rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int port = 29500;
  bool agent_store = false;   // TORCHELASTIC_USE_AGENT_STORE=True: the agent hosts the store
  int64_t restart_count = 0;  // TORCHELASTIC_RESTART_COUNT
};
// Reads the torchrun variables; throws naming the variable when one is malformed.
DdpEnv read_ddp_env();

class Distributed {
 public:
  Distributed() = default;  // one process
  // Connects to the other ranks (rendezvous through the store, then the process group). backend:
  // auto | gloo | nccl; timeout in seconds for the rendezvous and every collective.
  static Distributed connect(const DdpEnv& env, const std::string& backend, double timeout_s, torch::Device device);

  int64_t rank() const { return rank_; }
  int64_t world() const { return world_; }
  bool is_main() const { return rank_ == 0; }
  const std::string& backend() const { return backend_; }

  // Sums each tensor across ranks, in place (one collective for all of them).
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // The mean over ranks of every parameter's gradient, in place, through flat buckets of at most
  // bucket_bytes (undefined gradients count as zeros). Returns seconds spent in the collectives.
  double average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes = 25 << 20);
  // Rank 0 receives every rank's bytes (in rank order); the others get an empty vector.
  std::vector<std::string> gather_bytes(const std::string& mine);
  void barrier();

  struct Impl;  // the store and process group (ddp.cpp)

 private:
  std::shared_ptr<Impl> impl_;
  int64_t rank_ = 0, world_ = 1;
  std::string backend_ = "none";
};

// "gloo", "gloo, nccl" or "" (built without c10d): what `mor --version` reports.
std::string ddp_backends_built();

// The first line of an exception's message (LibTorch's carry a backtrace).
std::string first_line(const std::exception& e);

}  // namespace mor
