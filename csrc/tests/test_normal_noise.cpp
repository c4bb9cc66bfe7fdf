// C++ test of the Langevin kernels' in-kernel noise.
// The CPU's (csrc/cpu/normal_noise*.{h,cpp}): Philox against ATen's own Philox engine and a published known answer,
// log / cos / sin against the C library in long double, whole chunks against Box–Muller written out in scalar long
// double, and the AVX2 entry point against the portable code.
// The CUDA kernel's (csrc/cuda/langevin_step_noise.cuh, host and device code, run here on the host): its layout
// against Box–Muller of ATen's Philox words in long double, the range of its uniforms, and its distribution.
#include <ATen/core/PhiloxRNGEngine.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/normal_noise.h"
#include "cpu/normal_noise_kernel.h"
#include "cuda/langevin_step_noise.cuh"
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

namespace cuda_noise = interpgan::langevin_noise;

// Thread t's normals at (seed, offset) from ATen's Philox words at (seed, subsequence t, offset / 4 blocks):
// float pairs (24-bit uniform in (0, 1], 24-bit turn) from words (0, 1) and (2, 3); double pairs (53-bit each)
// from words (0, 1 | 2, 3) and (4, 5 | 6, 7).
template <typename T>
static void cuda_noise_in_long_double(uint64_t seed, uint64_t t, uint64_t offset, long double (&out)[4]) {
  at::philox_engine engine(seed, t, offset / 4);
  uint32_t w[8];
  for (auto& x : w) x = engine();
  const long double pi2 = 2 * 3.14159265358979323846264338327950288L;
  for (int pair = 0; pair < 2; ++pair) {
    long double u, turn;
    if (sizeof(T) == 4) {
      u = std::ldexp((long double)(w[2 * pair] >> 8) + 1, -24), turn = std::ldexp((long double)(w[2 * pair + 1] >> 8), -24);
    } else {
      const uint32_t* q = w + 4 * pair;
      u = std::ldexp((long double)q[0] * 2097152 + (q[1] >> 11) + 1, -53);
      turn = std::ldexp((long double)q[2] * 2097152 + (q[3] >> 11), -53);
    }
    const long double r = std::sqrt(-2 * std::log(u));
    out[2 * pair] = r * std::cos(pi2 * turn), out[2 * pair + 1] = r * std::sin(pi2 * turn);
  }
}

template <typename T>
static void test_cuda_noise_layout(double tolerance) {
  double worst = 0;
  for (uint64_t seed : {uint64_t(0), uint64_t(67280421310721), ~uint64_t(0)})
    for (uint64_t offset : {uint64_t(0), uint64_t(8), uint64_t(0x123456789abcdef0)})
      for (uint64_t t : {uint64_t(0), uint64_t(1), uint64_t(255), uint64_t(1) << 40}) {
        T got[4];
        long double want[4];
        cuda_noise::normals(seed, t, offset, got);
        cuda_noise_in_long_double<T>(seed, t, offset, want);
        for (int i = 0; i < 4; ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i]) / (1 + std::fabs(want[i]))));
      }
  std::printf("CUDA noise, %s: against Box-Muller of ATen's Philox words %.2e\n", sizeof(T) == 4 ? "float" : "double",
              worst);
  EXPECT(worst < tolerance, "the CUDA kernel's normals are Box-Muller of ATen's Philox words, as laid out");
}

// The uniforms at the extreme words: never 0 (a log of 0 would give an infinite normal), at most 1, turns below 1.
static void test_cuda_noise_range() {
  EXPECT(cuda_noise::uniform_positive(0u) > 0 && cuda_noise::uniform_positive(~0u) == 1.0f, "float uniform in (0, 1]");
  EXPECT(cuda_noise::uniform_positive(0u, 0u) > 0 && cuda_noise::uniform_positive(~0u, ~0u) == 1.0, "double uniform in (0, 1]");
  EXPECT(cuda_noise::turn(~0u) < 1.0f && cuda_noise::turn(~0u, ~0u) < 1.0, "turns in [0, 1)");
  float a, b;
  cuda_noise::box_muller(cuda_noise::uniform_positive(0u), 0.25f, a, b);
  EXPECT(std::isfinite(a) && std::isfinite(b) && b > 5.7f, "the smallest uniform gives a finite normal");
}

