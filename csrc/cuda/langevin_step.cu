// CUDA kernel of langevin_step (SPEC §4): one fused pass, noise drawn in-kernel.
//
// Noise: one PhiloxCudaState per launch, taken from the torch CUDA generator under its mutex (so a seeded
// generator replays, and CUDA graph capture works). Thread t handles elements [4t, 4t + 4) with the Philox
// subsequence t, as torch's own random kernels do (langevin_step_noise.cuh).
#include "../checks.h"
#include "../langevin_step.h"
#include "../ops.h"
#include "langevin_step_noise.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/detail/UnpackRaw.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace interpgan {
namespace {

using langevin_noise::kPerThread;
constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void langevin_kernel(scalar_t* out, const scalar_t* z,  // z may alias out (in place)
                                const scalar_t* __restrict__ grad,
                                const scalar_t* __restrict__ noise, int64_t n, double step_size, double prior_weight,
                                bool clip, double drift_clip, at::PhiloxCudaState philox) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i0 = t * kPerThread;
  if (i0 >= n) return;
  opmath_t eps[kPerThread];
  if (noise == nullptr) {
    const auto seeds = at::cuda::philox::unpack(philox);  // read on the device: a captured graph replays anew
    langevin_noise::normals(std::get<0>(seeds), static_cast<uint64_t>(t), std::get<1>(seeds), eps);
  }
  const opmath_t half_sq = static_cast<opmath_t>(0.5 * step_size * step_size);
  const opmath_t step = static_cast<opmath_t>(step_size);
  const opmath_t pw = static_cast<opmath_t>(prior_weight);
  const opmath_t lim = static_cast<opmath_t>(drift_clip);
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
    const int64_t i = i0 + r;
    if (i < n) {
      const opmath_t zi = static_cast<opmath_t>(z[i]);
      opmath_t drift = static_cast<opmath_t>(grad[i]) - pw * zi;
      if (clip) drift = drift < -lim ? -lim : (drift > lim ? lim : drift);  // NaN stays NaN
      const opmath_t e = noise ? static_cast<opmath_t>(noise[i]) : eps[r];
      out[i] = static_cast<scalar_t>(zi + half_sq * drift + step * e);
    }
  }
}

void langevin_into(at::Tensor& out, const at::Tensor& z, const at::Tensor& grad, double step_size,
                   double prior_weight, std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                   std::optional<at::Generator> generator) {
  const int64_t n = z.numel();
  if (n == 0) return;
  const c10::cuda::OptionalCUDAGuard guard(z.device());
  const auto zc = z.contiguous();
  const auto gc = grad.contiguous();
  const auto nc = noise.has_value() ? std::optional<at::Tensor>(noise->contiguous()) : std::nullopt;
  at::PhiloxCudaState philox;
  if (!nc.has_value()) {
    auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
        generator, at::cuda::detail::getDefaultCUDAGenerator(z.device().index()));
    // torch.Generator("cuda") carries no index: it means the current device, which the guard set to z's.
    const auto gd = gen->device();
    TORCH_CHECK(gd.is_cuda() && (!gd.has_index() || gd.index() == z.device().index()),
                "langevin_step: expected a generator on ", z.device(), ", but got one on ", gd);
    std::lock_guard<std::mutex> lock(gen->mutex_);
    philox = gen->philox_cuda_state(langevin_noise::kWordsPerThread);
  }
  const int64_t threads_needed = (n + kPerThread - 1) / kPerThread;
  const int64_t blocks = (threads_needed + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT32_MAX, "langevin_step: tensor too large (", n, " elements)");
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "langevin_step_cuda", [&] {
    langevin_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
        nc.has_value() ? nc->data_ptr<scalar_t>() : nullptr, n, step_size, prior_weight, drift_clip.has_value(),
        drift_clip.value_or(0.0), philox);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

at::Tensor langevin_step_cuda(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                              std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                              std::optional<at::Generator> generator) {
  return langevin_functional(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into);
}

void langevin_step_inplace_cuda(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                                std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                                std::optional<at::Generator> generator) {
  langevin_inplace(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into);
}

}  // namespace interpgan
