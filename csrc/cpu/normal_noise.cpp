// The portable entry points of normal_noise.h (SSE2 on x86-64), and the choice of the AVX2 ones at run time.
#include "normal_noise.h"

#include "normal_noise_kernel.h"

namespace interpgan {
namespace normal_noise {

#if defined(IG_X86_AVX2_DISPATCH)
// normal_noise_avx2.cpp
void fill_normal_avx2(uint64_t key, int64_t first, int64_t count, float* out);
void fill_normal_avx2(uint64_t key, int64_t first, int64_t count, double* out);
#endif

namespace {
template <typename T>
void fill(uint64_t key, int64_t first, int64_t count, T* out) {
#if defined(IG_X86_AVX2_DISPATCH)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return fill_normal_avx2(key, first, count, out);
#endif
  fill_chunks<T>(key, first, count, out);
}
}  // namespace

void fill_normal(uint64_t key, int64_t first, int64_t count, float* out) { fill(key, first, count, out); }
void fill_normal(uint64_t key, int64_t first, int64_t count, double* out) { fill(key, first, count, out); }

}  // namespace normal_noise
}  // namespace interpgan
