// CUDA kernels of group_energy (SPEC §2), forward and backward.
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
constexpr int kSumsB = 4;     // group_sums: samples x groups per thread
constexpr int kSumsC = 8;
constexpr int kSplitJ = 8;    // group_sums: chunks of the filter axis
constexpr int kDfB = 8;       // input_grad: samples x filters per thread
constexpr int kDfJ = 4;
constexpr int kDwJ = 4;       // weight_grad: filters x groups per thread
constexpr int kDwC = 4;
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

// The sum of v over a block of 256 threads, in thread 0. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[8];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (tid % 32 == 0) warp_sums[tid / 32] = v;
  __syncthreads();
  acc_t s = 0;
  if (tid == 0)
    for (int w = 0; w < 8; ++w) s += warp_sums[w];
  return s;
}

// S = inv_n * sum_js S_part, one thread per (b, c, k); block (b, chunk) of 256 threads. With energy_partial, also
// the block's share of g[b] = sum_{c,k} fbar * (sum_js S_part), in energy_partial[chunk * B + b].
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
    for (int jj = 0; jj < kDwJ; ++jj) x[jj] = j0 + jj < M ? g * static_cast<acc_t>(f[(b * M + j0 + jj) * K + k]) : acc_t(0);
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

// Launches inverse_sizes and group_means into fbar, and with S (df needs it) group_sums and the reduction into
// S = (sum_j W f) / n_c. With energy_partial, the reduction also leaves the blocks' shares of g there.
template <typename scalar_t, typename w_t, typename acc_t>
void launch_stats(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups, const EnergyShape& s,
                  const at::TensorOptions& acc_opts, acc_t* fbar, acc_t* S, acc_t* energy_partial,
                  cudaStream_t stream) {
  const at::Tensor inv_n = inverse_sizes<acc_t>(groups, s, acc_opts, stream);
  const dim3 block(kTileK, kRows);
  const int64_t k_tiles = ceil_div(s.K, kTileK);
  group_means_kernel<scalar_t, acc_t><<<checked_grid(k_tiles, s.B, 1, "means"), block, 0, stream>>>(
      f.data_ptr<scalar_t>(), groups.data_ptr<int64_t>(), inv_n.data_ptr<acc_t>(), fbar, s.B, s.M, s.C, s.K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (S == nullptr) return;
  auto S_part = at::empty({kSplitJ, s.B * s.C * s.K}, acc_opts);
  group_sums_kernel<scalar_t, w_t, acc_t>
      <<<checked_grid(ceil_div(s.C, kSumsC), k_tiles, ceil_div(s.B, kRows * kSumsB) * kSplitJ, "group sums"), block,
         0, stream>>>(f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), S_part.data_ptr<acc_t>(), s.B, s.M, s.C, s.K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reduce_sums_kernel<acc_t><<<checked_grid(s.B, ceil_div(s.C * s.K, 256), 1, "reduce"), 256, 0, stream>>>(
      S_part.data_ptr<acc_t>(), inv_n.data_ptr<acc_t>(), fbar, S, energy_partial, s.B, s.C, s.K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// g through S (g[b] = sum_{c,k} fbar * sum_j W f), keeping fbar and S / n_c for the backward, which then runs only
// its two products (df and dW).
std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_cuda(const at::Tensor& f_in, const at::Tensor& W_in,
                                                                const at::Tensor& groups_in) {
  // named as the op users call (autograd's forward is this one), as on the CPU
  const EnergyShape s = check_group_energy_args("group_energy", f_in, W_in, groups_in);
  const c10::cuda::OptionalCUDAGuard guard(f_in.device());
  const auto f = as_bmk(f_in, s);
  const auto W = W_in.contiguous();
  const auto groups = groups_in.contiguous();
  const auto acc_opts = f.options().dtype(acc_dtype(f));
  const int64_t BCK = s.B * s.C * s.K;
  if (s.B == 0 || s.K == 0 || s.M == 0) return {at::zeros({s.B}, W.options()), at::zeros({2 * BCK}, acc_opts)};
  auto stats = at::empty({2 * BCK}, acc_opts);
  auto partial = at::empty({ceil_div(s.C * s.K, 256), s.B}, acc_opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* fbar = stats.data_ptr<acc_t>();
    launch_stats<scalar_t, w_t, acc_t>(f, W, groups, s, acc_opts, fbar, fbar + BCK, partial.data_ptr<acc_t>(), stream);
  });
  return {partial.sum(0).to(W.scalar_type()), stats};
}

// The same kernels as with stats (so that g is bit-identical with and without autograd); the stats are dropped.
at::Tensor group_energy_cuda(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups) {
  return std::get<0>(group_energy_with_stats_cuda(f, W, groups));
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_cuda(const at::Tensor& grad_out, const at::Tensor& f_in,
                                                              const at::Tensor& W_in, const at::Tensor& groups_in,
                                                              const std::optional<at::Tensor>& stats_in,
                                                              std::array<bool, 2> output_mask) {
  const EnergyShape s = check_group_energy_args("group_energy_backward", f_in, W_in, groups_in);
  check_grad_out("group_energy_backward", grad_out, f_in, s.B);
  const bool has_stats = stats_in.has_value() && stats_in->defined();
  if (has_stats) check_saved_stats("group_energy_backward", *stats_in, f_in, s, acc_dtype(f_in));
  const c10::cuda::OptionalCUDAGuard guard(f_in.device());
  const auto f = as_bmk(f_in, s);
  const auto W = W_in.contiguous();
  const auto groups = groups_in.contiguous();
  const auto gg = in_dtype(grad_out, f.scalar_type());  // read through its stride: autograd's is an expansion
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
  const at::Tensor stats = has_stats ? *stats_in : at::empty({2 * BCK}, acc_opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kTileK, kRows);
  const int64_t k_tiles = ceil_div(s.K, kTileK);
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* fbar = stats.data_ptr<acc_t>();
    acc_t* S = fbar + BCK;  // S is df's alone
    if (!has_stats) launch_stats<scalar_t, w_t, acc_t>(f, W, groups, s, acc_opts, fbar, want_df ? S : nullptr, nullptr, stream);
    if (want_df) {
      input_grad_kernel<scalar_t, w_t, acc_t>
          <<<checked_grid(ceil_div(s.B, kDfB), k_tiles, ceil_div(s.M, kRows * kDfJ), "df"), block, 0, stream>>>(
              W.data_ptr<w_t>(), fbar, groups.data_ptr<int64_t>(), S, gg.data_ptr<scalar_t>(), gg.stride(0),
              df.data_ptr<scalar_t>(), s.B, s.M, s.C, s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (want_dW) {
      weight_grad_kernel<scalar_t, w_t, acc_t>
          <<<checked_grid(ceil_div(s.C, kDwC), k_tiles, ceil_div(s.M, kRows * kDwJ), "dW"), block, 0, stream>>>(
              f.data_ptr<scalar_t>(), fbar, gg.data_ptr<scalar_t>(), gg.stride(0), dW.data_ptr<w_t>(), s.B, s.M, s.C,
              s.K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {want_df ? df.view(f_in.sizes()) : df, dW};
}

}  // namespace interpgan
