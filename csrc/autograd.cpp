// Autograd of the ops, in C++ so that a call costs no Python. Forward and backward both go through the
// dispatcher (the backward is the registered op group_energy_backward), so AOTAutograd and
// torch.compile trace them like any ATen op.
#include <torch/autograd.h>
#include <torch/library.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <type_traits>

namespace interpgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_group_energy(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("interpgan::group_energy", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(f, W, groups);
}

std::tuple<at::Tensor, at::Tensor> call_group_energy_with_stats(const at::Tensor& f, const at::Tensor& W,
                                                                 const at::Tensor& groups) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("interpgan::group_energy_with_stats", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(f, W, groups);
}

std::tuple<at::Tensor, at::Tensor> call_group_energy_backward(const at::Tensor& gg, const at::Tensor& f,
                                                              const at::Tensor& W, const at::Tensor& groups,
                                                              const std::optional<at::Tensor>& stats,
                                                              std::array<bool, 2> output_mask) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("interpgan::group_energy_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const std::optional<at::Tensor>&,
                                                    std::array<bool, 2>)>();
  return op.call(gg, f, W, groups, stats, output_mask);
}

// The gradients (df, dW) when autograd records them (create_graph). The backward op has no derivative of its own,
// so this node raises when they are differentiated again. (Autograd's fallback only warned, and dropped the
// gradient.) stats is an optional, not a Tensor, because autograd cannot take an undefined Tensor as an input;
// for the same reason the outputs are only those that output_mask asks for, in order.
class GroupEnergyGradFn : public torch::autograd::Function<GroupEnergyGradFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& gg, const at::Tensor& f, const at::Tensor& W,
                               const at::Tensor& groups, const std::optional<at::Tensor>& stats,
                               std::array<bool, 2> mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [df, dW] = call_group_energy_backward(gg, f, W, groups, stats, mask);
    variable_list asked;
    if (mask[0]) asked.push_back(df);
    if (mask[1]) asked.push_back(dW);
    return asked;
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "group_energy: its fused op has first derivatives only, and its gradient (from autograd.grad(..., "
                "create_graph=True)) was differentiated again. For second derivatives use "
                "interpgan_ext.ops.group_energy_reference, which autograd differentiates twice.");
  }
};

// The forward saves the statistics that the backward would otherwise recompute (group means and sums: on the
// CPU a third of the backward's work). With kStats its outputs are group_energy_with_stats's, g and the
// statistics (which have no gradient); else g alone (group_energy's: an output less to wrap, ~2 µs a call).
template <bool kStats>
class GroupEnergyFn : public torch::autograd::Function<GroupEnergyFn<kStats>> {
 public:
  static std::conditional_t<kStats, variable_list, at::Tensor> forward(AutogradContext* ctx, const at::Tensor& f,
                                                                        const at::Tensor& W, const at::Tensor& groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [g, stats] = call_group_energy_with_stats(f, W, groups);
    ctx->save_for_backward({f, W, groups, stats});
    if constexpr (kStats) {
      ctx->mark_non_differentiable({stats});
      return {g, stats};
    } else {
      return g;
    }
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    // Only what this backward pass needs: the sampler and L_real want df alone, L_cd dW alone.
    const std::array<bool, 2> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    // Without create_graph nothing records the backward: skip its autograd kernel (group_energy_backward_autograd)
    std::optional<at::AutoDispatchBelowADInplaceOrView> no_graph;
    if (!at::GradMode::is_enabled()) no_graph.emplace();
    auto [df, dW] = call_group_energy_backward(grads[0], saved[0], saved[1], saved[2], saved[3], mask);
    return {df, dW, at::Tensor()};
  }
};

bool tracked(const at::Tensor& f, const at::Tensor& W) {
  return at::GradMode::is_enabled() && (f.requires_grad() || W.requires_grad());
}

at::Tensor group_energy_autograd(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups) {
  if (!tracked(f, W)) {  // no graph: nothing to save
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_group_energy(f, W, groups);
  }
  return GroupEnergyFn<false>::apply(f, W, groups);
}

// Called directly (autograd calls it through group_energy), its g is differentiable too, as group_energy's.
std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_autograd(const at::Tensor& f, const at::Tensor& W,
                                                                   const at::Tensor& groups) {
  if (!tracked(f, W)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_group_energy_with_stats(f, W, groups);
  }
  auto out = GroupEnergyFn<true>::apply(f, W, groups);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_autograd(const at::Tensor& gg, const at::Tensor& f,
                                                                 const at::Tensor& W, const at::Tensor& groups,
                                                                 const std::optional<at::Tensor>& stats,
                                                                 std::array<bool, 2> mask) {
  if (!(tracked(f, W) || (at::GradMode::is_enabled() && gg.requires_grad())) || !(mask[0] || mask[1])) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_group_energy_backward(gg, f, W, groups, stats, mask);
  }
  auto out = GroupEnergyGradFn::apply(gg, f, W, groups, stats, mask);
  return {mask[0] ? out[0] : at::Tensor(), mask[1] ? out.back() : at::Tensor()};
}

