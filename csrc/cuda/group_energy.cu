// CUDA kernels of group_energy (SPEC §2), forward and backward.
//
// Threads are laid out with the K positions fastest, so every warp reads 32 consecutive positions of one
// filter row of f or W (coalesced). Each thread accumulates kBlockB samples at once, so one load of
// W[j, c, k] serves kBlockB multiply-adds. Scratch is O(B*C*K) (fbar, S): never [B, M, C, K].
// Reductions go through fixed-order per-block partials, never atomics, so results are run-to-run identical.
//
// Group ids outside [0, C) are never read out of bounds: they are skipped, and the df kernel, which indexes
// by q_j, raises a device-side assert (the CUDA form of the CPU's exact range check).
//
//   forward : group_means -> weighted_means<Energy> -> sum of block partials
//   backward: group_sums (S and fbar in one pass over f) -> weighted_means<Grad> (df) ; dW
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

constexpr int kBlockB = 4;   // samples per thread
constexpr int kBlockC = 4;   // groups per thread in dW
constexpr int kTileK = 32;   // positions per block (one warp)
constexpr int kTileRows = 8; // filters (or groups) per block

constexpr int kMeansThreads = 128;  // positions per block in group_means
constexpr int kMeansGroups = 32;    // groups accumulated per pass in shared memory

// fbar[b, c, k] = mean of f[b, j, k] over the members j of group c. A block owns one sample and
// kMeansThreads positions and walks the filters once per chunk of kMeansGroups groups, accumulating in
// shared memory (q_j is the same for every thread, so there is no bank conflict and no divergence);
// group sizes are counted on the way, so no other kernel or host work is needed.
template <typename scalar_t, typename acc_t>
__global__ void group_means_kernel(const scalar_t* __restrict__ f, const int64_t* __restrict__ groups,
                                   acc_t* __restrict__ fbar, int64_t B, int64_t M, int64_t C, int64_t K) {
  __shared__ acc_t acc[kMeansGroups][kMeansThreads];
  __shared__ int count[kMeansGroups];
  const int tid = threadIdx.x;
  const int64_t k = blockIdx.x * static_cast<int64_t>(kMeansThreads) + tid;
  const int64_t b = blockIdx.y;
  const scalar_t* fb = f + b * M * K + k;
  for (int64_t c0 = 0; c0 < C; c0 += kMeansGroups) {
    for (int c = 0; c < kMeansGroups; ++c) acc[c][tid] = acc_t(0);
    if (tid < kMeansGroups) count[tid] = 0;
    __syncthreads();
    for (int64_t j = 0; j < M; ++j) {
      CUDA_KERNEL_ASSERT(groups[j] >= 0 && groups[j] < C && "group_energy: group id out of range");
      const int64_t c = groups[j] - c0;
      if (c >= 0 && c < kMeansGroups) {
        if (k < K) acc[c][tid] += static_cast<acc_t>(fb[j * K]);
        if (tid == 0) ++count[c];
      }
    }
    __syncthreads();
    if (k < K) {
      for (int c = 0; c < kMeansGroups && c0 + c < C; ++c) {
        const int n = count[c];
        fbar[(b * C + c0 + c) * K + k] = n > 0 ? acc[c][tid] / static_cast<acc_t>(n) : acc_t(0);  // empty: 0
      }
    }
    __syncthreads();
  }
}

// S[b, c, k] = (1/n_c) sum_j W[j, c, k] f[b, j, k], and fbar in the same pass over f.
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void group_sums_kernel(const scalar_t* __restrict__ f, const w_t* __restrict__ W,
                                  const int64_t* __restrict__ groups, acc_t* __restrict__ S, acc_t* __restrict__ fbar, int64_t B, int64_t M, int64_t C,
                                  int64_t K) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t c = blockIdx.y * static_cast<int64_t>(kTileRows) + threadIdx.y;
  const int64_t b0 = blockIdx.z * static_cast<int64_t>(kBlockB);
  if (k >= K || c >= C) return;
  acc_t s[kBlockB] = {}, m[kBlockB] = {};
  int64_t n = 0;
  for (int64_t j = 0; j < M; ++j) {
    const acc_t w = static_cast<acc_t>(W[(j * C + c) * K + k]);
    const bool member = groups[j] == c;
    n += member;
#pragma unroll
    for (int r = 0; r < kBlockB; ++r) {
      if (b0 + r < B) {
        const acc_t x = static_cast<acc_t>(f[((b0 + r) * M + j) * K + k]);
        s[r] += w * x;
        if (member) m[r] += x;
      }
    }
  }
  const acc_t inv = n > 0 ? acc_t(1) / static_cast<acc_t>(n) : acc_t(0);  // empty group: 0
