// The CUDA kernels of group_energy (SPEC §2) and their launch shapes. group_energy.cu launches them; the C++ test
// csrc/tests/test_cuda_kernels_emulated.cpp runs the same code on the CPU under csrc/tests/cuda_emulator.h (blocks of
// host threads with barriers), so CI checks their indexing, bounds and results without a GPU. Hence no ATen here.
//
// Threads are laid out with the K positions fastest, so every warp reads 32 consecutive positions of one
// filter row of f or W (coalesced). Each thread accumulates a small register tile (samples x groups, or
// samples x filters, or filters x groups), so each load feeds several multiply-adds. The loops are bound by
// the latency of their loads, so the tiles are sized for occupancy as much as for reuse (the tile sizes below
// were measured on an H100: bench/results/README.md, session 14). Scratch is O(B*C*K) (fbar, S), never
// [B, M, C, K]. Reductions go through fixed-order partials, never float atomics, so results are run-to-run
// identical. Group ids outside [0, C) raise a device-side assert (the CUDA form of the CPU's exact range check,
// which would need a host sync here) and are never used to index memory.
//
//   forward (with or without stats): inverse_sizes, group_means (fbar), group_sums (split over j) + reduce
//             (S = sum_j W f / n_c, and each block's share of g = sum_{c,k} fbar * sum_j W f), sum of the shares
//   backward: input_grad (df) and weight_grad (dW), from the saved stats; without them it recomputes them first
// The stats are fbar then S / n_c, each [B, C, K] in the accumulation dtype.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT
#define INTERPGAN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#define INTERPGAN_LAUNCH_BOUNDS(threads, min_blocks) __launch_bounds__(threads, min_blocks)
#else
#define INTERPGAN_LAUNCH_BOUNDS(threads, min_blocks)
#endif

namespace interpgan {
namespace group_energy_kernels {

constexpr int kTileK = 32;    // positions per block (threadIdx.x)
constexpr int kRows = 8;      // threadIdx.y extent
constexpr int kSumsB = 4;     // group_sums: samples x groups per thread
constexpr int kSumsC = 8;
constexpr int kSplitJ = 8;    // group_sums: chunks of the filter axis
constexpr int kDfB = 8;       // input_grad: samples x filters per thread
constexpr int kDfJ = 4;
constexpr int kDwJ = 4;       // weight_grad: filters x groups per thread
constexpr int kDwC = 4;
constexpr int kMaxGroups = 12288;  // inverse_sizes counts groups in shared memory
constexpr int kFlatThreads = 256;  // threads of a one-dimensional block (inverse_sizes, the reduction)

// inv_n[c] = 1 / n_c, or 0 for an empty group. One block.
template <typename acc_t>
__global__ void inverse_sizes_kernel(const int64_t* __restrict__ groups, acc_t* __restrict__ inv_n, int64_t M,
                                     int64_t C) {
  INTERPGAN_DYNAMIC_SHARED(int, counts);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) counts[c] = 0;
  __syncthreads();
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t q = groups[j];
    CUDA_KERNEL_ASSERT(q >= 0 && q < C && "group_energy: group id out of range");
    if (q >= 0 && q < C) atomicAdd(&counts[q], 1);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    inv_n[c] = counts[c] > 0 ? acc_t(1) / static_cast<acc_t>(counts[c]) : acc_t(0);
}

// fbar[b, c, k] = inv_n[c] * sum_{q_j = c} f[b, j, k]. A block owns one sample and kTileK positions; its
// kRows rows of threads split the filters and accumulate per row in shared memory, one chunk of groups at
// a time (q_j is uniform across a warp: no divergence, no bank conflict), then the rows are summed.
template <typename scalar_t, typename acc_t>
__global__ void group_means_kernel(const scalar_t* __restrict__ f, const int64_t* __restrict__ groups,
                                   const acc_t* __restrict__ inv_n, acc_t* __restrict__ fbar, int64_t B, int64_t M,
                                   int64_t C, int64_t K) {
  constexpr int kChunk = 128 / sizeof(acc_t);  // 32 groups (float) or 16 (double): 32 KB of shared memory
  __shared__ acc_t acc[kRows][kChunk][kTileK];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t k = blockIdx.x * static_cast<int64_t>(kTileK) + tx;
  const int64_t b = blockIdx.y;
  const scalar_t* fb = f + b * M * K + k;
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    for (int c = 0; c < kChunk; ++c) acc[ty][c][tx] = acc_t(0);  // a thread only touches its own column here
    if (k < K) {
#pragma unroll 4
      for (int64_t j = ty; j < M; j += kRows) {
        const int64_t c = groups[j] - c0;
        if (c >= 0 && c < kChunk) acc[ty][c][tx] += static_cast<acc_t>(fb[j * K]);
      }
    }
    __syncthreads();
    if (k < K) {
      for (int c = ty; c < kChunk && c0 + c < C; c += kRows) {
        acc_t sum = 0;
#pragma unroll
        for (int r = 0; r < kRows; ++r) sum += acc[r][c][tx];
        fbar[(b * C + c0 + c) * K + k] = sum * inv_n[c0 + c];
      }
    }
    __syncthreads();
  }
}

