// CUDA kernels of group_energy (SPEC §2), forward and backward.
//
// Threads are laid out with the K positions fastest, so every warp reads 32 consecutive positions of one
// filter row of f or W (coalesced). A thread accumulates kBlockB samples x kBlockJ filters (or kBlockJ filters
// x kBlockC groups), so each load feeds several multiply-adds. Scratch is O(B*C*K) (fbar, S), never
// [B, M, C, K]. Reductions go through fixed-order partials, never float atomics, so results are
// run-to-run identical. Group ids outside [0, C) raise a device-side assert (the CUDA form of the CPU's
// exact range check, which would need a host sync here) and are never used to index memory.
//
//   forward : inverse_sizes, group_means, weighted_means<Energy>, sum of block partials
//   backward: inverse_sizes, group_means, group_sums (split over j) + reduce, weighted_means<Grad> (df), weight_grad
#include "../checks.h"
#include "../ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>

namespace interpgan {
namespace {

constexpr int kTileK = 32;    // positions per block (threadIdx.x)
constexpr int kRows = 8;      // threadIdx.y extent
constexpr int kBlockB = 4;    // samples per thread
constexpr int kBlockJ = 4;    // filters per thread
constexpr int kBlockC = 4;    // groups per thread in weight_grad
constexpr int kSplitJ = 8;    // chunks of the filter axis in group_sums
constexpr int kMaxGroups = 12288;  // inverse_sizes counts groups in shared memory

// inv_n[c] = 1 / n_c, or 0 for an empty group. One block.
template <typename acc_t>
__global__ void inverse_sizes_kernel(const int64_t* __restrict__ groups, acc_t* __restrict__ inv_n, int64_t M,
                                     int64_t C) {
  extern __shared__ int counts[];
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
// kBlockB samples x kBlockC groups per thread. Grid: x = group block (fastest, so the blocks that read the
// same tile of f run together and f comes from HBM once), y = position tile, z = (sample block, j chunk).
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void group_sums_kernel(const scalar_t* __restrict__ f, const w_t* __restrict__ W, acc_t* __restrict__ S_part,
                                  int64_t B, int64_t M, int64_t C, int64_t K) {
  const int64_t c0 = blockIdx.x * static_cast<int64_t>(kBlockC);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t b0 = ((blockIdx.z / kSplitJ) * static_cast<int64_t>(kRows) + threadIdx.y) * kBlockB;
  const int64_t js = blockIdx.z % kSplitJ;
  if (k >= K || b0 >= B) return;
  const int64_t j_begin = js * M / kSplitJ, j_end = (js + 1) * M / kSplitJ;
  acc_t acc[kBlockB][kBlockC] = {};
#pragma unroll 2
  for (int64_t j = j_begin; j < j_end; ++j) {
    acc_t w[kBlockC], x[kBlockB];
#pragma unroll
    for (int cc = 0; cc < kBlockC; ++cc) w[cc] = c0 + cc < C ? static_cast<acc_t>(W[(j * C + c0 + cc) * K + k]) : acc_t(0);
#pragma unroll
    for (int r = 0; r < kBlockB; ++r) x[r] = b0 + r < B ? static_cast<acc_t>(f[((b0 + r) * M + j) * K + k]) : acc_t(0);
#pragma unroll
    for (int r = 0; r < kBlockB; ++r)
#pragma unroll
      for (int cc = 0; cc < kBlockC; ++cc) acc[r][cc] += w[cc] * x[r];
  }
  const int64_t BCK = B * C * K;
#pragma unroll
  for (int r = 0; r < kBlockB; ++r)
#pragma unroll
    for (int cc = 0; cc < kBlockC; ++cc)
      if (b0 + r < B && c0 + cc < C) S_part[js * BCK + ((b0 + r) * C + c0 + cc) * K + k] = acc[r][cc];
}

// S = inv_n * sum_js S_part. One thread per (b, c, k).
template <typename acc_t>
__global__ void reduce_sums_kernel(const acc_t* __restrict__ S_part, const acc_t* __restrict__ inv_n,
                                   acc_t* __restrict__ S, int64_t BCK, int64_t C, int64_t K) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= BCK) return;
  acc_t s = 0;
#pragma unroll
  for (int js = 0; js < kSplitJ; ++js) s += S_part[js * BCK + i];
  S[i] = s * inv_n[(i / K) % C];
}

// Sum v[r] over the block; threads 0..kBlockB-1 get the totals. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ void block_sum(acc_t (&v)[kBlockB], acc_t* out) {
  constexpr int kWarps = kTileK * kRows / 32;
  __shared__ acc_t warp_sums[kBlockB][kWarps];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int r = 0; r < kBlockB; ++r) {
    for (int offset = 16; offset > 0; offset /= 2) v[r] += __shfl_down_sync(0xffffffffu, v[r], offset);
    if (tid % 32 == 0) warp_sums[r][tid / 32] = v[r];
  }
  __syncthreads();
  if (tid < kBlockB) {
    acc_t s = 0;
    for (int w = 0; w < kWarps; ++w) s += warp_sums[tid][w];
    out[tid] = s;
  }
}

