// See buffer_cache.h. A released buffer goes to the front of a short list; a request takes the smallest cached
// buffer that fits it and wastes at most half of it, else a fresh one. Past the limit, the least recently
// released buffers are freed.
#include "buffer_cache.h"

#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <pthread.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace interpgan {
namespace buffer_cache {
namespace {

constexpr int64_t kDefaultLimitMB = 1024;
constexpr int64_t kRounding = int64_t(64) << 10;  // sizes are rounded up to 64 KiB, so near sizes share buffers

int64_t limit_from_env() {
  const char* value = std::getenv("INTERPGAN_CPU_CACHE_MB");
  if (value == nullptr || *value == '\0') return kDefaultLimitMB << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(value, &end, 10);
  if (*end != '\0' || mb < 0) {
    TORCH_WARN("INTERPGAN_CPU_CACHE_MB must be a whole number of MiB >= 0 (0 turns the cache off), got '", value,
               "'; using ", kDefaultLimitMB);
    return kDefaultLimitMB << 20;
  }
  return static_cast<int64_t>(mb) << 20;
}

struct Block {
  void* ptr;
  int64_t bytes;
};

class Cache {
 public:
  // Never destroyed: a tensor released during interpreter shutdown still returns its buffer here.
  static Cache& instance() {
    static Cache* cache = new Cache();
    return *cache;
  }

  int64_t limit() const { return limit_; }

  Block take(int64_t nbytes) {
    const int64_t bytes = (nbytes + kRounding - 1) / kRounding * kRounding;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->bytes >= bytes && it->bytes <= 2 * bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
      if (best != free_.end()) {
        const Block block = *best;
        free_.erase(best);
        cached_ -= block.bytes;
        in_use_ += block.bytes;
        ++hits_;
        return block;
      }
      ++misses_;
    }
    void* ptr = nullptr;
    try {
      ptr = c10::alloc_cpu(bytes);
    } catch (const c10::Error&) {
      release_cached();  // the cached buffers may be what stands in the way
      ptr = c10::alloc_cpu(bytes);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_ += bytes;
    return {ptr, bytes};
  }

  void give_back(Block block) {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= block.bytes;
      if (block.bytes > limit_) {
        evicted.push_back(block);
      } else {
        free_.push_front(block);
        cached_ += block.bytes;
        while (cached_ > limit_) {
          evicted.push_back(free_.back());
          cached_ -= free_.back().bytes;
          free_.pop_back();
        }
      }
    }
    for (const Block& b : evicted) c10::free_cpu(b.ptr);
  }

  void release_cached() {
    std::list<Block> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released.swap(free_);
      cached_ = 0;
    }
    for (const Block& b : released) c10::free_cpu(b.ptr);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cached_, static_cast<int64_t>(free_.size()), in_use_, hits_, misses_, limit_};
  }

  std::mutex& mutex() { return mutex_; }

 private:
  // fork() copies the mutex as it is, but not the thread that may hold it: a child forked while another thread
  // was inside the cache (a DataLoader worker, say) would wait forever on its first op. So fork waits for the
  // mutex, and both processes release it after.
  Cache() : limit_(limit_from_env()) {
    const int status = pthread_atfork(
        [] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); }, [] { instance().mutex_.unlock(); });
    TORCH_CHECK(status == 0, "interpgan buffer cache: pthread_atfork failed with error ", status);
  }

  std::mutex mutex_;
  std::list<Block> free_;  // most recently released first
  const int64_t limit_;
  int64_t cached_ = 0, in_use_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
  const int64_t nbytes = c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype));
  Cache& cache = Cache::instance();
  if (nbytes < kMinBytes || cache.limit() == 0) return at::empty(sizes, options);
  const Block block = cache.take(nbytes);
  return at::from_blob(
      block.ptr, sizes, [block](void*) { Cache::instance().give_back(block); }, options);
}

Stats stats() { return Cache::instance().stats(); }

void release_cached() { Cache::instance().release_cached(); }

void hold_lock_for_testing(double seconds) {
  std::promise<void> locked;
  std::future<void> is_locked = locked.get_future();
  std::thread([seconds, locked = std::move(locked)]() mutable {
    std::lock_guard<std::mutex> lock(Cache::instance().mutex());
    locked.set_value();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }).detach();
  is_locked.wait();
}

}  // namespace buffer_cache
}  // namespace interpgan
