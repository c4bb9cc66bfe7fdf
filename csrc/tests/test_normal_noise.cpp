// C++ test of the Langevin kernel's in-kernel noise (csrc/cpu/normal_noise*.{h,cpp}): Philox against ATen's own
// Philox engine and a published known answer, log / cos / sin against the C library in long double, whole chunks
// against Box–Muller written out in scalar long double, and the AVX2 entry point against the portable code.
#include <ATen/core/PhiloxRNGEngine.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/normal_noise.h"
#include "cpu/normal_noise_kernel.h"
#include "tests/expect.h"

using namespace interpgan::normal_noise;

// The 4 words of every lane of the chunk at `counter` equal ATen's Philox4x32-10 at (key, offset = counter + lane).
static void test_philox_matches_aten(uint64_t key, uint64_t counter) {
  U32 w[4];
  philox(KeySchedule(key), counter, w);
  for (int lane = 0; lane < kLanes; ++lane) {
    at::philox_engine engine(key, /*subsequence=*/0, /*offset=*/counter + lane);
    for (int i = 0; i < 4; ++i) EXPECT(w[i][lane] == engine(), "Philox word equals ATen's philox_engine");
  }
}

template <typename T>
static double max_log_error() {  // relative, over u in (0, 1] as the kernel draws it
  std::mt19937_64 rng(1);
  double worst = 0;
  for (int i = 0; i < 20000; ++i) {
    V<T> u;
    for (int l = 0; l < kMathLanes<T>; ++l) {
      const double x = std::ldexp(double(rng() >> 11) + 0.5, -53) * (i % 3 == 0 ? 1.0 : std::ldexp(1.0, -int(i % 31)));
      u[l] = T(x);
    }
    const V<T> got = log_positive<T>(u);
    for (int l = 0; l < kMathLanes<T>; ++l) {
      const long double want = std::log((long double)u[l]);
      if (want != 0) worst = std::max(worst, double(std::fabs((got[l] - want) / want)));
    }
  }
  return worst;
}

template <typename T>
static double max_cos_sin_error() {  // absolute, over turns in [0, 1)
  std::mt19937_64 rng(2);
  double worst = 0;
  for (int i = 0; i < 20000; ++i) {
    V<T> u;
    for (int l = 0; l < kMathLanes<T>; ++l) u[l] = T(std::ldexp(double(rng() >> 40), -24));  // exact in a float
    if (i == 0) u[0] = T(0), u[1] = T(0.25), u[2] = T(0.5), u[3] = T(0.125);
    V<T> c, s;
    cos_sin_turns<T>(u, c, s);
    for (int l = 0; l < kMathLanes<T>; ++l) {
      const long double angle = 2 * 3.14159265358979323846264338327950288L * (long double)u[l];
      worst = std::max(worst, double(std::fabs(c[l] - std::cos(angle))));
      worst = std::max(worst, double(std::fabs(s[l] - std::sin(angle))));
    }
  }
  return worst;
}

// Element e of chunk k, from its Philox words, as normal_noise.h lays it out, in long double.
template <typename T>
static long double scalar_normal(uint64_t key, int64_t e) {
  const int64_t chunk = e / kChunk<T>, within = e % kChunk<T>;
  const int lane = int(within % kLanes), slot = int(within / kLanes);
  at::philox_engine engine(key, 0, uint64_t(chunk) * kLanes + lane);
  uint32_t w[4];
  for (auto& x : w) x = engine();
  long double u, turn;
  int pair;
  if (sizeof(T) == 4) {
    pair = slot / 2;
    u = std::ldexp((long double)(w[2 * pair] >> 1), -31) + std::ldexp(1.0L, -32);
    turn = std::ldexp((long double)(w[2 * pair + 1] >> 8), -24);
  } else {
    pair = 0;
    u = std::ldexp((long double)(w[0] >> 1), -31) + std::ldexp((long double)(w[1] >> 11), -52) + std::ldexp(1.0L, -53);
    turn = std::ldexp((long double)(w[2] >> 1), -31) + std::ldexp((long double)(w[3] >> 11), -52);
  }
  const long double r = std::sqrt(-2 * std::log(u)), angle = 2 * 3.14159265358979323846264338327950288L * turn;
  return slot % 2 == 0 ? r * std::cos(angle) : r * std::sin(angle);
}

template <typename T>
static void test_chunks(uint64_t key, double tolerance) {
  const int64_t first = 5, count = 7, n = count * kChunk<T>;
  std::vector<T> dispatched(n), portable(n);
  fill_normal(key, first, count, dispatched.data());  // AVX2 where the CPU has it
  fill_chunks<T>(key, first, count, portable.data());  // this file's copy: the portable code
  double worst_scalar = 0, worst_portable = 0;
  for (int64_t i = 0; i < n; ++i) {
    const long double want = scalar_normal<T>(key, first * kChunk<T> + i);
    worst_scalar = std::max(worst_scalar, double(std::fabs(dispatched[i] - want) / (1 + std::fabs(want))));
    worst_portable = std::max(worst_portable, double(std::fabs(dispatched[i] - portable[i]) / (1 + std::fabs(want))));
  }
  std::printf("%s: chunks vs scalar Box-Muller %.2e, dispatched vs portable %.2e\n", sizeof(T) == 4 ? "float" : "double",
              worst_scalar, worst_portable);
  EXPECT(worst_scalar < tolerance, "chunks equal Box-Muller of their Philox words");
  EXPECT(worst_portable < tolerance, "the AVX2 and portable code agree but for rounding");
}

int main() {
  // Random123's known answer for Philox4x32-10 at counter 0, key 0 (kat_vectors), lane 0 of chunk 0.
  U32 w[4];
  philox(KeySchedule(0), 0, w);
  EXPECT(w[0][0] == 0x6627e8d5u && w[1][0] == 0xe169c58du && w[2][0] == 0xbc57ac4cu && w[3][0] == 0x9b00dbd8u,
         "Philox4x32-10 known answer");
  for (uint64_t key : {uint64_t(0), uint64_t(0x243f6a8885a308d3), ~uint64_t(0)})
    for (uint64_t counter : {uint64_t(0), uint64_t(8), uint64_t(0xfffffff8), uint64_t(0x123456789abcdef0)})
      test_philox_matches_aten(key, counter);

  const double log_f = max_log_error<float>(), log_d = max_log_error<double>();
  const double cs_f = max_cos_sin_error<float>(), cs_d = max_cos_sin_error<double>();
  std::printf("log: float %.2e, double %.2e (relative); cos/sin: float %.2e, double %.2e (absolute)\n", log_f, log_d,
              cs_f, cs_d);
  EXPECT(log_f < 4e-7 && log_d < 1e-15, "log within a few ulp");
  EXPECT(cs_f < 4e-7 && cs_d < 1e-15, "cos and sin within a few ulp");

  test_chunks<float>(0x9e3779b97f4a7c15u, 2e-6);
  test_chunks<double>(0x9e3779b97f4a7c15u, 1e-13);

  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all normal_noise tests passed\n");
  return 0;
}
