// C++ test of the CPU kernels: group_energy forward/backward against the formula written as loops
// (float64, odd sizes, an empty group), langevin_step with given noise, seeding, and the op registration.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "ops.h"
#include "tests/expect.h"

static double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// SPEC §2 as loops: returns g [B], df [B, M, K], dW [M, C, K] for upstream gradient gg.
static void naive(const at::Tensor& f, const at::Tensor& W, const at::Tensor& q, const at::Tensor& gg,
                  at::Tensor& g, at::Tensor& df, at::Tensor& dW) {
  const int64_t B = f.size(0), M = f.size(1), K = f.size(2), C = W.size(1);
  auto fa = f.accessor<double, 3>();
  auto Wa = W.accessor<double, 3>();
  auto qa = q.accessor<int64_t, 1>();
  auto gga = gg.accessor<double, 1>();
  std::vector<double> n(C, 0);
  for (int64_t j = 0; j < M; ++j) n[qa[j]] += 1;
  g = at::zeros({B}, f.options());
  df = at::zeros_like(f);
  dW = at::zeros_like(W);
  for (int64_t b = 0; b < B; ++b) {
    at::Tensor fbar = at::zeros({C, K}, f.options()), S = at::zeros({C, K}, f.options());
    auto fb = fbar.accessor<double, 2>();
    auto Sa = S.accessor<double, 2>();
    for (int64_t j = 0; j < M; ++j)
      for (int64_t k = 0; k < K; ++k) fb[qa[j]][k] += fa[b][j][k] / n[qa[j]];
    for (int64_t j = 0; j < M; ++j)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < K; ++k) {
          g[b] += Wa[j][c][k] * fa[b][j][k] * fb[c][k];
          Sa[c][k] += Wa[j][c][k] * fa[b][j][k];
          dW[j][c][k] += gga[b] * fa[b][j][k] * fb[c][k];
        }
    for (int64_t j = 0; j < M; ++j)
      for (int64_t k = 0; k < K; ++k) {
        double a = 0;
        for (int64_t c = 0; c < C; ++c) a += Wa[j][c][k] * fb[c][k];
        df[b][j][k] = gga[b] * (a + Sa[qa[j]][k] / n[qa[j]]);
      }
  }
}

int main() {
  at::manual_seed(0);
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  // (B, M, K, C); K = 11 exercises the tiled path and its tail, K = 1 the scalar path.
  const int64_t shapes[][4] = {{3, 7, 11, 4}, {1, 1, 1, 1}, {5, 9, 1, 3}, {6, 13, 20, 5}};
  for (const auto& s : shapes) {
    const int64_t B = s[0], M = s[1], K = s[2], C = s[3];
    auto f = at::randn({B, M, K}, opt), W = at::rand({M, C, K}, opt), gg = at::randn({B}, opt);
    auto q = at::randint(0, C, {M}, at::TensorOptions().dtype(at::kLong));
    if (C > 2) q = q.clamp_max(C - 2);  // the last group is empty
    at::Tensor g, df, dW;
    naive(f, W, q, gg, g, df, dW);
    EXPECT(max_rel(interpgan::group_energy_cpu(f, W, q), g) < 1e-12, "group_energy forward");
    auto [df2, dW2] = interpgan::group_energy_backward_cpu(gg, f, W, q);
    EXPECT(max_rel(df2, df) < 1e-12, "group_energy backward df");
    EXPECT(max_rel(dW2, dW) < 1e-12, "group_energy backward dW");
    auto [g3, stats] = interpgan::group_energy_with_stats_cpu(f, W, q);
    auto [df3, dW3] = interpgan::group_energy_backward_cpu(gg, f, W, q, stats);
    EXPECT(max_rel(g3, g) < 1e-12, "group_energy_with_stats forward");
    EXPECT(max_rel(df3, df) < 1e-12 && max_rel(dW3, dW) < 1e-12, "group_energy backward from saved stats");
    auto g32 = interpgan::group_energy_cpu(f.to(at::kFloat), W.to(at::kFloat), q);
    EXPECT(max_rel(g32.to(at::kDouble), g) < 1e-4, "group_energy float32");
  }

  // langevin_step: exact with given noise, reproducible with a seeded generator
  auto z = at::randn({4, 5}, opt), grad = at::randn({4, 5}, opt), noise = at::randn({4, 5}, opt);
  auto out = interpgan::langevin_step_cpu(z, grad, 0.3, 0.5, std::nullopt, noise, std::nullopt);
  EXPECT(max_rel(out, z + 0.045 * (grad - 0.5 * z) + 0.3 * noise) < 1e-14, "langevin_step with noise");
  auto gen_a = at::make_generator<at::CPUGeneratorImpl>(7), gen_b = at::make_generator<at::CPUGeneratorImpl>(7);
  auto a = interpgan::langevin_step_cpu(z, grad, 0.3, 1.0, 1.0, std::nullopt, gen_a);
  auto b = interpgan::langevin_step_cpu(z, grad, 0.3, 1.0, 1.0, std::nullopt, gen_b);
  EXPECT(at::equal(a, b), "langevin_step seeded reproducibility");

  // registration: the dispatcher finds the schemas
  for (const char* name : {"interpgan::group_energy", "interpgan::group_energy_with_stats",
                           "interpgan::group_energy_backward", "interpgan::langevin_step", "interpgan::langevin_step_"})
    EXPECT(c10::Dispatcher::singleton().findSchema({name, ""}).has_value(), name);

  // bad input raises
  bool threw = false;
  try {
    interpgan::group_energy_cpu(at::randn({2, 3, 4}), at::randn({3, 2, 4}), at::tensor({0, 5, 1}));
  } catch (const c10::Error&) {
    threw = true;
  }
  EXPECT(threw, "out-of-range group id raises");

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
