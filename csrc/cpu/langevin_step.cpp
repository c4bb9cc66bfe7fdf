// CPU kernel of langevin_step (SPEC §4): the noise is drawn from the torch CPU generator by ATen's vectorised
// normal sampler, then one parallel pass applies the update. Drawing in the update loop itself (Philox and a
// scalar Box-Muller) measured slower than eager PyTorch; this way a seeded generator gives exactly the values
// torch.randn(generator=...) would, so the CPU op and the reference agree bit for bit on the same seed.
#include "../checks.h"
#include "../langevin_step.h"
#include "../ops.h"
#include "buffer_cache.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>

namespace interpgan {
namespace {

template <typename scalar_t>
void langevin_kernel(scalar_t* out, const scalar_t* z, const scalar_t* grad, const scalar_t* noise, int64_t n,
                     double step_size, double prior_weight, std::optional<double> drift_clip) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t half_sq = static_cast<opmath_t>(0.5 * step_size * step_size);
  const opmath_t step = static_cast<opmath_t>(step_size);
  const opmath_t pw = static_cast<opmath_t>(prior_weight);
  // No clip is a clip at infinity: one loop, and min/max keep a NaN drift NaN (both return their first argument).
  const opmath_t lim = drift_clip.has_value() ? static_cast<opmath_t>(*drift_clip)
                                              : std::numeric_limits<opmath_t>::infinity();
  // Captured by value and read into locals: captured by reference they sit on the calling thread's stack, a
  // store through `out` may alias them (so they are reloaded every element), and that stack is written by the
  // calling thread as it runs its own share (measured 2.6x slower on 2 threads than on 1).
  at::parallel_for(0, n, 16384, [=](int64_t begin, int64_t end) {
    scalar_t* __restrict__ o = out;
    const scalar_t* __restrict__ zp = z;
    const scalar_t* __restrict__ gp = grad;
    const scalar_t* __restrict__ ep = noise;
    const opmath_t h = half_sq, st = step, w = pw, l = lim;
    for (int64_t i = begin; i < end; ++i) {
      const opmath_t zi = static_cast<opmath_t>(zp[i]);
      const opmath_t drift = std::min(std::max(static_cast<opmath_t>(gp[i]) - w * zi, -l), l);
      o[i] = static_cast<scalar_t>(zi + h * drift + st * static_cast<opmath_t>(ep[i]));
    }
  });
}

void langevin_into(at::Tensor& out, const at::Tensor& z, const at::Tensor& grad, double step_size,
                   double prior_weight, std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                   std::optional<at::Generator> generator) {
  const auto zc = z.contiguous();
  const auto gc = grad.contiguous();
  at::Tensor eps;
  if (noise.has_value()) {
    eps = noise->contiguous();
  } else {
    eps = buffer_cache::empty(z.sizes(), z.scalar_type());  // a temporary: reused memory skips its page faults
    eps.normal_(0.0, 1.0, generator);  // the CPU generator (default when none), under its own lock
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "langevin_step_cpu", [&] {
    langevin_kernel<scalar_t>(out.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                              eps.data_ptr<scalar_t>(), z.numel(), step_size, prior_weight, drift_clip);
  });
}

}  // namespace

at::Tensor langevin_step_cpu(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                             std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> generator) {
  return langevin_functional(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into);
}

void langevin_step_inplace_cpu(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                               std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator) {
  langevin_inplace(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into);
}

}  // namespace interpgan