enum class Mode { Energy, Grad };

// A[b, j, k] = sum_c W[j, c, k] fbar[b, c, k] for kBlockB samples x kBlockJ filters per thread. Then
//   Energy: partial[block, b] = sum over the block of f[b, j, k] * A[b, j, k]
//   Grad:   df[b, j, k] = gg[b] * (A[b, j, k] + S[b, q_j, k])   (S already divided by n_c)
// Grid: x = sample block (fastest, so the blocks that share a tile of W run together and hit L2),
// y = position tile, z = filter tile.
template <Mode mode, typename scalar_t, typename w_t, typename acc_t>
__global__ void weighted_means_kernel(const scalar_t* __restrict__ f, const w_t* __restrict__ W,
                                      const acc_t* __restrict__ fbar, const int64_t* __restrict__ groups,
                                      const acc_t* __restrict__ S, const scalar_t* __restrict__ gg,
                                      acc_t* __restrict__ partial, scalar_t* __restrict__ df, int64_t B, int64_t M,
                                      int64_t C, int64_t K) {
  const int64_t b0 = blockIdx.x * static_cast<int64_t>(kBlockB);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j0 = (blockIdx.z * static_cast<int64_t>(kRows) + threadIdx.y) * kBlockJ;
  const bool k_ok = k < K;
  acc_t a[kBlockJ][kBlockB] = {};
  if (k_ok && j0 < M) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t fb[kBlockB];
#pragma unroll
      for (int r = 0; r < kBlockB; ++r) fb[r] = b0 + r < B ? fbar[((b0 + r) * C + c) * K + k] : acc_t(0);
#pragma unroll
      for (int jj = 0; jj < kBlockJ; ++jj) {
        const acc_t w = j0 + jj < M ? static_cast<acc_t>(W[((j0 + jj) * C + c) * K + k]) : acc_t(0);
#pragma unroll
        for (int r = 0; r < kBlockB; ++r) a[jj][r] += w * fb[r];
      }
    }
  }
  if constexpr (mode == Mode::Energy) {
    acc_t e[kBlockB] = {};
#pragma unroll
    for (int jj = 0; jj < kBlockJ; ++jj)
#pragma unroll
      for (int r = 0; r < kBlockB; ++r)
        if (k_ok && j0 + jj < M && b0 + r < B) e[r] += a[jj][r] * static_cast<acc_t>(f[((b0 + r) * M + j0 + jj) * K + k]);
    acc_t totals[kBlockB];
    block_sum<acc_t>(e, totals);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    if (tid < kBlockB && b0 + tid < B)
      partial[(blockIdx.z * static_cast<int64_t>(gridDim.y) + blockIdx.y) * B + b0 + tid] = totals[tid];
  } else {
    if (!k_ok) return;
#pragma unroll
    for (int jj = 0; jj < kBlockJ; ++jj) {
      const int64_t j = j0 + jj;
      if (j >= M) break;
      const int64_t q = groups[j];
      CUDA_KERNEL_ASSERT(q >= 0 && q < C && "group_energy_backward: group id out of range");
      if (q < 0 || q >= C) continue;
#pragma unroll
      for (int r = 0; r < kBlockB; ++r) {
        const int64_t b = b0 + r;
        if (b < B) df[(b * M + j) * K + k] = static_cast<scalar_t>(static_cast<acc_t>(gg[b]) * (a[jj][r] + S[(b * C + q) * K + k]));
      }
    }
  }
}

