// Vector building blocks shared by the CPU kernels: multiversioned entry points and GCC/Clang vector types.
#pragma once

#include <cstdint>

// A portable build (no -march) still gets AVX2+FMA code where the CPU has it (IG_X86_AVX2_DISPATCH). GCC compiles
// each entry point marked IG_MULTIVERSION twice and picks one at load time; the templates they call are
// force-inlined into them. Code that needs AVX2 intrinsics has a file of its own instead (normal_noise_avx2.cpp).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(INTERPGAN_NO_MULTIVERSION)
#define IG_X86_AVX2_DISPATCH 1
#define IG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define IG_MULTIVERSION
#endif
#define IG_INLINE inline __attribute__((always_inline))
// Functions that take or return vectors are all IG_INLINE, inlined into the entry points, so no call passes a
// vector between code built for different targets; GCC's note that such a call would change the ABI is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
// Register blocks are arrays indexed by constant loops: unrolled, they live in registers, not on the stack.
#define IG_UNROLL _Pragma("GCC unroll 16")

namespace interpgan {
namespace simd {

// Vec<T, N>: N lanes of T as one GCC/Clang vector, so arithmetic on it is packed: one AVX2 instruction per 256
// bits in the AVX2 clone, two SSE ones in the portable clone; N = 1 is the scalar T itself. The typedef lowers
// the vector's alignment to T's, so scalar buffers can hold vectors.
template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(N * sizeof(T)), aligned(sizeof(T))));
};
template <typename T>
struct VecOf<T, 1> {
  using type = T;
};
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;

// Vector loads and stores through an under-aligned vector type. (std::memcpy here compiled to two 128-bit
// loads, a store to the stack and a reload: a store-forwarding stall on every load, measured at 5x slower.)
// The type is re-declared here because V, passed as a template argument, loses the lowered alignment.
template <typename V, typename T>
IG_INLINE V vload(const T* p) {
  if constexpr (sizeof(V) == sizeof(T)) {
    return *p;
  } else {
    typedef T U __attribute__((vector_size(sizeof(V)), aligned(sizeof(T))));
    return *reinterpret_cast<const U*>(p);
  }
}
template <typename V, typename T>
IG_INLINE void vstore(T* p, const V& v) {
  if constexpr (sizeof(V) == sizeof(T)) {
    *p = v;
  } else {
    typedef T U __attribute__((vector_size(sizeof(V)), aligned(sizeof(T))));
    *reinterpret_cast<U*>(p) = v;
  }
}

}  // namespace simd
}  // namespace interpgan
