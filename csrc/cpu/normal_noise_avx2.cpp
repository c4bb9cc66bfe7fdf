// The AVX2 + FMA entry points of normal_noise.h. Everything after the pragma, including the anonymous-namespace
// copy of normal_noise_kernel.h, is compiled for that target; normal_noise.cpp calls it only on CPUs that have it.
// The headers with inline functions shared with other files come first, compiled for the default target (with
// GCC, simd.h too; Clang needs it for AVX2: below).
#include "normal_noise.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__clang__) && defined(__x86_64__)
// Clang refuses a call that passes a 256-bit vector between functions built for different targets, even one it
// inlines, so here simd.h's helpers are built for AVX2 too. They are all force-inlined into this file's functions:
// no copy of them is emitted that the linker could give to code built for the default target.
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define IG_CLANG_TARGET_PUSHED 1
#endif
#include "simd.h"

#if defined(IG_X86_AVX2_DISPATCH)
#if !defined(__clang__)
#pragma GCC target("avx2,fma")
#endif
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

#if defined(IG_CLANG_TARGET_PUSHED)
#pragma clang attribute pop
#endif
