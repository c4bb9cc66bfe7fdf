// The vector code of normal_noise.h: Philox4x32-10 and Box–Muller on 8 lanes. Included by normal_noise.cpp
// (portable: SSE2 on x86-64) and by normal_noise_avx2.cpp (compiled for AVX2 + FMA, with IG_NOISE_AVX2). Its
// functions are in an anonymous namespace: each of those files has its own copy, built for its own target, so
// the linker can never pick the AVX2 copy of a function for the portable code.
#pragma once

#include "normal_noise.h"
#include "simd.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#if defined(IG_X86_SSE2)
#include <immintrin.h>
#endif

namespace interpgan {
namespace normal_noise {
namespace {

using U32 = simd::Vec<uint32_t, kLanes>;
using I32 = simd::Vec<int32_t, kLanes>;
using U64 = simd::Vec<uint64_t, kLanes / 2>;
using U64x2 = simd::Vec<uint64_t, 2>;

// Philox works on 32-bit words held in the low halves of 64-bit lanes, which is what pmuludq multiplies: 4 lanes
// to a U64, the counters' even lanes in one and the odd ones in another. The high halves are never read (the
// multiply ignores them, the outputs drop them), so nothing masks them.

// The 64-bit products of the low halves of x's lanes by m. (GCC's generic vector code would multiply the 64-bit
// lanes in full: three multiplies, or shifts and adds for a constant.)
IG_INLINE U64 low_products(U64 x, uint32_t m) {
#if defined(IG_NOISE_AVX2)
  return (U64)_mm256_mul_epu32((__m256i)x, _mm256_set1_epi64x(m));
#elif defined(IG_X86_SSE2)
  const U64x2 x0 = simd::lanes<0, 2>(x), x1 = simd::lanes<2, 2>(x);
  const __m128i mm = _mm_set1_epi64x(m);
  const U64x2 p0 = (U64x2)_mm_mul_epu32((__m128i)x0, mm), p1 = (U64x2)_mm_mul_epu32((__m128i)x1, mm);
  return simd::concat(p0, p1);
#else
  return (x & 0xffffffffu) * m;
#endif
}

// The round keys of Philox4x32-10, made once per call.
struct KeySchedule {
  uint32_t k0[10], k1[10];
  explicit KeySchedule(uint64_t key) {
    k0[0] = uint32_t(key), k1[0] = uint32_t(key >> 32);
    for (int r = 1; r < 10; ++r) k0[r] = k0[r - 1] + 0x9E3779B9u, k1[r] = k1[r - 1] + 0xBB67AE85u;
  }
};

IG_INLINE void philox_rounds(const KeySchedule& ks, U64 (&c)[4]) {
  IG_UNROLL for (int r = 0; r < 10; ++r) {
    const U64 p0 = low_products(c[0], 0xD2511F53u), p1 = low_products(c[2], 0xCD9E8D57u);
    const U64 c0 = (p1 >> 32) ^ c[1] ^ ks.k0[r], c2 = (p0 >> 32) ^ c[3] ^ ks.k1[r];
    c[0] = c0, c[1] = p1, c[2] = c2, c[3] = p0;  // (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
  }
}

// Philox4x32-10 of the counters (counter + lane, 0, 0, 0) for lanes 0..7; `counter` is a multiple of 8, so the
// low word never carries.
IG_INLINE void philox(const KeySchedule& ks, uint64_t counter, U32 (&out)[4]) {
  const uint32_t lo = uint32_t(counter), hi = uint32_t(counter >> 32);
  U64 even[4] = {U64{0, 2, 4, 6} + lo, U64{} + hi, U64{}, U64{}};
  U64 odd[4] = {U64{1, 3, 5, 7} + lo, U64{} + hi, U64{}, U64{}};
  philox_rounds(ks, even);
  philox_rounds(ks, odd);
  IG_UNROLL for (int i = 0; i < 4; ++i)
    out[i] = simd::even_lanes_interleaved((U32)even[i], (U32)odd[i]);
}

// Per precision: the bit layout, and how many terms of each series reach its last bit: with |s| < 0.172 and
// |phi| <= pi / 4 (below), the first term left out is under half an ulp (float 2^-24, double 2^-53).
template <typename T>
struct Precision;
template <>
struct Precision<float> {
  using Int = int32_t;
  static constexpr int kMantissa = 23;
  static constexpr Int kBias = 127;
  static constexpr float kRound = 0x1p23f;  // x + kRound rounds 0 <= x < 2^22 to an integer, kept in the low bits
  static constexpr int kLogTerms = 5, kSinTerms = 5, kCosTerms = 6;
};
template <>
struct Precision<double> {
  using Int = int64_t;
  static constexpr int kMantissa = 52;
  static constexpr Int kBias = 1023;
  static constexpr double kRound = 0x1p52;
  static constexpr int kLogTerms = 11, kSinTerms = 9, kCosTerms = 10;
};

// The Box–Muller arithmetic works on one AVX2 register of lanes: 8 floats, or 4 doubles (a chunk's 8 double lanes
// are done as two halves). GCC splits wider vectors itself, but turns their compares and ?: into scalar code.
template <typename T>
constexpr int kMathLanes = 32 / sizeof(T);
template <typename T>
using V = simd::Vec<T, kMathLanes<T>>;
template <typename T>
using IntV = simd::Vec<typename Precision<T>::Int, kMathLanes<T>>;

// mask ? a : b lane by lane, in bit operations (SSE2 has no blend).
template <typename T>
IG_INLINE V<T> select(IntV<T> mask, V<T> a, V<T> b) {
  return (V<T>)((mask & (IntV<T>)a) | (~mask & (IntV<T>)b));
}

// ±1/n!: the Taylor coefficients of sin and cos.
template <typename T>
constexpr T taylor(int n) {
  T r = 1;
  for (int i = 2; i <= n; ++i) r /= i;
  return (n / 2) % 2 ? -r : r;
}

// log x for positive normal x. x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| < 0.172, whose odd series converges by a factor s^2 < 0.03 a term.
template <typename T>
IG_INLINE V<T> log_positive(V<T> x) {
  using P = Precision<T>;
  using I = IntV<T>;
  const I bits = (I)x;
  const typename P::Int exponent_mask = (typename P::Int(1) << (8 * sizeof(T) - 1 - P::kMantissa)) - 1;
  const typename P::Int mantissa_mask = (typename P::Int(1) << P::kMantissa) - 1;
  // The exponent as T without an int-to-float conversion (AVX2 has none for 64-bit lanes): kRound + field, exactly.
  V<T> e = (V<T>)(((bits >> P::kMantissa) & exponent_mask) | (I)(V<T>{} + P::kRound)) - (P::kRound + P::kBias);
  V<T> m = (V<T>)((bits & mantissa_mask) | (P::kBias << P::kMantissa));  // [1, 2)
  const I high = m > T(1.4142135623730950488);  // sqrt 2; all ones where true
  m = select<T>(high, m * T(0.5), m);
  e = select<T>(high, e + T(1), e);
  const V<T> s = (m - T(1)) / (m + T(1)), s2 = s * s;
  V<T> sum = V<T>{} + T(1) / (2 * P::kLogTerms - 1);
  for (int k = P::kLogTerms - 2; k >= 0; --k) sum = sum * s2 + T(1) / (2 * k + 1);
  return e * T(0.69314718055994530942) + T(2) * s * sum;
}

// cos and sin of 2 pi u for u in [0, 1): q = round(4 u) quarter turns, exactly, and |phi| <= pi / 4 more.
template <typename T>
IG_INLINE void cos_sin_turns(V<T> u, V<T>& cos_out, V<T>& sin_out) {
  using P = Precision<T>;
  using I = IntV<T>;
  const V<T> t = u * T(4);
  const V<T> rounded = t + P::kRound;  // the nearest integer q to t, in the low bits
  const I q = (I)rounded;
  const V<T> phi = (t - (rounded - P::kRound)) * T(1.5707963267948966192), p2 = phi * phi;
  V<T> s = V<T>{} + taylor<T>(2 * P::kSinTerms - 1), c = V<T>{} + taylor<T>(2 * P::kCosTerms - 2);
  for (int k = P::kSinTerms - 2; k >= 0; --k) s = s * p2 + taylor<T>(2 * k + 1);
  for (int k = P::kCosTerms - 2; k >= 0; --k) c = c * p2 + taylor<T>(2 * k);
  s *= phi;
  // Turning by q quarters: (cos, sin) -> (c, s), (-s, c), (-c, -s), (s, -c). The masks come from q's bits by
  // shifts, not compares (SSE2 has no 64-bit compare): bit 1 of q + 1 and of q is the sign of cos and of sin.
  const I odd = -(q & 1);
  const V<T> a = select<T>(odd, s, c), b = select<T>(odd, c, s);
  constexpr int kSignShift = 8 * sizeof(T) - 2;
  cos_out = (V<T>)((I)a ^ (((q + 1) & 2) << kSignShift));
  sin_out = (V<T>)((I)b ^ ((q & 2) << kSignShift));
}

// The square root lane by lane: GCC makes it one packed instruction when errno need not be set (-fno-math-errno).
template <typename T>
IG_INLINE V<T> sqrt_lanes(V<T> x) {
  V<T> r;
  IG_UNROLL for (int l = 0; l < kMathLanes<T>; ++l) r[l] = std::sqrt(x[l]);
  return r;
}

// Box–Muller, lane by lane: from a radius uniform in (0, 1] and an angle uniform in [0, 1), r cos into cos_out
// and r sin into sin_out.
template <typename T>
IG_INLINE void box_muller(V<T> u, V<T> turn, T* cos_out, T* sin_out) {
  const V<T> r = sqrt_lanes<T>(T(-2) * log_positive<T>(u));
  V<T> c, s;
  cos_sin_turns<T>(turn, c, s);
  simd::vstore(cos_out, r * c);
  simd::vstore(sin_out, r * s);
}

// Lanes [first, first + n) of w, shifted right by `shift`, as T: exact, they fit in 31 bits.
template <typename T, int first, int shift>
IG_INLINE V<T> word_bits(U32 w) {
  const I32 x = (I32)(w >> shift);
  if constexpr (kMathLanes<T> == kLanes) {
    return __builtin_convertvector(x, V<T>);
  } else {
    static_assert(kMathLanes<T> == 4, "double lanes are done in halves");
    return __builtin_convertvector(simd::lanes<first, 4>(x), V<T>);
  }
}

// One chunk: kChunk<T> normals into out.
template <typename T>
IG_INLINE void normal_chunk(const KeySchedule& ks, int64_t chunk, T* out) {
  U32 w[4];
  philox(ks, uint64_t(chunk) * kLanes, w);
  if constexpr (sizeof(T) == 4) {  // two pairs per lane: radius 2^-32 .. 1, angle in 24 bits, both exact
    IG_UNROLL for (int pair = 0; pair < 2; ++pair) {
      const V<T> u = word_bits<T, 0, 1>(w[2 * pair]) * 0x1p-31f + 0x1p-32f;
      const V<T> turn = word_bits<T, 0, 8>(w[2 * pair + 1]) * 0x1p-24f;
      box_muller<T>(u, turn, out + (2 * pair) * kLanes, out + (2 * pair + 1) * kLanes);
    }
  } else {  // one pair per lane, from 31 + 21 bits: radius 2^-53 .. 1 - 2^-53, angle in [0, 1 - 2^-52]
    const auto half = [&](auto first) {
      constexpr int f = decltype(first)::value;
      const V<T> u = word_bits<T, f, 1>(w[0]) * 0x1p-31 + word_bits<T, f, 11>(w[1]) * 0x1p-52 + 0x1p-53;
      const V<T> turn = word_bits<T, f, 1>(w[2]) * 0x1p-31 + word_bits<T, f, 11>(w[3]) * 0x1p-52;
      box_muller<T>(u, turn, out + f, out + kLanes + f);
    };
    half(std::integral_constant<int, 0>{});
    half(std::integral_constant<int, 4>{});
  }
}

// Chunks [first, first + count) into out.
template <typename T>
IG_INLINE void fill_chunks(uint64_t key, int64_t first, int64_t count, T* out) {
  const KeySchedule ks(key);
  for (int64_t k = 0; k < count; ++k) normal_chunk<T>(ks, first + k, out + k * kChunk<T>);
}

}  // namespace
}  // namespace normal_noise
}  // namespace interpgan