// Partial sums over one chunk of filters: S_part[js, b, c, k] = sum_{j in chunk js} W[j, c, k] f[b, j, k], with
// kSumsB samples x kSumsC groups per thread. Grid: x = group block (fastest, so the blocks that read the
// same tile of f run together and f comes from HBM once), y = position tile, z = (sample block, j chunk).
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void group_sums_kernel(const scalar_t* __restrict__ f, const w_t* __restrict__ W, acc_t* __restrict__ S_part,
                                  int64_t B, int64_t M, int64_t C, int64_t K) {
  const int64_t c0 = blockIdx.x * static_cast<int64_t>(kSumsC);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t b0 = ((blockIdx.z / kSplitJ) * static_cast<int64_t>(kRows) + threadIdx.y) * kSumsB;
  const int64_t js = blockIdx.z % kSplitJ;
  if (k >= K || b0 >= B) return;
  const int64_t j_begin = js * M / kSplitJ, j_end = (js + 1) * M / kSplitJ;
  // Pointers walk along j; a thread's loads sit kSumsB rows of f and kSumsC rows of W apart.
  const scalar_t* fp = f + (b0 * M + j_begin) * K + k;
  const w_t* wp = W + (j_begin * C + c0) * K + k;
  const int64_t f_row = M * K, w_step = C * K;
  const int nb = static_cast<int>(min(static_cast<int64_t>(kSumsB), B - b0));
  const int nc = static_cast<int>(min(static_cast<int64_t>(kSumsC), C - c0));
  acc_t acc[kSumsB][kSumsC] = {};
#pragma unroll 1  // 64 registers, 4 blocks per SM: unrolled twice, 127 and 2 blocks, and 62 instead of 47 us (H100)
  for (int64_t j = j_begin; j < j_end; ++j, fp += K, wp += w_step) {
    acc_t w[kSumsC], x[kSumsB];
#pragma unroll
    for (int cc = 0; cc < kSumsC; ++cc) w[cc] = cc < nc ? static_cast<acc_t>(wp[cc * K]) : acc_t(0);
#pragma unroll
    for (int r = 0; r < kSumsB; ++r) x[r] = r < nb ? static_cast<acc_t>(fp[r * f_row]) : acc_t(0);
#pragma unroll
    for (int r = 0; r < kSumsB; ++r)
#pragma unroll
      for (int cc = 0; cc < kSumsC; ++cc) acc[r][cc] += w[cc] * x[r];
  }
  const int64_t BCK = B * C * K;
#pragma unroll
  for (int r = 0; r < kSumsB; ++r)
#pragma unroll
    for (int cc = 0; cc < kSumsC; ++cc)
      if (b0 + r < B && c0 + cc < C) S_part[js * BCK + ((b0 + r) * C + c0 + cc) * K + k] = acc[r][cc];
}

