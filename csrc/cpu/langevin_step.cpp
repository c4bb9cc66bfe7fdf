// CPU kernel of langevin_step (SPEC §4): one fused pass over z, with the Gaussian noise drawn inside it.
//
// Noise: one 64-bit seed is taken from the torch CPU generator (under its mutex); each chunk of kChunk
// elements then reads its own counter-based Philox stream (seed, subsequence = chunk). The draw is therefore
// parallel, independent of the thread count, and the same seed gives the same z'. It is not the stream torch.randn would produce; pass
// noise= to replay a given draw exactly.
#include "../checks.h"
#include "../ops.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/PhiloxRNGEngine.h>
#include <cmath>

namespace interpgan {
namespace {

constexpr int64_t kChunk = 1024;  // elements per Philox subsequence: fixed, so results do not depend on threads

inline uint64_t take_seed(std::optional<at::Generator> generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

// Two standard normals from two 32-bit uniforms by Box-Muller, in the precision of the update
// (float math for float/half/bfloat16, which is several times cheaper than double).
template <typename opmath_t>
inline void box_muller(uint32_t a, uint32_t b, opmath_t& x, opmath_t& y) {
  constexpr opmath_t kTwoPi = static_cast<opmath_t>(6.283185307179586);
  constexpr opmath_t kInv32 = static_cast<opmath_t>(1.0 / 4294967296.0);
  const opmath_t u1 = (static_cast<opmath_t>(a >> 8) + opmath_t(0.5)) * (kInv32 * 256);  // in (0, 1): finite log
  const opmath_t u2 = static_cast<opmath_t>(b) * kInv32;
  const opmath_t r = std::sqrt(opmath_t(-2) * std::log(u1));
  x = r * std::cos(kTwoPi * u2);
  y = r * std::sin(kTwoPi * u2);
}

template <typename scalar_t>
void langevin_kernel(scalar_t* out, const scalar_t* z, const scalar_t* grad, const scalar_t* noise, int64_t n,
                     double step_size, double prior_weight, std::optional<double> drift_clip, uint64_t seed) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t half_sq = static_cast<opmath_t>(0.5 * step_size * step_size);
  const opmath_t step = static_cast<opmath_t>(step_size);
  const opmath_t pw = static_cast<opmath_t>(prior_weight);
  const bool clip = drift_clip.has_value();
  const opmath_t lim = clip ? static_cast<opmath_t>(*drift_clip) : opmath_t(0);
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t begin, int64_t end) {
    opmath_t eps[kChunk];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t i0 = chunk * kChunk, len = std::min(kChunk, n - i0);
      if (noise == nullptr) {
        at::Philox4_32 engine(seed, static_cast<uint64_t>(chunk), 0);
        for (int64_t i = 0; i < len; i += 2) {
          const uint32_t a = engine(), b = engine();
          box_muller<opmath_t>(a, b, eps[i], eps[i + 1]);  // eps has room for an even count
        }
      } else {
        for (int64_t i = 0; i < len; ++i) eps[i] = static_cast<opmath_t>(noise[i0 + i]);
      }
      for (int64_t i = 0; i < len; ++i) {
        const opmath_t zi = static_cast<opmath_t>(z[i0 + i]);
        opmath_t drift = static_cast<opmath_t>(grad[i0 + i]) - pw * zi;
        if (clip) drift = drift < -lim ? -lim : (drift > lim ? lim : drift);  // NaN stays NaN
        out[i0 + i] = static_cast<scalar_t>(zi + half_sq * drift + step * eps[i]);
      }
    }
  });
}

void langevin_into(at::Tensor& out, const at::Tensor& z, const at::Tensor& grad, double step_size,
                   double prior_weight, std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                   std::optional<at::Generator> generator) {
  const auto zc = z.contiguous();
  const auto gc = grad.contiguous();
  const auto nc = noise.has_value() ? std::optional<at::Tensor>(noise->contiguous()) : std::nullopt;
  const uint64_t seed = nc.has_value() ? 0 : take_seed(generator);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "langevin_step_cpu", [&] {
    langevin_kernel<scalar_t>(out.data_ptr<scalar_t>(), zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                              nc.has_value() ? nc->data_ptr<scalar_t>() : nullptr, z.numel(), step_size,
                              prior_weight, drift_clip, seed);
  });
}

}  // namespace

at::Tensor langevin_step_cpu(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                             std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> generator) {
  check_langevin_args("langevin_step", z, grad, noise, step_size, drift_clip);
  auto out = at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
  langevin_into(out, z, grad, step_size, prior_weight, drift_clip, noise, generator);
  return out;
}

void langevin_step_inplace_cpu(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                               std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator) {
  check_langevin_args("langevin_step_", z, grad, noise, step_size, drift_clip);
  if (z.is_contiguous()) {
    langevin_into(z, z, grad, step_size, prior_weight, drift_clip, noise, generator);  // elementwise: safe in place
  } else {
    auto out = at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
    langevin_into(out, z, grad, step_size, prior_weight, drift_clip, noise, generator);
    z.copy_(out);
  }
}

}  // namespace interpgan