// N(0, 1) over 2^20 values of one launch (2^18 threads): the first four moments, P(|x| > 2), the largest gap between
// the empirical and the normal CDF (Kolmogorov-Smirnov), and no correlation with the next launch (offset + 8 words).
// Each bound is several standard errors: the values are fixed by the seed, so this passes or fails for good.
template <typename T>
static void test_cuda_noise_distribution(uint64_t seed) {
  const int64_t threads = int64_t(1) << 18, n = 4 * threads;
  std::vector<double> x(n);
  double m1 = 0, m2 = 0, m3 = 0, m4 = 0, tails = 0, cross = 0;
  for (int64_t t = 0; t < threads; ++t) {
    T now[4], next[4];
    cuda_noise::normals(seed, uint64_t(t), 1000, now);
    cuda_noise::normals(seed, uint64_t(t), 1000 + cuda_noise::kWordsPerThread, next);
    for (int i = 0; i < 4; ++i) {
      const double v = now[i];
      x[4 * t + i] = v;
      m1 += v, m2 += v * v, m3 += v * v * v, m4 += v * v * v * v;
      tails += std::fabs(v) > 2;
      cross += v * double(next[i]);
    }
  }
  m1 /= n, m2 /= n, m3 /= n, m4 /= n, tails /= n, cross /= n;
  std::sort(x.begin(), x.end());
  double ks = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double cdf = 0.5 * std::erfc(-x[i] / std::sqrt(2.0));
    ks = std::max({ks, std::fabs(cdf - double(i) / n), std::fabs(cdf - double(i + 1) / n)});
  }
  const double se = 1 / std::sqrt(double(n));
  std::printf("CUDA noise, %s, %lld values: mean %.4f, var %.4f, skew %.4f, kurtosis %.4f, P(|x|>2) %.5f, "
              "KS %.5f, corr(next launch) %.4f\n",
              sizeof(T) == 4 ? "float" : "double", (long long)n, m1, m2, m3, m4, tails, ks, cross);
  EXPECT(std::fabs(m1) < 5 * se, "CUDA noise mean 0");
  EXPECT(std::fabs(m2 - 1) < 5 * std::sqrt(2.0) * se, "CUDA noise variance 1");
  EXPECT(std::fabs(m3) < 5 * std::sqrt(15.0) * se, "CUDA noise skewness 0");
  EXPECT(std::fabs(m4 - 3) < 5 * std::sqrt(96.0) * se, "CUDA noise kurtosis 3");
  EXPECT(std::fabs(tails - 0.0455003) < 5 * std::sqrt(0.0455 * 0.9545) * se, "CUDA noise P(|x| > 2)");
  EXPECT(ks < 1.95 * se, "CUDA noise: Kolmogorov-Smirnov against N(0, 1) (p > 0.001)");
  EXPECT(std::fabs(cross) < 5 * se, "CUDA noise: consecutive launches uncorrelated");
}

int main() {
#if defined(IG_X86_SSE2)
  std::printf("this file's copy of the noise code: SSE2 (x86-64's baseline)\n");
#else
  std::printf("this file's copy of the noise code: the portable one (arm64's)\n");
#endif
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

  test_cuda_noise_layout<float>(1e-6);
  test_cuda_noise_layout<double>(1e-13);
  test_cuda_noise_range();
  test_cuda_noise_distribution<float>(0x243f6a8885a308d3u);
  test_cuda_noise_distribution<double>(42);

  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all normal_noise tests passed\n");
  return 0;
}