// The sum of v over a block of kFlatThreads threads, in thread 0. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  constexpr int kWarps = kFlatThreads / 32;
  __shared__ acc_t warp_sums[kWarps];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (tid % 32 == 0) warp_sums[tid / 32] = v;
  __syncthreads();
  acc_t s = 0;
  if (tid == 0)
    for (int w = 0; w < kWarps; ++w) s += warp_sums[w];
  return s;
}

// S = inv_n * sum_js S_part, one thread per (b, c, k); block (b, chunk) of kFlatThreads threads. With energy_partial,
// also the block's share of g[b] = sum_{c,k} fbar * (sum_js S_part), in energy_partial[chunk * B + b].
template <typename acc_t>
__global__ void reduce_sums_kernel(const acc_t* __restrict__ S_part, const acc_t* __restrict__ inv_n,
                                   const acc_t* __restrict__ fbar, acc_t* __restrict__ S,
                                   acc_t* __restrict__ energy_partial, int64_t B, int64_t C, int64_t K) {
  const int64_t BCK = B * C * K, CK = C * K;
  const int64_t b = blockIdx.x;
  const int64_t ck = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  acc_t e = 0;
  if (ck < CK) {
    const int64_t i = b * CK + ck;
    acc_t s = 0;
#pragma unroll
    for (int js = 0; js < kSplitJ; ++js) s += S_part[js * BCK + i];
    S[i] = s * inv_n[ck / K];
    if (energy_partial != nullptr) e = fbar[i] * s;
  }
  if (energy_partial == nullptr) return;  // uniform across the grid
  const acc_t total = block_sum(e);
  if (threadIdx.x == 0) energy_partial[blockIdx.y * B + b] = total;
}

// df[b, j, k] = gg[b] * (sum_c W[j, c, k] fbar[b, c, k] + S[b, q_j, k])   (S already divided by n_c; gg read with
// a stride), kDfB samples x kDfJ filters per thread. Grid: x = sample block (fastest, so the blocks that share a
// tile of W run together and hit L2), y = position tile, z = filter tile.
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void input_grad_kernel(const w_t* __restrict__ W, const acc_t* __restrict__ fbar,
                                  const int64_t* __restrict__ groups, const acc_t* __restrict__ S,
                                  const scalar_t* __restrict__ gg, int64_t gg_stride, scalar_t* __restrict__ df,
                                  int64_t B, int64_t M, int64_t C, int64_t K) {
  const int64_t b0 = blockIdx.x * static_cast<int64_t>(kDfB);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j0 = (blockIdx.z * static_cast<int64_t>(kRows) + threadIdx.y) * kDfJ;
  if (k >= K || j0 >= M) return;
  acc_t a[kDfJ][kDfB] = {};
  for (int64_t c = 0; c < C; ++c) {
    acc_t fb[kDfB];
#pragma unroll
    for (int r = 0; r < kDfB; ++r) fb[r] = b0 + r < B ? fbar[((b0 + r) * C + c) * K + k] : acc_t(0);
#pragma unroll
    for (int jj = 0; jj < kDfJ; ++jj) {
      const acc_t w = j0 + jj < M ? static_cast<acc_t>(W[((j0 + jj) * C + c) * K + k]) : acc_t(0);
#pragma unroll
      for (int r = 0; r < kDfB; ++r) a[jj][r] += w * fb[r];
    }
  }
#pragma unroll
  for (int jj = 0; jj < kDfJ; ++jj) {
    const int64_t j = j0 + jj;
    if (j >= M) break;
    const int64_t q = groups[j];
    CUDA_KERNEL_ASSERT(q >= 0 && q < C && "group_energy_backward: group id out of range");
    if (q < 0 || q >= C) continue;
#pragma unroll
    for (int r = 0; r < kDfB; ++r) {
      const int64_t b = b0 + r;
      if (b < B)
        df[(b * M + j) * K + k] =
            static_cast<scalar_t>(static_cast<acc_t>(gg[b * gg_stride]) * (a[jj][r] + S[(b * C + q) * K + k]));
    }
  }
}

