// Input validation shared by the CPU and CUDA kernels of every op.
// Every message names the op, the argument, and what was expected versus what was given. Wrong dtypes
// raise TypeError, wrong shapes or values ValueError, wrong devices RuntimeError: the same as the
// Python-side checks of the reference path (interpgan_ext/ops/*.py), so both backends fail alike.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

namespace interpgan {

// Sizes of a validated group_energy problem; f is viewed as [B, M, K], W as [M, C, K].
struct EnergyShape {
  int64_t B, M, K, C;
};

inline std::string shape_str(const at::Tensor& t) {
  return c10::str(t.sizes());
}

inline bool is_low_precision(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

// Checks dtypes, devices and shapes of (f, W, groups); group ids are range-checked by the caller
// (exactly on CPU, by a device-side assert on CUDA, where reading them would force a sync).
inline EnergyShape check_group_energy_args(const char* op, const at::Tensor& f, const at::Tensor& W,
                                           const at::Tensor& groups) {
  TORCH_CHECK_VALUE(f.dim() == 3 || f.dim() == 4, op, ": expected f of shape [B, M, H, W] or [B, M, K], but got ",
              shape_str(f));
  TORCH_CHECK_TYPE(at::isFloatingType(f.scalar_type()), op, ": expected f to be a floating-point tensor, but got dtype ",
              f.scalar_type());
  TORCH_CHECK_VALUE(W.dim() == 3, op, ": expected W of shape [M, C, K], but got ", shape_str(W));
  const bool same = W.scalar_type() == f.scalar_type();
  const bool mixed = is_low_precision(f.scalar_type()) && W.scalar_type() == at::kFloat;
  TORCH_CHECK_TYPE(same || mixed, op, ": expected W to have the dtype of f (", f.scalar_type(),
              "), or float32 when f is float16/bfloat16, but got ", W.scalar_type());
  TORCH_CHECK_TYPE(groups.dim() == 1 && groups.scalar_type() == at::kLong, op,
              ": expected groups to be a 1-D int64 tensor [M], but got dtype ", groups.scalar_type(), " and shape ",
              shape_str(groups));
  TORCH_CHECK(W.device() == f.device() && groups.device() == f.device(), op,
              ": expected f, W and groups on one device, but got f on ", f.device(), ", W on ", W.device(),
              ", groups on ", groups.device());
  EnergyShape s;
  s.B = f.size(0);
  s.M = f.size(1);
  s.K = f.dim() == 4 ? f.size(2) * f.size(3) : f.size(2);
  s.C = W.size(1);
  TORCH_CHECK_VALUE(W.size(0) == s.M && W.size(2) == s.K, op, ": expected W of shape [M=", s.M, ", C, K=", s.K,
              "] to match f ", shape_str(f), ", but got ", shape_str(W));
  TORCH_CHECK_VALUE(groups.size(0) == s.M, op, ": expected groups of length M=", s.M, " (one id per filter), but got ",
              groups.size(0));
  TORCH_CHECK_VALUE(s.C >= 1, op, ": expected at least one group (W.size(1) >= 1), but got C=", s.C);
  return s;
}

// The incoming gradient of group_energy_backward: [B], floating point, on f's device (read with its strides).
inline void check_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& f, int64_t B) {
  TORCH_CHECK_VALUE(grad_out.dim() == 1 && grad_out.size(0) == B, op, ": expected grad_out of shape [B=", B,
                    "], but got ", shape_str(grad_out));
  TORCH_CHECK_TYPE(at::isFloatingType(grad_out.scalar_type()), op,
                   ": expected grad_out to be a floating-point tensor, but got dtype ", grad_out.scalar_type());
  TORCH_CHECK(grad_out.device() == f.device(), op, ": expected grad_out on ", f.device(), ", but got ",
              grad_out.device());
}

// The statistics that group_energy_with_stats returned for the backward (group means and sums, 2 * B * C * K
// values in the compute dtype ct; their order is the backend's own).
inline void check_saved_stats(const char* op, const at::Tensor& stats, const at::Tensor& f, const EnergyShape& s,
                              at::ScalarType ct) {
  const int64_t n = 2 * s.B * s.C * s.K;
  TORCH_CHECK(stats.device() == f.device() && stats.scalar_type() == ct && stats.dim() == 1 && stats.numel() == n &&
                  stats.is_contiguous(),
              op, ": expected stats as returned by group_energy_with_stats for these inputs (", ct, " [", n, "] on ",
              f.device(), "), but got ", stats.scalar_type(), " ", shape_str(stats), " on ", stats.device());
}

// Exact range check of group ids; only for tensors already on the CPU.
inline void check_group_ids_cpu(const char* op, const at::Tensor& groups, int64_t C) {
  const int64_t* q = groups.data_ptr<int64_t>();
  for (int64_t j = 0; j < groups.numel(); ++j) {
    TORCH_CHECK_VALUE(q[j] >= 0 && q[j] < C, op, ": group id out of range: groups[", j, "] = ", q[j],
                ", expected 0 <= id < C = ", C);
  }
}

inline void check_langevin_args(const char* op, const at::Tensor& z, const at::Tensor& grad,
                                const std::optional<at::Tensor>& noise, double step_size,
                                std::optional<double> drift_clip) {
  TORCH_CHECK_TYPE(at::isFloatingType(z.scalar_type()), op, ": expected z to be a floating-point tensor, but got dtype ",
              z.scalar_type());
  TORCH_CHECK_TYPE(grad.scalar_type() == z.scalar_type(), op, ": expected grad to have the dtype of z (", z.scalar_type(),
              "), but got ", grad.scalar_type());
  TORCH_CHECK(grad.device() == z.device(), op, ": expected grad on the device of z (", z.device(), "), but got ",
              grad.device());
  TORCH_CHECK_VALUE(grad.sizes() == z.sizes(), op, ": expected grad of the shape of z ", shape_str(z), ", but got ",
              shape_str(grad));
  TORCH_CHECK_VALUE(step_size >= 0, op, ": expected step_size >= 0, but got ", step_size);
  if (drift_clip.has_value()) {
    TORCH_CHECK_VALUE(*drift_clip > 0, op, ": expected drift_clip > 0 (or None), but got ", *drift_clip);
  }
  if (noise.has_value()) {
    const auto& n = *noise;
    TORCH_CHECK_VALUE(n.scalar_type() == z.scalar_type() && n.device() == z.device() && n.sizes() == z.sizes(), op,
                ": expected noise with the dtype, device and shape of z (", z.scalar_type(), ", ", z.device(), ", ",
                shape_str(z), "), but got ", n.scalar_type(), ", ", n.device(), ", ", shape_str(n));
  }
}

// f's values as a contiguous [B, M, K] array: f itself when it is contiguous (the kernels only read its data, and
// a reshape would be one more op per call), else a contiguous [B, M, K] copy.
inline at::Tensor as_bmk(const at::Tensor& f, const EnergyShape& s) {
  return f.is_contiguous() ? f : f.reshape({s.B, s.M, s.K}).contiguous();
}

// t in dtype ct; a converting op is dispatched only when the dtype differs.
inline at::Tensor in_dtype(const at::Tensor& t, at::ScalarType ct) {
  return t.scalar_type() == ct ? t : t.to(ct);
}

}  // namespace interpgan
