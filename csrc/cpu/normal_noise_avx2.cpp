// The AVX2 + FMA entry points of normal_noise.h. Everything after the pragma, including the anonymous-namespace
// copy of normal_noise_kernel.h, is compiled for that target; normal_noise.cpp calls it only on CPUs that have it.
// The headers with inline functions shared with other files come first, compiled for the default target.
#include "normal_noise.h"
#include "simd.h"

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(IG_X86_AVX2_DISPATCH)
#include <immintrin.h>
#pragma GCC target("avx2,fma")
#define IG_NOISE_AVX2 1
#include "normal_noise_kernel.h"

namespace interpgan {
namespace normal_noise {

void fill_normal_avx2(uint64_t key, int64_t first, int64_t count, float* out) {
  fill_chunks<float>(key, first, count, out);
}
void fill_normal_avx2(uint64_t key, int64_t first, int64_t count, double* out) {
  fill_chunks<double>(key, first, count, out);
}

}  // namespace normal_noise
}  // namespace interpgan
#endif
