// Standard normal noise drawn inside the CPU Langevin kernel (SPEC §4: "the CPU generator on CPU").
//
// The torch generator gives one 64-bit key per call. The noise of element e is then a pure function of the key
// and e: Philox4x32-10 (Salmon et al., SC 2011, the counter-based generator of curand and of torch's CUDA kernels)
// of a counter derived from e, then Box–Muller. Any thread can draw any range of elements, so the result does
// not depend on the number of threads, and 8 counters are computed at once in vector registers. (ATen's normal
// sampler runs on one thread at ~3.5 ns a value, which was most of the op's time.)
//
// Layout: elements come in chunks of kChunk<T>; element e of chunk k is lane e % 8 of Philox counter 8 k + lane.
// A float lane's 4 words give two Box–Muller pairs, 4 normals, at e / 8 = 0..3; a double lane's 4 words give
// one pair (52-bit uniforms), 2 normals, at e / 8 = 0..1. The lane count is fixed, not the ISA's width, so
// the AVX2 and the portable code draw the same values, but for rounding (the AVX2 code contracts into FMAs).
#pragma once

#include <cstdint>

namespace interpgan {
namespace normal_noise {

constexpr int kLanes = 8;
template <typename T>
constexpr int64_t kChunk = sizeof(T) == 4 ? 4 * kLanes : 2 * kLanes;

// The normals of chunks [first, first + count) into out (count * kChunk<T> values), for the key. The AVX2 code
// where the CPU has it (normal_noise_avx2.cpp), else the portable one.
void fill_normal(uint64_t key, int64_t first, int64_t count, float* out);
void fill_normal(uint64_t key, int64_t first, int64_t count, double* out);

}  // namespace normal_noise
}  // namespace interpgan