#pragma unroll
  for (int r = 0; r < kBlockB; ++r) {
    if (b0 + r < B) {
      S[((b0 + r) * C + c) * K + k] = s[r] * inv;
      fbar[((b0 + r) * C + c) * K + k] = m[r] * inv;
    }
  }
}

// Sum v[r] over the block; thread 0..kBlockB-1 gets the totals. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ void block_sum(acc_t (&v)[kBlockB], acc_t* out) {
  __shared__ acc_t warp_sums[kBlockB][kTileK * kTileRows / 32];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int r = 0; r < kBlockB; ++r) {
    for (int offset = 16; offset > 0; offset /= 2) v[r] += __shfl_down_sync(0xffffffffu, v[r], offset);
    if (tid % 32 == 0) warp_sums[r][tid / 32] = v[r];
  }
  __syncthreads();
  if (tid < kBlockB) {
    acc_t s = 0;
    for (int w = 0; w < kTileK * kTileRows / 32; ++w) s += warp_sums[tid][w];
    out[tid] = s;
  }
}

enum class Mode { Energy, Grad };

// A[b, j, k] = sum_c W[j, c, k] fbar[b, c, k], one thread per (kBlockB samples, j, k). Then
//   Energy: partial[block, b] = sum over the block of f[b, j, k] * A[b, j, k]
//   Grad:   df[b, j, k] = gg[b] * (A[b, j, k] + S[b, q_j, k])   (S already divided by n_c)
template <Mode mode, typename scalar_t, typename w_t, typename acc_t>
__global__ void weighted_means_kernel(const scalar_t* __restrict__ f, const w_t* __restrict__ W,
                                      const acc_t* __restrict__ fbar, const int64_t* __restrict__ groups,
                                      const acc_t* __restrict__ S, const scalar_t* __restrict__ gg,
                                      acc_t* __restrict__ partial, scalar_t* __restrict__ df, int64_t B, int64_t M,
                                      int64_t C, int64_t K) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j = blockIdx.y * static_cast<int64_t>(kTileRows) + threadIdx.y;
  const int64_t b0 = blockIdx.z * static_cast<int64_t>(kBlockB);
  const bool valid = k < K && j < M;
  acc_t a[kBlockB] = {};
  if (valid) {
    const w_t* wj = W + j * C * K + k;
    for (int64_t c = 0; c < C; ++c) {
      const acc_t w = static_cast<acc_t>(wj[c * K]);
#pragma unroll
      for (int r = 0; r < kBlockB; ++r)
        if (b0 + r < B) a[r] += w * fbar[((b0 + r) * C + c) * K + k];
    }
  }
  if constexpr (mode == Mode::Energy) {
#pragma unroll
    for (int r = 0; r < kBlockB; ++r)
      a[r] = (valid && b0 + r < B) ? a[r] * static_cast<acc_t>(f[((b0 + r) * M + j) * K + k]) : acc_t(0);
    acc_t totals[kBlockB];
    block_sum<acc_t>(a, totals);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    if (tid < kBlockB && b0 + tid < B)
      partial[(blockIdx.y * static_cast<int64_t>(gridDim.x) + blockIdx.x) * B + b0 + tid] = totals[tid];
  } else {
    if (!valid) return;
    const int64_t q = groups[j];
    CUDA_KERNEL_ASSERT(q >= 0 && q < C && "group_energy_backward: group id out of range");
#pragma unroll
    for (int r = 0; r < kBlockB; ++r) {
      if (b0 + r < B) {
        const int64_t b = b0 + r;
        const acc_t v = static_cast<acc_t>(gg[b]) * (a[r] + S[(b * C + q) * K + k]);
        df[(b * M + j) * K + k] = static_cast<scalar_t>(v);
      }
    }
  }
}

// dW[j, c, k] = sum_b gg[b] f[b, j, k] fbar[b, c, k], one thread per (j, kBlockC groups, k).
template <typename scalar_t, typename w_t, typename acc_t>
__global__ void weight_grad_kernel(const scalar_t* __restrict__ f, const acc_t* __restrict__ fbar,
                                   const scalar_t* __restrict__ gg, w_t* __restrict__ dW, int64_t B, int64_t M,
                                   int64_t C, int64_t K) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(kTileK) + threadIdx.x;
  const int64_t j = blockIdx.y * static_cast<int64_t>(kTileRows) + threadIdx.y;
  const int64_t c0 = blockIdx.z * static_cast<int64_t>(kBlockC);
  if (k >= K || j >= M) return;
  acc_t acc[kBlockC] = {};
  for (int64_t b = 0; b < B; ++b) {
    const acc_t x = static_cast<acc_t>(gg[b]) * static_cast<acc_t>(f[(b * M + j) * K + k]);
#pragma unroll
    for (int cc = 0; cc < kBlockC; ++cc)
      if (c0 + cc < C) acc[cc] += x * fbar[(b * C + c0 + cc) * K + k];
  }
