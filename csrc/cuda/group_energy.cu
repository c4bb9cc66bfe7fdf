// group_energy (SPEC §2) on CUDA: argument checks, scratch, and the launches of the kernels in
// group_energy_kernels.cuh (where the kernels, their tiling and the order of the passes are described).
#include "../checks.h"
#include "../ops.h"
#include "group_energy_kernels.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <cstring>

namespace interpgan {
namespace {

using namespace group_energy_kernels;

dim3 checked_grid(Grid g, const char* what) {
  TORCH_CHECK(g.x <= INT32_MAX && g.y <= 65535 && g.z <= 65535, "group_energy (CUDA): problem too large for the ",
              what, " launch grid (", g.x, ", ", g.y, ", ", g.z, ")");
  return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y), static_cast<unsigned>(g.z));
}

template <typename acc_t>
at::Tensor inverse_sizes(const at::Tensor& groups, const EnergyShape& s, const at::TensorOptions& opts,
                         cudaStream_t stream) {
  TORCH_CHECK(s.C <= kMaxGroups, "group_energy (CUDA): at most ", kMaxGroups, " groups are supported, got C=", s.C);
  auto inv_n = at::empty({s.C}, opts);
  inverse_sizes_kernel<acc_t><<<1, kFlatThreads, s.C * sizeof(int), stream>>>(groups.data_ptr<int64_t>(),
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

// Which kernels compute the three products (group sums, df, dW): "direct" (group_sums, input_grad, weight_grad; the
// default, measured) or "staged" (staged_product, operands staged in shared memory; a candidate, not yet timed on a
// GPU). Read at each call, so that a benchmark can time both in one process.
bool use_staged_products() {
  const char* choice = std::getenv("INTERPGAN_CUDA_PRODUCTS");
  if (choice == nullptr || choice[0] == '\0' || std::strcmp(choice, "direct") == 0) return false;
  // RuntimeError, not ValueError: a C++ ValueError from an extension op crashes torch 2.11 (README)
  TORCH_CHECK(std::strcmp(choice, "staged") == 0, "INTERPGAN_CUDA_PRODUCTS must be 'direct' or 'staged', got '", choice,
              "'");
  return true;
}

// Launches inverse_sizes and group_means into fbar, and with S (df needs it) group_sums and the reduction into
// S = (sum_j W f) / n_c. With energy_partial, the reduction also leaves the blocks' shares of g there.
template <typename scalar_t, typename w_t, typename acc_t>
void launch_stats(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups, const EnergyShape& s,
                  const at::TensorOptions& acc_opts, acc_t* fbar, acc_t* S, acc_t* energy_partial,
                  cudaStream_t stream) {
  const at::Tensor inv_n = inverse_sizes<acc_t>(groups, s, acc_opts, stream);
  const dim3 block(kTileK, kRows);
  group_means_kernel<scalar_t, acc_t><<<checked_grid(means_grid(s.B, s.K), "means"), block, 0, stream>>>(
      f.data_ptr<scalar_t>(), groups.data_ptr<int64_t>(), inv_n.data_ptr<acc_t>(), fbar, s.B, s.M, s.C, s.K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (S == nullptr) return;
  auto S_part = at::empty({kSplitJ, s.B * s.C * s.K}, acc_opts);
  if (use_staged_products()) {
    const StagedLayout L = group_sums_layout(s.B, s.M, s.C, s.K);
    staged_product_kernel<StagedProduct::kGroupSums, scalar_t, w_t, acc_t, scalar_t, acc_t>
        <<<checked_grid(staged_product_grid(L, s.K), "group sums"), block, 0, stream>>>(
            f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), L, nullptr, 0, nullptr, nullptr, S_part.data_ptr<acc_t>(), s.C,
            s.K);
  } else {
    group_sums_kernel<scalar_t, w_t, acc_t><<<checked_grid(sums_grid(s.B, s.C, s.K), "group sums"), block, 0, stream>>>(
        f.data_ptr<scalar_t>(), W.data_ptr<w_t>(), S_part.data_ptr<acc_t>(), s.B, s.M, s.C, s.K);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reduce_sums_kernel<acc_t><<<checked_grid(reduce_grid(s.B, s.C, s.K), "reduce"), kFlatThreads, 0, stream>>>(
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
  auto partial = at::empty({reduce_grid(s.B, s.C, s.K).y, s.B}, acc_opts);
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
  // An output left out is returned undefined. Not a structured binding: lambdas capture these (Clang < 16 cannot).
  const bool want_df = output_mask[0], want_dW = output_mask[1];
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
  dispatch_energy_types(f, W, [&](auto f_tag, auto w_tag) {
    using scalar_t = decltype(f_tag);
    using w_t = decltype(w_tag);
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* fbar = stats.data_ptr<acc_t>();
    acc_t* S = fbar + BCK;  // S is df's alone
    if (!has_stats)
      launch_stats<scalar_t, w_t, acc_t>(f, W, groups, s, acc_opts, fbar, want_df ? S : nullptr, nullptr, stream);
    const int64_t B = s.B, M = s.M, C = s.C, K = s.K;
    const scalar_t* g = gg.data_ptr<scalar_t>();
    if (use_staged_products()) {
      if (want_df) {
        const StagedLayout L = input_grad_layout(B, M, C, K);
        staged_product_kernel<StagedProduct::kInputGrad, w_t, acc_t, scalar_t, scalar_t, acc_t>
            <<<checked_grid(staged_product_grid(L, K), "df"), block, 0, stream>>>(
                W.data_ptr<w_t>(), fbar, L, g, gg.stride(0), groups.data_ptr<int64_t>(), S, df.data_ptr<scalar_t>(),
                C, K);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (want_dW) {
        const StagedLayout L = weight_grad_layout(B, M, C, K);
        staged_product_kernel<StagedProduct::kWeightGrad, scalar_t, acc_t, w_t, scalar_t, acc_t>
            <<<checked_grid(staged_product_grid(L, K), "dW"), block, 0, stream>>>(
                f.data_ptr<scalar_t>(), fbar, L, g, gg.stride(0), nullptr, nullptr, dW.data_ptr<w_t>(), C, K);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      return;
    }
    if (want_df) {
      input_grad_kernel<scalar_t, w_t, acc_t><<<checked_grid(input_grad_grid(B, M, K), "df"), block, 0, stream>>>(
          W.data_ptr<w_t>(), fbar, groups.data_ptr<int64_t>(), S, g, gg.stride(0), df.data_ptr<scalar_t>(), B, M, C,
          K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (want_dW) {
      weight_grad_kernel<scalar_t, w_t, acc_t><<<checked_grid(weight_grad_grid(M, C, K), "dW"), block, 0, stream>>>(
          f.data_ptr<scalar_t>(), fbar, g, gg.stride(0), dW.data_ptr<w_t>(), B, M, C, K);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {want_df ? df.view(f_in.sizes()) : df, dW};
}

}  // namespace interpgan