// dW[j, c, k] = sum_b gg[b] f[b, j, k] fbar[b, c, k], kDwJ filters x kDwC groups per thread.
// Grid: x = group block (fastest: the blocks reading one tile of f run together), y = position tile,
// z = filter tile.
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void weight_grad_kernel(const scalar_t* __restrict__ f, const acc_t* __restrict__ fbar,
                                   const scalar_t* __restrict__ gg, int64_t gg_stride, w_t* __restrict__ dW,
                                   int64_t B, int64_t M, int64_t C, int64_t K) {
  const int64_t c0 = blockIdx.x * static_cast<int64_t>(kDwC);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j0 = (blockIdx.z * static_cast<int64_t>(kRows) + threadIdx.y) * kDwJ;
  if (k >= K || j0 >= M) return;
  acc_t acc[kDwJ][kDwC] = {};
  for (int64_t b = 0; b < B; ++b) {
    const acc_t g = static_cast<acc_t>(gg[b * gg_stride]);
    acc_t x[kDwJ], fb[kDwC];
#pragma unroll
    for (int jj = 0; jj < kDwJ; ++jj)
      x[jj] = j0 + jj < M ? g * static_cast<acc_t>(f[(b * M + j0 + jj) * K + k]) : acc_t(0);
#pragma unroll
    for (int cc = 0; cc < kDwC; ++cc) fb[cc] = c0 + cc < C ? fbar[(b * C + c0 + cc) * K + k] : acc_t(0);
#pragma unroll
    for (int jj = 0; jj < kDwJ; ++jj)
#pragma unroll
      for (int cc = 0; cc < kDwC; ++cc) acc[jj][cc] += x[jj] * fb[cc];
  }
#pragma unroll
  for (int jj = 0; jj < kDwJ; ++jj)
#pragma unroll
    for (int cc = 0; cc < kDwC; ++cc)
      if (j0 + jj < M && c0 + cc < C) dW[((j0 + jj) * C + c0 + cc) * K + k] = static_cast<w_t>(acc[jj][cc]);
}

// The three products with their operands staged in shared memory: the candidate replacement for group_sums,
// input_grad and weight_grad above, chosen by INTERPGAN_CUDA_PRODUCTS=staged until a GPU has timed both. (The
// direct kernels are bound by the latency of their global loads, one per operand per few multiply-adds; here a
// block loads its tiles with many independent coalesced loads at once, then multiplies from shared memory.)
// Each is, at every position k, a product out[p, q] = sum_r A[r, p] * B[r, q]:
//   group sums:  p = sample b, q = group c, r = filter j:  S_part[js, b, c] = sum_{j in chunk js} f[b, j] W[j, c]
//   weight grad: p = filter j, q = group c, r = sample b:  dW[j, c] = sum_b (gg[b] f[b, j]) fbar[b, c]
//   input grad:  p = filter j, q = sample b, r = group c:  df[b, j] = gg[b] (sum_c W[j, c] fbar[b, c] + S[b, q_j])
// A block owns kTileK positions, kRows * kStagedP of p (kStagedP per thread row), kStagedQ of q (all in each thread:
// kStagedP x kStagedQ accumulators) and one of `splits` chunks of r, which it walks staged_chunk<acc_t>() at a time
// (40 KB of tiles). The chunks' partial sums go to separate outputs (o_split apart), summed later in a fixed order.
// Registers: `ptxas -v` (sm_90a, CUDA 13) gave 86-96 per thread in float, so 2 blocks per SM, and the 384 blocks
// of the group sums and of dW at [64, 512, 16x16], C = 24 took 1.45 waves of an H100's 132 SMs. Bounded to 3 blocks
// per SM: 80 registers, one wave, no spills with float operands (16 bytes with half W). Double gets no minimum (0,
// as when the bound is left out): 128 registers, 2 blocks; a minimum of 2 made it spill. Not yet timed on a GPU.
constexpr int kStagedP = 4;
constexpr int kStagedQ = 8;
template <typename acc_t>
constexpr int staged_chunk() {
  return sizeof(acc_t) == 8 ? 4 : 8;
}
template <typename acc_t>
constexpr int staged_min_blocks() {
  return sizeof(acc_t) == 8 ? 0 : 3;
}
enum class StagedProduct { kGroupSums, kWeightGrad, kInputGrad };

