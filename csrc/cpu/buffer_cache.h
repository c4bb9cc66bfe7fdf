// A small cache of large CPU buffers for the ops' outputs and temporaries.
//
// Fresh memory of this size comes from mmap, and its first touch costs a page fault and the kernel's zeroing of
// every 4 KiB page: for group_energy's backward at [64, 512, 16x16], C = 24, a third of the op (df and dW are
// 46 MB). A training loop asks for the same sizes every step, so the ops keep the buffers their outputs released
// and hand them out again, already mapped. Like torch.cuda's caching allocator, but only for these ops' buffers.
//
// The cache holds at most INTERPGAN_CPU_CACHE_MB (default 1024) of released buffers; 0 turns it off.
#pragma once

#include <ATen/ATen.h>
#include <cstdint>

namespace interpgan {
namespace buffer_cache {

// Buffers smaller than this come from at::empty: malloc's heap already reuses them.
constexpr int64_t kMinBytes = int64_t(1) << 20;

// An uninitialised contiguous CPU tensor, like at::empty, from the cache when it is large enough.
at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype);

struct Stats {
  int64_t cached_bytes;   // released buffers held for reuse
  int64_t cached_blocks;
  int64_t in_use_bytes;   // buffers handed out and not yet released
  int64_t hits, misses;   // requests served from the cache / by a fresh allocation
  int64_t limit_bytes;
};
Stats stats();

// Frees every released buffer (like torch.cuda.empty_cache()); those in use return to the cache when released.
void release_cached();

// For tests: another thread holds the cache's lock for `seconds`; returns once it has it.
void hold_lock_for_testing(double seconds);

}  // namespace buffer_cache
}  // namespace interpgan
