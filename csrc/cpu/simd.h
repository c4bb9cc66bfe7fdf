// Vector building blocks shared by the CPU kernels: multiversioned entry points, GCC/Clang vector types, lane shuffles.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

// Which vector code a build gets:
// - x86-64 with GCC, or with Clang 14+ on glibc Linux: SSE2 (the baseline), and AVX2 where the CPU has it
//   (IG_X86_AVX2_DISPATCH), with no -march. The compiler builds each entry point marked IG_MULTIVERSION twice and
//   the loader picks one (an ifunc); the templates they call are force-inlined into them. Code that needs AVX2
//   intrinsics has a file of its own (normal_noise_avx2.cpp).
// - x86-64 with an older Clang, or where there are no ifuncs (macOS): SSE2 only.
// - Any other CPU (arm64: Apple silicon, Graviton, Grace): the portable code, GCC/Clang vectors that the compiler
//   maps to the CPU's own (NEON). INTERPGAN_PORTABLE_SIMD builds that code on x86-64 too, so that it is tested.
#if defined(__SSE2__) && !defined(INTERPGAN_PORTABLE_SIMD)
#define IG_X86_SSE2 1
#endif
// Clang's target_clones (14+) need ifuncs: ELF with glibc (<cstdint> above defines __GLIBC__), not macOS or musl.
// (Clang defines __GNUC__ too, as 4.)
#if defined(__clang__) ? (__clang_major__ >= 14 && defined(__ELF__) && defined(__GLIBC__)) : defined(__GNUC__)
#define IG_COMPILER_CLONES 1
#endif
#if defined(IG_X86_SSE2) && defined(__x86_64__) && defined(IG_COMPILER_CLONES) && !defined(INTERPGAN_NO_MULTIVERSION)
#define IG_X86_AVX2_DISPATCH 1
#if __GNUC__ >= 12 && !defined(__clang__)
#define IG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
// GCC 11's dispatcher knows no ISA levels. Clang's reads x86-64-v3 from the CPU model of the runtime it links,
// which GCC < 12's libgcc (Ubuntu 22.04's) leaves unset, and Clang 15 tests it wrongly: the clone would never run.
// Both get an AVX2 clone, chosen by the AVX2 bit every runtime sets, without FMA (so no contraction into FMAs:
// ~1.2x slower than the x86-64-v3 clone at the 512-filter shape).
#define IG_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#else
#define IG_MULTIVERSION
#endif
// Clang and GCC 12+ have __builtin_shufflevector; GCC 11 (Ubuntu 22.04's and RHEL 9's compiler) does not, and the
// shuffles below build the same lanes another way there.
#if defined(__clang__) || __GNUC__ >= 12
#define IG_SHUFFLEVECTOR 1
#endif
#define IG_INLINE inline __attribute__((always_inline))
// Functions that take or return vectors are all IG_INLINE, inlined into the entry points, so no call passes a
// vector between code built for different targets; GCC's note that such a call would change the ABI is moot
// (setup.py and CMakeLists.txt build with -Wno-psabi: this pragma does not silence the note).
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
IG_INLINE void vstore(T* p, V v) {  // by value: a reference would assume V's full alignment
  if constexpr (sizeof(V) == sizeof(T)) {
    *p = v;
  } else {
    typedef T U __attribute__((vector_size(sizeof(V)), aligned(sizeof(T))));
    *reinterpret_cast<U*>(p) = v;
  }
}

// Lane shuffles.
template <typename V>
using LaneOf = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;
template <typename V>
constexpr int kLanesOf = int(sizeof(V) / sizeof(LaneOf<V>));

template <int first, typename V, int... i>
IG_INLINE Vec<LaneOf<V>, int(sizeof...(i))> lanes_impl(V v, std::integer_sequence<int, i...>) {
#if defined(IG_SHUFFLEVECTOR)
  return __builtin_shufflevector(v, v, (first + i)...);
#else
  return Vec<LaneOf<V>, int(sizeof...(i))>{v[first + i]...};
#endif
}
// Lanes [first, first + N) of v.
template <int first, int N, typename V>
IG_INLINE Vec<LaneOf<V>, N> lanes(V v) {
  return lanes_impl<first>(v, std::make_integer_sequence<int, N>{});
}

template <typename V, int... i>
IG_INLINE Vec<LaneOf<V>, 2 * int(sizeof...(i))> concat_impl(V a, V b, std::integer_sequence<int, i...>) {
#if defined(IG_SHUFFLEVECTOR)
  return __builtin_shufflevector(a, b, i..., (int(sizeof...(i)) + i)...);
#else
  return Vec<LaneOf<V>, 2 * int(sizeof...(i))>{a[i]..., b[i]...};
#endif
}
// a's lanes, then b's.
template <typename V>
IG_INLINE Vec<LaneOf<V>, 2 * kLanesOf<V>> concat(V a, V b) {
  return concat_impl(a, b, std::make_integer_sequence<int, kLanesOf<V>>{});
}

template <typename V, int... k>
IG_INLINE V even_lanes_interleaved_impl(V a, V b, std::integer_sequence<int, k...>) {
  constexpr int n = sizeof...(k);
#if defined(IG_SHUFFLEVECTOR)
  return __builtin_shufflevector(a, b, (k % 2 == 0 ? k : n + k - 1)...);
#else
  static_assert(sizeof(LaneOf<V>) == 4, "the mask's lanes are as wide as the data's");
  typedef int32_t Mask __attribute__((vector_size(n * 4)));
  return __builtin_shuffle(a, b, Mask{(k % 2 == 0 ? k : n + k - 1)...});
#endif
}
// (a[0], b[0], a[2], b[2], ...): the even lanes of a and b, interleaved.
template <typename V>
IG_INLINE V even_lanes_interleaved(V a, V b) {
  return even_lanes_interleaved_impl(a, b, std::make_integer_sequence<int, kLanesOf<V>>{});
}

// The vector code this build runs on this CPU (interpgan_ext.info()["ext_cpu_vector_code"]).
inline const char* vector_code() {
#if defined(IG_X86_AVX2_DISPATCH)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "avx2 (x86-64: chosen at load)"
                                                                          : "sse2 (x86-64: this CPU has no AVX2)";
#elif defined(IG_X86_SSE2)
  return "sse2 (x86-64: built without the AVX2 clones)";
#elif defined(INTERPGAN_PORTABLE_SIMD)
  return "portable (INTERPGAN_PORTABLE_SIMD)";
#else
  return "portable (the compiler's vectors for this CPU, e.g. NEON)";
#endif
}

}  // namespace simd
}  // namespace interpgan
