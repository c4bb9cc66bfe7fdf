// The standard normals of the CUDA Langevin kernel (SPEC §4: "Philox from the torch CUDA generator on GPU").
//
// Thread t of a launch draws from Philox4x32-10 with the generator's seed as key, subsequence t and the launch's
// offset, as torch's own random kernels do (through curand). The engine is ATen's philox_engine, which computes
// curand's Philox4x32-10 and ships with every torch, so the build needs no curand headers: the CUDA build of
// torch >= 2.15 no longer installs them, and a minimal toolkit has none. Box–Muller makes two normals of each
// (uniform, turn) pair: float takes 4 words for its 4 normals, double 8 (53-bit uniforms).
//
// Host and device code: csrc/tests/test_normal_noise.cpp checks it on the CPU (layout, range, distribution).
#pragma once

#include <ATen/core/PhiloxRNGEngine.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace interpgan {
namespace langevin_noise {

constexpr int kPerThread = 4;  // normals per thread
// 32-bit words a thread consumes at most (double): each launch moves the generator's offset by this much.
constexpr uint64_t kWordsPerThread = 8;

// A uniform in (0, 1], never 0, so that its log is finite; and a turn in [0, 1). Both exact in their type.
C10_HOST_DEVICE inline float uniform_positive(uint32_t w) { return (static_cast<float>(w >> 8) + 1.0f) * 0x1p-24f; }
C10_HOST_DEVICE inline float turn(uint32_t w) { return static_cast<float>(w >> 8) * 0x1p-24f; }
C10_HOST_DEVICE inline uint64_t bits53(uint32_t hi, uint32_t lo) {
  return (static_cast<uint64_t>(hi) << 21) | (lo >> 11);
}
C10_HOST_DEVICE inline double uniform_positive(uint32_t hi, uint32_t lo) {
  return (static_cast<double>(bits53(hi, lo)) + 1.0) * 0x1p-53;
}
C10_HOST_DEVICE inline double turn(uint32_t hi, uint32_t lo) { return static_cast<double>(bits53(hi, lo)) * 0x1p-53; }

template <typename T>
C10_HOST_DEVICE inline void box_muller(T u, T t, T& a, T& b) {
  const T r = std::sqrt(T(-2) * std::log(u));
  T s, c;
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) sincospif(T(2) * t, &s, &c);
  else sincospi(T(2) * t, &s, &c);
#else
  const T angle = T(2 * 3.14159265358979323846) * t;
  s = std::sin(angle), c = std::cos(angle);
#endif
  a = r * c, b = r * s;
}

// Thread `subsequence`'s 4 normals for a launch at the generator's (seed, offset): offset in 32-bit words, a multiple
// of 4 (torch's PhiloxCudaState; ATen's engine counts 128-bit blocks).
C10_HOST_DEVICE inline void normals(uint64_t seed, uint64_t subsequence, uint64_t offset, float (&out)[kPerThread]) {
  at::philox_engine engine(seed, subsequence, offset / 4);
  uint32_t w[4];
  for (auto& x : w) x = engine();
  box_muller(uniform_positive(w[0]), turn(w[1]), out[0], out[1]);
  box_muller(uniform_positive(w[2]), turn(w[3]), out[2], out[3]);
}

C10_HOST_DEVICE inline void normals(uint64_t seed, uint64_t subsequence, uint64_t offset, double (&out)[kPerThread]) {
  at::philox_engine engine(seed, subsequence, offset / 4);
  uint32_t w[8];
  for (auto& x : w) x = engine();
  box_muller(uniform_positive(w[0], w[1]), turn(w[2], w[3]), out[0], out[1]);
  box_muller(uniform_positive(w[4], w[5]), turn(w[6], w[7]), out[2], out[3]);
}

}  // namespace langevin_noise
}  // namespace interpgan