// dW[j, c, k] = sum_b gg[b] f[b, j, k] fbar[b, c, k], kBlockJ filters x kBlockC groups per thread.
// Grid: x = group block (fastest: the blocks reading one tile of f run together), y = position tile,
// z = filter tile.
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void weight_grad_kernel(const scalar_t* __restrict__ f, const acc_t* __restrict__ fbar,
                                   const scalar_t* __restrict__ gg, w_t* __restrict__ dW, int64_t B, int64_t M,
                                   int64_t C, int64_t K) {
  const int64_t c0 = blockIdx.x * static_cast<int64_t>(kBlockC);
  const int64_t k = blockIdx.y * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j0 = (blockIdx.z * static_cast<int64_t>(kRows) + threadIdx.y) * kBlockJ;
  if (k >= K || j0 >= M) return;
  acc_t acc[kBlockJ][kBlockC] = {};
  for (int64_t b = 0; b < B; ++b) {
    const acc_t g = static_cast<acc_t>(gg[b]);
    acc_t x[kBlockJ], fb[kBlockC];
#pragma unroll
    for (int jj = 0; jj < kBlockJ; ++jj) x[jj] = j0 + jj < M ? g * static_cast<acc_t>(f[(b * M + j0 + jj) * K + k]) : acc_t(0);
#pragma unroll
    for (int cc = 0; cc < kBlockC; ++cc) fb[cc] = c0 + cc < C ? fbar[(b * C + c0 + cc) * K + k] : acc_t(0);
#pragma unroll
    for (int jj = 0; jj < kBlockJ; ++jj)
#pragma unroll
      for (int cc = 0; cc < kBlockC; ++cc) acc[jj][cc] += x[jj] * fb[cc];
  }
#pragma unroll
  for (int jj = 0; jj < kBlockJ; ++jj)
#pragma unroll
    for (int cc = 0; cc < kBlockC; ++cc)
      if (j0 + jj < M && c0 + cc < C) dW[((j0 + jj) * C + c0 + cc) * K + k] = static_cast<w_t>(acc[jj][cc]);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

dim3 checked_grid(int64_t x, int64_t y, int64_t z, const char* what) {
  TORCH_CHECK(x <= INT32_MAX && y <= 65535 && z <= 65535, "group_energy (CUDA): problem too large for the ", what,
              " launch grid (", x, ", ", y, ", ", z, ")");
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y), static_cast<unsigned>(z));
}

template <typename acc_t>
at::Tensor inverse_sizes(const at::Tensor& groups, const EnergyShape& s, const at::TensorOptions& opts,
                         cudaStream_t stream) {
  TORCH_CHECK(s.C <= kMaxGroups, "group_energy (CUDA): at most ", kMaxGroups, " groups are supported, got C=", s.C);
  auto inv_n = at::empty({s.C}, opts);
  inverse_sizes_kernel<acc_t><<<1, 256, s.C * sizeof(int), stream>>>(groups.data_ptr<int64_t>(),
                                                                     inv_n.data_ptr<acc_t>(), s.M, s.C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return inv_n;
}

// Calls fn(scalar_t{}, w_t{}) for f's dtype and W's dtype (W may be float32 when f is half/bfloat16);
// fn recovers the types with decltype.
template <typename Fn>
void dispatch_energy_types(const at::Tensor& f, const at::Tensor& W, Fn&& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "group_energy_cuda", [&] {
    if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
      if (W.scalar_type() == at::kFloat) {
        fn(scalar_t{}, float{});
        return;
      }
    }
    fn(scalar_t{}, scalar_t{});
  });
}