at::Tensor call_langevin(const at::Tensor& z, const at::Tensor& grad, double step, double pw,
                         std::optional<double> clip, const std::optional<at::Tensor>& noise,
                         std::optional<at::Generator> gen) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("interpgan::langevin_step", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double, std::optional<double>,
                                         const std::optional<at::Tensor>&, std::optional<at::Generator>)>();
  return op.call(z, grad, step, pw, clip, noise, gen);
}

void call_langevin_inplace(at::Tensor& z, const at::Tensor& grad, double step, double pw, std::optional<double> clip,
                           const std::optional<at::Tensor>& noise, std::optional<at::Generator> gen) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("interpgan::langevin_step_", "")
                       .typed<void(at::Tensor&, const at::Tensor&, double, double, std::optional<double>,
                                   const std::optional<at::Tensor>&, std::optional<at::Generator>)>();
  op.call(z, grad, step, pw, clip, noise, gen);
}

bool tracked(const at::Tensor& z, const at::Tensor& grad, const std::optional<at::Tensor>& noise) {
  return at::GradMode::is_enabled() &&
         (z.requires_grad() || grad.requires_grad() || (noise.has_value() && noise->defined() && noise->requires_grad()));
}

// The update is affine in (z, grad, noise): with h = step^2 / 2, dz'/dgrad = h and dz'/dz = 1 - h * pw where
// the drift is inside the clip (where it is clipped the drift is a constant), and dz'/dnoise = step.
// The backward needs no input, only where the drift was inside the clip (when there is a clip): so z may be
// updated in place afterwards (langevin_step_ does) without invalidating the graph.
// Two forward overloads: noise as a Tensor (autograd tracks it) or as an optional (not tracked: absent, or
// needing no gradient), because autograd cannot take an undefined Tensor as an input.
class LangevinFn : public torch::autograd::Function<LangevinFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& grad, const at::Tensor& noise,
                            double step, double pw, std::optional<double> clip, std::optional<at::Generator> gen) {
    return forward(ctx, z, grad, std::optional<at::Tensor>(noise), step, pw, clip, gen);
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& grad,
                            const std::optional<at::Tensor>& noise, double step, double pw,
                            std::optional<double> clip, std::optional<at::Generator> gen) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["step"] = step;
    ctx->saved_data["pw"] = pw;
    if (clip.has_value()) ctx->save_for_backward({(grad - pw * z).abs() <= *clip});
    return call_langevin(z, grad, step, pw, clip, noise, gen);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double step = ctx->saved_data["step"].toDouble(), pw = ctx->saved_data["pw"].toDouble();
    const auto& gout = grads[0];
    auto g_drift = gout * (0.5 * step * step);
    if (!saved.empty()) g_drift = g_drift * saved[0].to(gout.scalar_type());  // the drift inside the clip
    return {gout - pw * g_drift, g_drift, ctx->needs_input_grad(2) ? gout * step : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor langevin_autograd(const at::Tensor& z, const at::Tensor& grad, double step, double pw,
                             std::optional<double> clip, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> gen) {
  if (!tracked(z, grad, noise)) {  // no graph (the sampler's case): nothing to record or save
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_langevin(z, grad, step, pw, clip, noise, gen);
  }
  if (noise.has_value() && noise->requires_grad()) return LangevinFn::apply(z, grad, *noise, step, pw, clip, gen);
  return LangevinFn::apply(z, grad, noise, step, pw, clip, gen);
}

// In place, as torch's own in-place ops: z's version counter moves (a graph that saved z then refuses to
// backpropagate through the stale value), and under autograd z's history becomes the update's, through copy_
// (which raises for a leaf that requires grad, as torch does). Without this kernel the update escaped autograd:
// gradients through it silently ignored it.
void langevin_inplace_autograd(at::Tensor& z, const at::Tensor& grad, double step, double pw,
                               std::optional<double> clip, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> gen) {
  if (tracked(z, grad, noise)) {
    z.copy_(langevin_autograd(z, grad, step, pw, clip, noise, gen));
    return;
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    call_langevin_inplace(z, grad, step, pw, clip, noise, gen);
  }
  torch::autograd::impl::bump_version(z);
}

}  // namespace
}  // namespace interpgan

TORCH_LIBRARY_IMPL(interpgan, Autograd, m) {
  m.impl("group_energy", &interpgan::group_energy_autograd);
  m.impl("group_energy_with_stats", &interpgan::group_energy_with_stats_autograd);
  m.impl("group_energy_backward", &interpgan::group_energy_backward_autograd);
  m.impl("langevin_step", &interpgan::langevin_autograd);
  m.impl("langevin_step_", &interpgan::langevin_inplace_autograd);
}
