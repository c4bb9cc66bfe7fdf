// The out-of-place and in-place forms of langevin_step, shared by the CPU and CUDA backends.
#pragma once

#include "checks.h"

namespace interpgan {

// A contiguous tensor like z, uninitialised: the default for a backend's output.
inline at::Tensor empty_contiguous_like(const at::Tensor& z) {
  return at::empty(z.sizes(), z.options().memory_format(at::MemoryFormat::Contiguous));
}

// Out-of-place and in-place forms of langevin_step around a backend's `into(out, z, grad, ...)`, which writes
// z' into a contiguous `out` (out may be z itself: the update is elementwise). `empty(z)` makes a contiguous
// tensor like z for out (the CPU's comes from its buffer cache).
template <typename Into>
at::Tensor langevin_functional(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                               std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator, Into&& into,
                               at::Tensor (*empty)(const at::Tensor&) = empty_contiguous_like) {
  check_langevin_args("langevin_step", z, grad, noise, step_size, drift_clip);
  auto out = empty(z);
  into(out, z, grad, step_size, prior_weight, drift_clip, noise, generator);
  return out;
}

template <typename Into>
void langevin_inplace(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                      std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                      std::optional<at::Generator> generator, Into&& into,
                      at::Tensor (*empty)(const at::Tensor&) = empty_contiguous_like) {
  check_langevin_args("langevin_step_", z, grad, noise, step_size, drift_clip);
  if (z.is_contiguous()) {
    into(z, z, grad, step_size, prior_weight, drift_clip, noise, generator);
  } else {
    auto out = empty(z);
    into(out, z, grad, step_size, prior_weight, drift_clip, noise, generator);
    z.copy_(out);
  }
}

}  // namespace interpgan
