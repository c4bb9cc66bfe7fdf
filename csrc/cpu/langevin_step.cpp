// CPU kernel of langevin_step (SPEC §4): one parallel pass that draws the noise inside the loop (normal_noise.h:
// Philox keyed by one draw from the torch CPU generator, then Box–Muller, 8 lanes at a time) and applies the
// update. A seeded generator replays; the values are not torch.randn's stream, so the op and the reference agree
// exactly only when both are given the same `noise=`.
#include "../checks.h"
#include "../langevin_step.h"
#include "../ops.h"
#include "buffer_cache.h"
#include "normal_noise.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <mutex>

namespace interpgan {
namespace {

// One draw from the generator (the default CPU one when none is given), under its lock: the key of this call's noise.
uint64_t noise_key(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

// z' = z + h clip(grad - pw z) + step eps, with eps = noise, or drawn here from `key` when noise is null.
template <typename scalar_t>
void langevin_kernel(scalar_t* out, const scalar_t* z, const scalar_t* grad, const scalar_t* noise, uint64_t key,
                     int64_t n, double step_size, double prior_weight, std::optional<double> drift_clip) {
  using opmath_t = at::opmath_type<scalar_t>;
  // Elements are done in blocks whose noise is drawn into a buffer on the stack; a block is whole chunks.
  constexpr int64_t kBlock = 2048;
  static_assert(kBlock % normal_noise::kChunk<opmath_t> == 0, "a block is whole chunks of noise");
  const opmath_t half_sq = static_cast<opmath_t>(0.5 * step_size * step_size);
  const opmath_t step = static_cast<opmath_t>(step_size);
  const opmath_t pw = static_cast<opmath_t>(prior_weight);
  // No clip is a clip at infinity: one loop, and min/max keep a NaN drift NaN (both return their first argument).
  const opmath_t lim = drift_clip.has_value() ? static_cast<opmath_t>(*drift_clip)
                                              : std::numeric_limits<opmath_t>::infinity();
  // Captured by value and read into locals: captured by reference they sit on the calling thread's stack, a
  // store through `out` may alias them (so they are reloaded every element), and that stack is written by the
  // calling thread as it runs its own share (measured 2.6x slower on 2 threads than on 1).
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, n_blocks, 8, [=](int64_t begin, int64_t end) {
    opmath_t drawn[kBlock];
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
      scalar_t* __restrict__ o = out + i0;
      const scalar_t* __restrict__ zp = z + i0;
      const scalar_t* __restrict__ gp = grad + i0;
      const opmath_t h = half_sq, st = step, w = pw, l = lim;
      const auto update = [=](const auto* __restrict__ ep) {
        for (int64_t i = 0; i < len; ++i) {
          const opmath_t zi = static_cast<opmath_t>(zp[i]);
          const opmath_t drift = std::min(std::max(static_cast<opmath_t>(gp[i]) - w * zi, -l), l);
          o[i] = static_cast<scalar_t>(zi + h * drift + st * static_cast<opmath_t>(ep[i]));
        }
      };
      if (noise != nullptr) {
        update(noise + i0);
      } else {
        constexpr int64_t chunk = normal_noise::kChunk<opmath_t>;
        normal_noise::fill_normal(key, i0 / chunk, (len + chunk - 1) / chunk, drawn);
        update(static_cast<const opmath_t*>(drawn));
      }
    }
  });
}

void langevin_into(at::Tensor& out, const at::Tensor& z, const at::Tensor& grad, double step_size,
                   double prior_weight, std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                   std::optional<at::Generator> generator) {
  const auto zc = z.contiguous();
  const auto gc = grad.contiguous();
  const at::Tensor eps = noise.has_value() ? noise->contiguous() : at::Tensor();
  const uint64_t key = noise.has_value() ? 0 : noise_key(generator);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "langevin_step_cpu", [&] {
    langevin_kernel<scalar_t>(out.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                              eps.defined() ? eps.data_ptr<scalar_t>() : nullptr, key, z.numel(), step_size,
                              prior_weight, drift_clip);
  });
}

// The output from the buffer cache: a chain `z = langevin_step(z, ...)` frees a z of this size every step, and
// fresh memory costs a page fault and zeroing per page (at [64, 512, 16, 16], 11 of the op's 25 ms).
at::Tensor empty_from_cache(const at::Tensor& z) { return buffer_cache::empty(z.sizes(), z.scalar_type()); }

}  // namespace

at::Tensor langevin_step_cpu(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                             std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> generator) {
  return langevin_functional(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into,
                             empty_from_cache);
}

void langevin_step_inplace_cpu(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                               std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator) {
  langevin_inplace(z, grad, step_size, prior_weight, drift_clip, noise, generator, langevin_into, empty_from_cache);
}

}  // namespace interpgan