// Element (r, p) of A is A[r * a_r + p * a_p + k], (r, q) of B is B[r * b_r + q * b_q + k], and (p, q) of the output
// of chunk s is out[s * o_split + p * o_p + q * o_q + k]. P, Q, R: the extents of p, q and r.
struct StagedLayout {
  int64_t a_r, a_p, b_r, b_q, o_p, o_q, o_split, P, Q, R, splits;
};

template <StagedProduct kind, typename a_t, typename b_t, typename out_t, typename g_t, typename acc_t>
__global__ void INTERPGAN_LAUNCH_BOUNDS(kTileK * kRows, staged_min_blocks<acc_t>())
    staged_product_kernel(const a_t* __restrict__ A, const b_t* __restrict__ B, StagedLayout L,
                          const g_t* __restrict__ gg, int64_t gg_stride, const int64_t* __restrict__ groups,
                          const acc_t* __restrict__ S, out_t* __restrict__ out, int64_t C, int64_t K) {
  constexpr int kChunk = staged_chunk<acc_t>();
  constexpr int kBlockP = kRows * kStagedP;
  static_assert(kStagedQ == kRows, "the B tile is loaded one q per thread row");
  __shared__ acc_t a_tile[kChunk][kBlockP][kTileK];
  __shared__ acc_t b_tile[kChunk][kStagedQ][kTileK];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t q0 = blockIdx.x * static_cast<int64_t>(kStagedQ);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + tx;
  const int64_t p0 = (blockIdx.z / L.splits) * static_cast<int64_t>(kBlockP);
  const int64_t split = blockIdx.z % L.splits;
  const int64_t r_begin = split * L.R / L.splits, r_end = (split + 1) * L.R / L.splits;
  acc_t acc[kStagedP][kStagedQ] = {};
  for (int64_t r0 = r_begin; r0 < r_end; r0 += kChunk) {
    // Stage: thread row ty loads rows ty, ty + kRows, ... of the A tile and row q = ty of the B tile, for each r of
    // the chunk; its lane is the position, so each warp reads kTileK consecutive values. Outside the problem: 0.
#pragma unroll
    for (int row = ty; row < kChunk * kBlockP; row += kRows) {
      const int rr = row / kBlockP, pp = row % kBlockP;
      const int64_t r = r0 + rr, p = p0 + pp;
      acc_t v = 0;
      if (r < r_end && p < L.P && k < K) {
        v = static_cast<acc_t>(A[r * L.a_r + p * L.a_p + k]);
        if constexpr (kind == StagedProduct::kWeightGrad) v *= static_cast<acc_t>(gg[r * gg_stride]);
      }
      a_tile[rr][pp][tx] = v;
    }
#pragma unroll
    for (int rr = 0; rr < kChunk; ++rr) {
      const int64_t r = r0 + rr, q = q0 + ty;
      b_tile[rr][ty][tx] = r < r_end && q < L.Q && k < K ? static_cast<acc_t>(B[r * L.b_r + q * L.b_q + k]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kChunk; ++rr) {
      acc_t a[kStagedP], b[kStagedQ];
#pragma unroll
      for (int pp = 0; pp < kStagedP; ++pp) a[pp] = a_tile[rr][ty * kStagedP + pp][tx];
#pragma unroll
      for (int qq = 0; qq < kStagedQ; ++qq) b[qq] = b_tile[rr][qq][tx];
#pragma unroll
      for (int pp = 0; pp < kStagedP; ++pp)
#pragma unroll
        for (int qq = 0; qq < kStagedQ; ++qq) acc[pp][qq] += a[pp] * b[qq];
    }
    __syncthreads();  // before the next chunk overwrites the tiles
  }
  if (k >= K) return;
  out += split * L.o_split;
#pragma unroll
  for (int pp = 0; pp < kStagedP; ++pp) {
    const int64_t p = p0 + ty * kStagedP + pp;
    if (p >= L.P) break;
    int64_t group = 0;
    if constexpr (kind == StagedProduct::kInputGrad) {
      group = groups[p];
      CUDA_KERNEL_ASSERT(group >= 0 && group < C && "group_energy_backward: group id out of range");
      if (group < 0 || group >= C) continue;
    }
#pragma unroll
    for (int qq = 0; qq < kStagedQ; ++qq) {
      const int64_t q = q0 + qq;
      if (q >= L.Q) break;
      acc_t v = acc[pp][qq];
      if constexpr (kind == StagedProduct::kInputGrad)
        v = static_cast<acc_t>(gg[q * gg_stride]) * (v + S[(q * C + group) * K + k]);
      out[p * L.o_p + q * L.o_q + k] = static_cast<out_t>(v);
    }
  }
}

// The layouts of the three staged products, for f [B, M, K], W [M, C, K] and fbar, S [B, C, K].
inline StagedLayout group_sums_layout(int64_t B, int64_t M, int64_t C, int64_t K) {
  return {K, M * K, C * K, K, C * K, K, B * C * K, B, C, M, kSplitJ};  // into S_part [kSplitJ, B, C, K]
}
inline StagedLayout weight_grad_layout(int64_t B, int64_t M, int64_t C, int64_t K) {
  return {M * K, K, C * K, K, C * K, K, 0, M, C, B, 1};
}
inline StagedLayout input_grad_layout(int64_t B, int64_t M, int64_t C, int64_t K) {
  return {K, C * K, K, C * K, K, M * K, 0, M, B, C, 1};
}

// Launch shapes, shared by group_energy.cu and the emulated test. Blocks are (kTileK, kRows) threads, except
// inverse_sizes and the reduction (kFlatThreads); the .cu checks the grid's limits.
struct Grid {
  int64_t x, y, z;
};
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline Grid means_grid(int64_t B, int64_t K) { return {ceil_div(K, kTileK), B, 1}; }
inline Grid sums_grid(int64_t B, int64_t C, int64_t K) {
  return {ceil_div(C, kSumsC), ceil_div(K, kTileK), ceil_div(B, kRows * kSumsB) * kSplitJ};
}
inline Grid reduce_grid(int64_t B, int64_t C, int64_t K) { return {B, ceil_div(C * K, kFlatThreads), 1}; }
// energy_partial of the reduction holds reduce_grid(...).y * B values
inline Grid input_grad_grid(int64_t B, int64_t M, int64_t K) {
  return {ceil_div(B, kDfB), ceil_div(K, kTileK), ceil_div(M, kRows * kDfJ)};
}
inline Grid weight_grad_grid(int64_t M, int64_t C, int64_t K) {
  return {ceil_div(C, kDwC), ceil_div(K, kTileK), ceil_div(M, kRows * kDwJ)};
}
inline Grid staged_product_grid(const StagedLayout& L, int64_t K) {
  return {ceil_div(L.Q, kStagedQ), ceil_div(K, kTileK), ceil_div(L.P, kRows * kStagedP) * L.splits};
}

}  // namespace group_energy_kernels
}  // namespace interpgan
