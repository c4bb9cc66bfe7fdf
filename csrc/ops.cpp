// Operator schemas (namespace `interpgan`) and their CPU / CUDA kernels. Autograd is registered in autograd.cpp,
// the fake (meta) kernels from Python, in interpgan_ext/ops/, next to each op's reference implementation.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(interpgan, m) {
  m.def("group_energy(Tensor f, Tensor W, Tensor groups) -> Tensor");
  // What autograd calls: the forward also returns the statistics the backward needs (an opaque tensor of
  // 2 * B * C * K values whose layout is the backend's), and the backward takes them.
  // output_mask says which of (df, dW) to compute; the others come back undefined (None), as in ATen's backwards.
  m.def("group_energy_with_stats(Tensor f, Tensor W, Tensor groups) -> (Tensor, Tensor)");
  m.def(
      "group_energy_backward(Tensor grad_out, Tensor f, Tensor W, Tensor groups, Tensor? stats=None, "
      "bool[2] output_mask=[True, True]) -> (Tensor, Tensor)");
  m.def(
      "langevin_step(Tensor z, Tensor grad, float step_size, float prior_weight=1.0, float? drift_clip=None, "
      "Tensor? noise=None, Generator? generator=None) -> Tensor",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "langevin_step_(Tensor(a!) z, Tensor grad, float step_size, float prior_weight=1.0, float? drift_clip=None, "
      "Tensor? noise=None, Generator? generator=None) -> ()",
      {at::Tag::nondeterministic_seeded});
}

TORCH_LIBRARY_IMPL(interpgan, CPU, m) {
  m.impl("group_energy", &interpgan::group_energy_cpu);
  m.impl("group_energy_with_stats", &interpgan::group_energy_with_stats_cpu);
  m.impl("group_energy_backward", &interpgan::group_energy_backward_cpu);
  m.impl("langevin_step", &interpgan::langevin_step_cpu);
  m.impl("langevin_step_", &interpgan::langevin_step_inplace_cpu);
}

#ifdef INTERPGAN_WITH_CUDA
TORCH_LIBRARY_IMPL(interpgan, CUDA, m) {
  m.impl("group_energy", &interpgan::group_energy_cuda);
  m.impl("group_energy_with_stats", &interpgan::group_energy_with_stats_cuda);
  m.impl("group_energy_backward", &interpgan::group_energy_backward_cuda);
  m.impl("langevin_step", &interpgan::langevin_step_cuda);
  m.impl("langevin_step_", &interpgan::langevin_step_inplace_cuda);
}
#endif
