// Data parallelism on c10d (see ddp.h): rendezvous through a TCPStore, Gloo on CPU, NCCL on CUDA builds
// (MOR_WITH_NCCL), flat-bucket gradient averaging, byte gathering through the store.
#include "ddp.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef MOR_WITH_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#endif
#ifdef MOR_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace mor {

std::string first_line(const std::exception& e) {
  std::string m;
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) m = ce->what_without_backtrace();
  else m = e.what();
  return m.substr(0, m.find('\n'));
}

std::string ddp_backends_built() {
#if defined(MOR_WITH_NCCL)
  return "gloo, nccl";
#elif defined(MOR_WITH_GLOO)
  return "gloo";
#else
  return "";
#endif
}

namespace {
int64_t env_int(const char* name, int64_t fallback, int64_t lo) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end || x < lo) throw std::runtime_error(std::string("environment variable ") + name + "='" + v + "': expected an integer >= " + std::to_string(lo));
  return x;
}
}  // namespace

DdpEnv read_ddp_env() {
  DdpEnv e;
  e.present = std::getenv("RANK") && std::getenv("WORLD_SIZE");
  if (!e.present) return e;
  e.world = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  if (e.rank >= e.world)
    throw std::runtime_error("environment: RANK " + std::to_string(e.rank) + " is not below WORLD_SIZE " + std::to_string(e.world));
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  e.local_world = env_int("LOCAL_WORLD_SIZE", e.world, 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.port = static_cast<int>(env_int("MASTER_PORT", 29500, 1));
  if (e.port > 65535) throw std::runtime_error("environment variable MASTER_PORT=" + std::to_string(e.port) + ": not a port");
  if (const char* s = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) e.agent_store = std::string(s) == "True" || std::string(s) == "1";
  e.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0);
  return e;
}

struct Distributed::Impl {
  std::chrono::milliseconds timeout{0};
  torch::Device device{torch::kCPU};
#ifdef MOR_WITH_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&)> allreduce;
  std::function<c10::intrusive_ptr<c10d::Work>()> barrier;
  // Keeps the process group alive (ProcessGroup in LibTorch 1.13, Backend in 2.x).
  std::shared_ptr<void> holder;
#endif

#ifdef MOR_WITH_GLOO
  void wait(const c10::intrusive_ptr<c10d::Work>& w, const char* what) {
    try {
      w->wait(timeout);
    } catch (const std::exception& e) {
      // The group's destructor would wait for the stuck collective: keep it alive until exit.
      static auto* kept = new std::vector<std::shared_ptr<void>>();
      kept->push_back(holder);
      holder.reset();
      throw std::runtime_error(std::string("data parallel: ") + what + " failed (a rank died or hung; --ddp_timeout " +
                               std::to_string(timeout.count() / 1000) + " s): " + first_line(e));
    }
  }
#endif
};

#ifdef MOR_WITH_GLOO
namespace {
// The store the process group joins through, with one deadline for the whole join: Gloo waits for each
// peer's address with its own (full) timeout, so after the TCPStore's wait for the workers a rank that
// died in between would cost a second --ddp_timeout. Every wait is cut to the time left until the
// deadline while joining, and passes through unchanged once end_join() is called.
class JoinDeadlineStore : public c10d::PrefixStore {
 public:
  using Clock = std::chrono::steady_clock;
  JoinDeadlineStore(const std::string& prefix, c10::intrusive_ptr<c10d::Store> store, Clock::time_point deadline)
      : PrefixStore(prefix, std::move(store)), deadline_(deadline) {}
  void end_join() { joining_ = false; }
  void wait(const std::vector<std::string>& keys) override { PrefixStore::wait(keys, cut(getTimeout())); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    PrefixStore::wait(keys, cut(timeout));
  }

 private:
  std::chrono::milliseconds cut(std::chrono::milliseconds t) const {
    if (!joining_) return t;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    return std::max(std::chrono::milliseconds(1), std::min(t, left));
  }
  Clock::time_point deadline_;
  bool joining_ = true;
};

// LibTorch 2.4+ asks for the libuv store server by default, and a LibTorch built without libuv
// (Debian 13's 2.6) then throws "use_libuv was requested but PyTorch was build without libuv
// support" before it binds the port; the server falls back to the classic backend there, as it
// would have to anyway. A client never starts a server backend, so this only ever changes rank 0.
c10::intrusive_ptr<c10d::TCPStore> make_tcp_store(const std::string& host, c10d::TCPStoreOptions so) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, so);
  } catch (const std::exception& e) {
    if (!so.useLibUV || std::string(e.what()).find("libuv") == std::string::npos) throw;
    so.useLibUV = false;
  }
#endif
  return c10::make_intrusive<c10d::TCPStore>(host, so);
}

template <typename PG>
void hold(Distributed::Impl& impl, c10::intrusive_ptr<PG> pg) {
  impl.allreduce = [pg](std::vector<at::Tensor>& ts) { return pg->allreduce(ts); };
  impl.barrier = [pg]() { return pg->barrier(); };
  impl.holder = std::make_shared<c10::intrusive_ptr<PG>>(pg);
}
}  // namespace
#endif