#pragma unroll
  for (int cc = 0; cc < kBlockC; ++cc)
    if (c0 + cc < C) dW[(j * C + c0 + cc) * K + k] = static_cast<w_t>(acc[cc]);
}

dim3 tile_grid(int64_t K, int64_t rows, int64_t depth, const char* what) {
  const int64_t gx = (K + kTileK - 1) / kTileK, gy = (rows + kTileRows - 1) / kTileRows;
  TORCH_CHECK(gx <= INT32_MAX && gy <= 65535 && depth <= 65535, "group_energy (CUDA): problem too large for the ",
              what, " launch grid (", gx, ", ", gy, ", ", depth, ")");
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(depth));
}

dim3 means_grid(const EnergyShape& s) {
  const int64_t gx = (s.K + kMeansThreads - 1) / kMeansThreads;
  TORCH_CHECK(gx <= INT32_MAX && s.B <= 65535, "group_energy (CUDA): problem too large for the means launch grid (K=",
              s.K, ", B=", s.B, ")");
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(s.B));
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
  const auto acc_opts = f.options().dtype(acc_dtype(f));
  if (s.B == 0 || s.K == 0 || s.M == 0) return at::zeros({s.B}, W.options());
  auto fbar = at::empty({s.B, s.C, s.K}, acc_opts);
  const dim3 grid = tile_grid(s.K, s.M, (s.B + kBlockB - 1) / kBlockB, "energy");
  auto partial = at::empty({static_cast<int64_t>(grid.x) * grid.y, s.B}, acc_opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    group_means_kernel<scalar_t, acc_t><<<means_grid(s), kMeansThreads, 0, stream>>>(
        f.data_ptr<scalar_t>(), groups.data_ptr<int64_t>(), fbar.data_ptr<acc_t>(), s.B, s.M, s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    weighted_means_kernel<Mode::Energy, scalar_t, w_t, acc_t><<<grid, dim3(kTileK, kTileRows), 0, stream>>>(
        f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), fbar.data_ptr<acc_t>(), groups.data_ptr<int64_t>(), nullptr,
        nullptr, partial.data_ptr<acc_t>(), nullptr, s.B, s.M, s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return partial.sum(0).to(W.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_cuda(const at::Tensor& grad_out, const at::Tensor& f_in,
                                                              const at::Tensor& W_in, const at::Tensor& groups_in) {
  const EnergyShape s = check_group_energy_args("group_energy_backward", f_in, W_in, groups_in);
  TORCH_CHECK(grad_out.dim() == 1 && grad_out.size(0) == s.B, "group_energy_backward: expected grad_out of shape [B=",
              s.B, "], but got ", shape_str(grad_out));
  TORCH_CHECK(grad_out.device() == f_in.device(), "group_energy_backward: expected grad_out on ", f_in.device(),
              ", but got ", grad_out.device());
  const c10::cuda::OptionalCUDAGuard guard(f_in.device());
  const auto f = as_bmk(f_in, s);
  const auto W = W_in.contiguous();
  const auto groups = groups_in.contiguous();
  const auto gg = grad_out.to(f.scalar_type()).contiguous();
  auto df = at::empty({s.B, s.M, s.K}, f.options());
  auto dW = at::empty({s.M, s.C, s.K}, W.options());
  if (s.B == 0 || s.K == 0 || s.M == 0) return {df.zero_().view(f_in.sizes()), dW.zero_()};
  const auto acc_opts = f.options().dtype(acc_dtype(f));
  auto S = at::empty({s.B, s.C, s.K}, acc_opts);
  auto fbar = at::empty({s.B, s.C, s.K}, acc_opts);
  const int64_t b_blocks = (s.B + kBlockB - 1) / kBlockB;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 block(kTileK, kTileRows);
    group_sums_kernel<scalar_t, w_t, acc_t><<<tile_grid(s.K, s.C, b_blocks, "group sums"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), groups.data_ptr<int64_t>(), S.data_ptr<acc_t>(), fbar.data_ptr<acc_t>(), s.B, s.M, s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    weighted_means_kernel<Mode::Grad, scalar_t, w_t, acc_t><<<tile_grid(s.K, s.M, b_blocks, "df"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), fbar.data_ptr<acc_t>(), groups.data_ptr<int64_t>(),
        S.data_ptr<acc_t>(), gg.data_ptr<scalar_t>(), nullptr, df.data_ptr<scalar_t>(), s.B, s.M, s.C, s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t c_blocks = (s.C + kBlockC - 1) / kBlockC;
    weight_grad_kernel<scalar_t, w_t, acc_t><<<tile_grid(s.K, s.M, c_blocks, "dW"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), fbar.data_ptr<acc_t>(), gg.data_ptr<scalar_t>(), dW.data_ptr<w_t>(), s.B, s.M, s.C,
        s.K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {df.view(f_in.sizes()), dW};
}

}  // namespace interpgan
