// The CUDA execution model on the CPU, enough to run this library's kernels in a test without a GPU.
//
// A launch runs its blocks one after another; a block runs as blockDim host threads at once, which meet at
// __syncthreads (a std::barrier) and exchange registers through __shfl_down_sync (a per-warp barrier and slots).
// `__shared__` becomes `static`, so a kernel's shared arrays are one per instantiation and shared by the threads of
// the block that runs: CUDA's semantics, since one block runs at a time. A thread that returns early leaves the
// barriers (arrive_and_drop), as an exited CUDA thread no longer counts at __syncthreads.
//
// What it checks: the kernels' index arithmetic, bounds (build the test with AddressSanitizer: an access outside a
// buffer or a shared array is reported, like compute-sanitizer's memcheck) and synchronisation (with
// ThreadSanitizer, two threads touching the same shared word between barriers are reported, like racecheck).
// What it cannot: timing, occupancy, register limits, warp-synchronous code without __syncwarp, and races between
// blocks (they run one after another; two blocks writing one output show only as a wrong value).
//
// Include it before the kernels' header, in a host-only translation unit.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Read by the kernels as in CUDA; set per host thread by the launch.
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define INTERPGAN_DYNAMIC_SHARED(type, name) type* name = cuda_emulator::dynamic_shared<type>()
#define CUDA_KERNEL_ASSERT(cond) cuda_emulator::kernel_assert(static_cast<bool>(cond), #cond, __FILE__, __LINE__)

using std::max;
using std::min;

namespace cuda_emulator {

constexpr unsigned kWarpSize = 32;

struct Warp {
  explicit Warp(std::ptrdiff_t threads) : size(static_cast<unsigned>(threads)), barrier(threads) {}
  unsigned size;  // lanes: the last warp of a block may be partial
  std::barrier<> barrier;
  unsigned char slots[kWarpSize][16];  // one register per lane (any type up to 16 bytes)
};

struct Block {
  // Dynamic shared memory starts as garbage, as on a GPU (0xA5 bytes), so that a kernel reading it before writing
  // it gets wrong results here too.
  Block(std::ptrdiff_t threads, size_t dynamic_bytes) : barrier(threads), dynamic(dynamic_bytes, 0xA5) {
    for (std::ptrdiff_t first = 0; first < threads; first += kWarpSize)
      warps.push_back(std::make_unique<Warp>(std::min<std::ptrdiff_t>(kWarpSize, threads - first)));
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<unsigned char> dynamic;  // extern __shared__ memory
};

inline thread_local Block* current_block = nullptr;
inline std::atomic<int> failed_asserts{0};

inline unsigned linear_thread() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }

inline void kernel_assert(bool ok, const char* cond, const char* file, int line) {
  if (ok) return;
  if (failed_asserts.fetch_add(1) == 0)
    std::printf("device-side assert (emulated) %s:%d: block (%u,%u,%u), thread (%u,%u,%u): %s\n", file, line,
                blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, cond);
}

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(current_block->dynamic.data());
}

// Runs kernel<<<grid, block, dynamic_bytes>>>(args...) and returns when it is done. One pool of blockDim host threads
// runs the blocks in turn; a barrier between blocks keeps one block's threads from starting the next too early.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_bytes, Args... args) {
  const unsigned threads = block.x * block.y * block.z;
  const size_t blocks = size_t{grid.x} * grid.y * grid.z;
  std::vector<std::unique_ptr<Block>> states;  // one per block: a thread that exits leaves its barriers for good
  for (size_t i = 0; i < blocks; ++i) states.push_back(std::make_unique<Block>(threads, dynamic_bytes));
  std::barrier<> between_blocks(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
      blockDim = block;
      gridDim = grid;
      for (size_t i = 0; i < blocks; ++i) {
        blockIdx = dim3(i % grid.x, i / grid.x % grid.y, i / (size_t{grid.x} * grid.y));
        current_block = states[i].get();
        kernel(static_cast<Params>(args)...);
        current_block->warps[t / kWarpSize]->barrier.arrive_and_drop();
        current_block->barrier.arrive_and_drop();
        between_blocks.arrive_and_wait();
      }
    });
  for (auto& th : pool) th.join();
}

}  // namespace cuda_emulator

inline void __syncthreads() { cuda_emulator::current_block->barrier.arrive_and_wait(); }

// Lane i gets lane i + delta's v (its own where that lane is outside the warp). Every lane of the warp must call.
template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta) {
  static_assert(sizeof(T) <= 16, "__shfl_down_sync: register too large");
  auto& warp = *cuda_emulator::current_block->warps[cuda_emulator::linear_thread() / cuda_emulator::kWarpSize];
  const unsigned lane = cuda_emulator::linear_thread() % cuda_emulator::kWarpSize;
  std::memcpy(warp.slots[lane], &v, sizeof(T));
  warp.barrier.arrive_and_wait();
  T out = v;
  if (lane + delta < warp.size) std::memcpy(&out, warp.slots[lane + delta], sizeof(T));
  warp.barrier.arrive_and_wait();
  return out;
}

inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