Distributed Distributed::connect(const DdpEnv& env, const std::string& backend_flag, double timeout_s,
                                 torch::Device device) {
  Distributed d;
  if (!env.present || env.world == 1) {
    d.rank_ = env.rank;
    return d;
  }
#ifndef MOR_WITH_GLOO
  (void)backend_flag, (void)timeout_s, (void)device;
  throw std::runtime_error("data parallel: this mor was built without c10d (LibTorch's Gloo headers were not found)");
#else
  std::string backend = backend_flag == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : backend_flag;
  if (backend == "nccl" && !device.is_cuda()) throw std::runtime_error("--ddp_backend nccl needs --device cuda");
#ifndef MOR_WITH_NCCL
  if (backend == "nccl") throw std::runtime_error("--ddp_backend nccl: this mor was built without NCCL (a CPU LibTorch)");
#endif
  auto impl = std::make_shared<Impl>();
  impl->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  impl->device = device;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = static_cast<size_t>(env.world);
    so.timeout = impl->timeout;
    // One deadline for the whole join (see JoinDeadlineStore).
    const auto deadline = std::chrono::steady_clock::now() + impl->timeout;
    auto tcp = make_tcp_store(env.master_addr, so);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    tcp->setTimeout(std::max(left, std::chrono::milliseconds(1000)));
    auto joining = c10::make_intrusive<JoinDeadlineStore>("/mor/attempt_" + std::to_string(env.restart_count) + "/",
                                                          tcp, deadline);
    impl->store = joining;
    if (backend == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(impl->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      opts->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                                : c10d::ProcessGroupGloo::createDefaultDevice());
      opts->threads = 2;
      hold(*impl, c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, static_cast<int>(env.rank),
                                                              static_cast<int>(env.world), opts));
    } else {
#ifdef MOR_WITH_NCCL
      // Collectives honour the timeout only in blocking-wait mode.
      setenv("NCCL_BLOCKING_WAIT", "1", 0);
      setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = impl->timeout;
      hold(*impl, c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, static_cast<int>(env.rank),
                                                              static_cast<int>(env.world), opts));
#endif
    }
    joining->end_join();  // joined: the store's later uses get the full timeout again
    tcp->setTimeout(impl->timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error("data parallel: cannot join the " + std::to_string(env.world) + " ranks through " +
                             env.master_addr + ":" + std::to_string(env.port) + " (" + backend + ", rank " +
                             std::to_string(env.rank) + "): " + first_line(e));
  }
  d.impl_ = impl;
  d.rank_ = env.rank;
  d.world_ = env.world;
  d.backend_ = backend;
  return d;
#endif
}

void Distributed::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (world_ == 1 || tensors.empty()) return;
#ifdef MOR_WITH_GLOO
  // One flat buffer: one collective whatever the number of tensors.
  std::vector<torch::Tensor> flat{torch::cat([&] {
    std::vector<torch::Tensor> v;
    for (auto& t : tensors) v.push_back(t.reshape({-1}).to(tensors[0].scalar_type()));
    return v;
  }())};
  impl_->wait(impl_->allreduce(flat), "all-reduce");
  int64_t off = 0;
  for (auto& t : tensors) {
    t.copy_(flat[0].narrow(0, off, t.numel()).view_as(t));
    off += t.numel();
  }
#endif
}

double Distributed::average_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  if (world_ == 1 || params.empty()) return 0;
  double seconds = 0;
#ifdef MOR_WITH_GLOO
  torch::NoGradGuard ng;
  size_t i = 0;
  while (i < params.size()) {
    // A bucket: consecutive parameters of one dtype up to bucket_bytes (at least one).
    std::vector<torch::Tensor> grads;
    int64_t bytes = 0;
    const auto dtype = params[i].scalar_type();
    while (i < params.size() && params[i].scalar_type() == dtype &&
           (grads.empty() || bytes + params[i].numel() * params[i].element_size() <= bucket_bytes)) {
      auto& p = const_cast<torch::Tensor&>(params[i]);
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
      bytes += p.numel() * p.element_size();
      ++i;
    }
    std::vector<torch::Tensor> flat{torch::cat([&] {
      std::vector<torch::Tensor> v;
      for (auto& g : grads) v.push_back(g.reshape({-1}));
      return v;
    }())};
    const auto t0 = std::chrono::steady_clock::now();
    impl_->wait(impl_->allreduce(flat), "gradient all-reduce");
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    flat[0].div_(static_cast<double>(world_));
    int64_t off = 0;
    for (auto& g : grads) {
      g.copy_(flat[0].narrow(0, off, g.numel()).view_as(g));
      off += g.numel();
    }
  }
#endif
  return seconds;
}

std::vector<std::string> Distributed::gather_bytes(const std::string& mine) {
  if (world_ == 1) return {mine};
  // Through the process group (not the store), so a dead rank fails it at once: every rank fills its
  // own row of a zero [world, longest] byte table and a sum all-reduce hands the table to all.
  std::vector<torch::Tensor> len{torch::zeros({world_}, torch::kInt64)};
  len[0][rank_] = static_cast<int64_t>(mine.size());
  all_reduce_sum(len);
  const int64_t longest = len[0].max().item<int64_t>();
  std::vector<torch::Tensor> table{torch::zeros({world_, std::max<int64_t>(1, longest)}, torch::kUInt8)};
  if (!mine.empty())
    std::memcpy(table[0][rank_].data_ptr<uint8_t>(), mine.data(), mine.size());
  all_reduce_sum(table);
  std::vector<std::string> out;
  if (rank_ != 0) return out;
  for (int64_t r = 0; r < world_; ++r) {
    const auto* p = reinterpret_cast<const char*>(table[0][r].data_ptr<uint8_t>());
    out.emplace_back(p, p + len[0][r].item<int64_t>());
  }
  return out;
}

void Distributed::barrier() {
  if (world_ == 1) return;
#ifdef MOR_WITH_GLOO
  impl_->wait(impl_->barrier(), "barrier");
#endif
}

}  // namespace mor