at::ScalarType acc_dtype(const at::Tensor& f) {
  return f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

at::Tensor group_energy_cuda(const at::Tensor& f_in, const at::Tensor& W_in, const at::Tensor& groups_in) {
  const EnergyShape s = check_group_energy_args("group_energy", f_in, W_in, groups_in);
  const c10::cuda::OptionalCUDAGuard guard(f_in.device());
  const auto f = as_bmk(f_in, s);
  const auto W = W_in.contiguous();
  const auto groups = groups_in.contiguous();
  if (s.B == 0 || s.K == 0 || s.M == 0) return at::zeros({s.B}, W.options());
  const auto acc_opts = f.options().dtype(acc_dtype(f));
  auto fbar = at::empty({s.B, s.C, s.K}, acc_opts);
  const dim3 block(kTileK, kRows);
  const dim3 grid = checked_grid(ceil_div(s.B, kBlockB), ceil_div(s.K, kTileK), ceil_div(s.M, kRows * kBlockJ),
                                 "energy");
  auto partial = at::empty({static_cast<int64_t>(grid.y) * grid.z, s.B}, acc_opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor inv_n = inverse_sizes<acc_t>(groups, s, acc_opts, stream);
    group_means_kernel<scalar_t, acc_t><<<checked_grid(ceil_div(s.K, kTileK), s.B, 1, "means"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), groups.data_ptr<int64_t>(), inv_n.data_ptr<acc_t>(), fbar.data_ptr<acc_t>(), s.B, s.M,
        s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    weighted_means_kernel<Mode::Energy, scalar_t, w_t, acc_t><<<grid, block, 0, stream>>>(
        f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), fbar.data_ptr<acc_t>(), groups.data_ptr<int64_t>(), nullptr,
        nullptr, partial.data_ptr<acc_t>(), nullptr, s.B, s.M, s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return partial.sum(0).to(W.scalar_type());
}

// The CUDA kernels do not save the statistics yet: the backward recomputes them (group_means and group_sums,
// ~95 of its ~550 us at [64, 512, 16x16, 24] on an H100). The empty tensor has the CPU's stats dtype.
std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_cuda(const at::Tensor& f, const at::Tensor& W,
                                                                const at::Tensor& groups) {
  const auto stats_dtype = f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {group_energy_cuda(f, W, groups), at::empty({0}, f.options().dtype(stats_dtype))};
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_cuda(const at::Tensor& grad_out, const at::Tensor& f_in,
                                                              const at::Tensor& W_in, const at::Tensor& groups_in,
                                                              const std::optional<at::Tensor>& /*stats*/,
                                                              std::array<bool, 2> output_mask) {
  const EnergyShape s = check_group_energy_args("group_energy_backward", f_in, W_in, groups_in);
  check_grad_out("group_energy_backward", grad_out, f_in, s.B);
  const c10::cuda::OptionalCUDAGuard guard(f_in.device());
  const auto f = as_bmk(f_in, s);
  const auto W = W_in.contiguous();
  const auto groups = groups_in.contiguous();
  const auto gg = grad_out.to(f.scalar_type()).contiguous();
  const auto [want_df, want_dW] = output_mask;  // an output left out is returned undefined
  auto df = want_df ? at::empty({s.B, s.M, s.K}, f.options()) : at::Tensor();
  auto dW = want_dW ? at::empty({s.M, s.C, s.K}, W.options()) : at::Tensor();
  if (s.B == 0 || s.K == 0 || s.M == 0 || !(want_df || want_dW)) {
    if (want_df) df.zero_();
    if (want_dW) dW.zero_();
    return {want_df ? df.view(f_in.sizes()) : df, dW};
  }
  const auto acc_opts = f.options().dtype(acc_dtype(f));
  const int64_t BCK = s.B * s.C * s.K;
  auto fbar = at::empty({s.B, s.C, s.K}, acc_opts);
  auto S = want_df ? at::empty({s.B, s.C, s.K}, acc_opts) : at::Tensor();  // S is df's alone
  auto S_part = want_df ? at::empty({kSplitJ, BCK}, acc_opts) : at::Tensor();
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kTileK, kRows);
  const int64_t c_blocks = ceil_div(s.C, kBlockC), k_tiles = ceil_div(s.K, kTileK);
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor inv_n = inverse_sizes<acc_t>(groups, s, acc_opts, stream);
    group_means_kernel<scalar_t, acc_t><<<checked_grid(k_tiles, s.B, 1, "means"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), groups.data_ptr<int64_t>(), inv_n.data_ptr<acc_t>(), fbar.data_ptr<acc_t>(), s.B, s.M,
        s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (want_df) {  // S and df
      group_sums_kernel<scalar_t, w_t, acc_t>
          <<<checked_grid(c_blocks, k_tiles, ceil_div(s.B, kRows * kBlockB) * kSplitJ, "group sums"), block, 0, stream>>>(
              f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), S_part.data_ptr<acc_t>(), s.B, s.M, s.C, s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      reduce_sums_kernel<acc_t><<<checked_grid(ceil_div(BCK, 256), 1, 1, "reduce"), 256, 0, stream>>>(
          S_part.data_ptr<acc_t>(), inv_n.data_ptr<acc_t>(), S.data_ptr<acc_t>(), BCK, s.C, s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      weighted_means_kernel<Mode::Grad, scalar_t, w_t, acc_t>
          <<<checked_grid(ceil_div(s.B, kBlockB), k_tiles, ceil_div(s.M, kRows * kBlockJ), "df"), block, 0, stream>>>(
              f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), fbar.data_ptr<acc_t>(), groups.data_ptr<int64_t>(),
              S.data_ptr<acc_t>(), gg.data_ptr<scalar_t>(), nullptr, df.data_ptr<scalar_t>(), s.B, s.M, s.C, s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (want_dW) {
      weight_grad_kernel<scalar_t, w_t, acc_t>
          <<<checked_grid(c_blocks, k_tiles, ceil_div(s.M, kRows * kBlockJ), "dW"), block, 0, stream>>>(
              f.data_ptr<scalar_t>(), fbar.data_ptr<acc_t>(), gg.data_ptr<scalar_t>(), dW.data_ptr<w_t>(), s.B, s.M, s.C,
              s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {want_df ? df.view(f_in.sizes()) : df, dW};
}

}  // namespace interpgan
