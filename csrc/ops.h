// Kernel entry points of every backend. ops.cpp registers them with the dispatcher; the C++ test calls
// the CPU ones directly.
#pragma once

#include <ATen/ATen.h>
#include <array>
#include <optional>
#include <tuple>

namespace interpgan {

// SPEC §2: g[b] = sum_{j,c,k} W[j,c,k] f[b,j,k] fbar[b,c,k].
// group_energy_with_stats also returns what the backward would recompute (an opaque float tensor), and
// group_energy_backward takes it or, when absent, recomputes it. output_mask selects (df, dW); an output left
// out is an undefined tensor.
at::Tensor group_energy_cpu(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups);
std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_cpu(const at::Tensor& f, const at::Tensor& W,
                                                               const at::Tensor& groups);
std::tuple<at::Tensor, at::Tensor> group_energy_backward_cpu(const at::Tensor& grad_out, const at::Tensor& f,
                                                             const at::Tensor& W, const at::Tensor& groups,
                                                             const std::optional<at::Tensor>& stats = std::nullopt,
                                                             std::array<bool, 2> output_mask = {true, true});

// SPEC §4: z' = z + (step^2 / 2) * clip(grad - prior_weight * z) + step * eps.
at::Tensor langevin_step_cpu(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                             std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> generator);
void langevin_step_inplace_cpu(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                               std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator);

#ifdef INTERPGAN_WITH_CUDA
at::Tensor group_energy_cuda(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups);
std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_cuda(const at::Tensor& f, const at::Tensor& W,
                                                                const at::Tensor& groups);
std::tuple<at::Tensor, at::Tensor> group_energy_backward_cuda(const at::Tensor& grad_out, const at::Tensor& f,
                                                              const at::Tensor& W, const at::Tensor& groups,
                                                              const std::optional<at::Tensor>& stats,
                                                              std::array<bool, 2> output_mask);
at::Tensor langevin_step_cuda(const at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                              std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                              std::optional<at::Generator> generator);
void langevin_step_inplace_cuda(at::Tensor& z, const at::Tensor& grad, double step_size, double prior_weight,
                                std::optional<double> drift_clip, const std::optional<at::Tensor>& noise,
                                std::optional<at::Generator> generator);
#endif

}  // namespace interpgan
