// The CUDA kernels of group_energy, run on the CPU under cuda_emulator.h, against SPEC §2 written as loops in
// float64. The same launch shapes as group_energy.cu (the grid helpers of group_energy_kernels.cuh), the same pass
// order, odd sizes, an empty group, C = M, K = 1, a strided grad_out, and the dtypes group_energy.cu dispatches: float,
// double, half and bfloat16 (W in f's dtype or in float), accumulating in float or double. CMake builds it twice, under
// AddressSanitizer + UBSan (the CPU's memcheck) and under ThreadSanitizer (its racecheck). No torch, no GPU.
#include "cuda_emulator.h"  // first: it defines the CUDA keywords the kernels use

#include "cuda/group_energy_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace gek = interpgan::group_energy_kernels;
using cuda_emulator::launch;

static int failures = 0;

// bfloat16 on the host: float's top 16 bits, rounded to nearest even. Like c10::BFloat16 it converts to and from
// float implicitly and rounds after each compound assignment, so a kernel that accumulated in it would compile (and
// fail here) as it would in the .cu.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    bits = std::isnan(x) ? uint16_t{0x7FC0} : static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
  }
  operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  }
  bf16& operator+=(float v) { return *this = bf16(float(*this) + v); }
  bf16& operator*=(float v) { return *this = bf16(float(*this) * v); }
};

struct Shape {
  int64_t B, M, C, K;
};

// SPEC §2 in float64: g [B], fbar and S / n_c [B, C, K], df [B, M, K], dW [M, C, K] for upstream gradient gg.
struct Expected {
  std::vector<double> g, fbar, S, df, dW;
};

static Expected spec_loops(const Shape& s, const std::vector<double>& f, const std::vector<double>& W,
                           const std::vector<int64_t>& q, const std::vector<double>& gg) {
  const auto [B, M, C, K] = s;
  std::vector<double> n(C, 0);
  for (int64_t j = 0; j < M; ++j) n[q[j]] += 1;
  Expected e{std::vector<double>(B, 0), std::vector<double>(B * C * K, 0), std::vector<double>(B * C * K, 0),
             std::vector<double>(B * M * K, 0), std::vector<double>(M * C * K, 0)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < M; ++j)
      for (int64_t k = 0; k < K; ++k) {
        e.fbar[(b * C + q[j]) * K + k] += f[(b * M + j) * K + k] / n[q[j]];
        for (int64_t c = 0; c < C; ++c)
          if (n[c] > 0) e.S[(b * C + c) * K + k] += W[(j * C + c) * K + k] * f[(b * M + j) * K + k] / n[c];
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < M; ++j)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < K; ++k) {
          const double fb = e.fbar[(b * C + c) * K + k], x = f[(b * M + j) * K + k], w = W[(j * C + c) * K + k];
          e.g[b] += w * x * fb;
          e.dW[(j * C + c) * K + k] += gg[b] * x * fb;
          e.df[(b * M + j) * K + k] += gg[b] * w * fb;
        }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < M; ++j)
      for (int64_t k = 0; k < K; ++k) e.df[(b * M + j) * K + k] += gg[b] * e.S[(b * C + q[j]) * K + k];
  return e;
}

template <typename T>
static void expect_close(const std::string& what, const std::vector<T>& got, const std::vector<double>& want,
                         double tol) {
  double scale = 1e-30, err = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - want[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
  }
  if (!(err <= tol * scale)) {
    std::printf("FAIL: %s: max error %.3g, over %.3g x %.3g\n", what.c_str(), err, tol, scale);
    ++failures;
  }
}

template <typename T>
static std::vector<T> cast(const std::vector<double>& v) {
  std::vector<T> out;
  for (double x : v) out.push_back(static_cast<T>(x));
  return out;
}

// v as the kernels see it once stored as T: the float64 loops take the rounded inputs, so that the tolerance
// measures the kernels' accumulation and output rounding, not the inputs'.
template <typename T>
static void round_to(std::vector<double>& v) {
  for (auto& x : v) x = static_cast<double>(static_cast<T>(x));
}

static dim3 as_dim3(gek::Grid g) {
  return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y), static_cast<unsigned>(g.z));
}

// The passes of group_energy_with_stats_cuda and group_energy_backward_cuda, in their order.
template <typename scalar_t, typename w_t, typename acc_t>
static void run_case(const std::string& name, const Shape& s, uint32_t seed, double tol) {
  const auto [B, M, C, K] = s;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  std::vector<double> f(B * M * K), W(M * C * K), gg(B);
  for (auto& v : f) v = uni(rng);
  for (auto& v : W) v = uni(rng);
  for (auto& v : gg) v = uni(rng);
  round_to<scalar_t>(f);
  round_to<w_t>(W);
  round_to<scalar_t>(gg);
  // Filters take groups 1..C-1 in turn, so group 0 is empty when C > 1 (and C = M puts one filter in each other).
  std::vector<int64_t> q(M);
  for (int64_t j = 0; j < M; ++j) q[j] = C == 1 ? 0 : 1 + j % (C - 1);
  const Expected e = spec_loops(s, f, W, q, gg);

  const std::vector<scalar_t> f_t = cast<scalar_t>(f);
  const std::vector<w_t> W_t = cast<w_t>(W);
  std::vector<scalar_t> gg_strided(2 * B);  // read with stride 2, as autograd's expanded grad_out is read
  for (int64_t b = 0; b < B; ++b) gg_strided[2 * b] = static_cast<scalar_t>(gg[b]);
  const dim3 tile(gek::kTileK, gek::kRows);
  const int64_t BCK = B * C * K;
  std::vector<acc_t> inv_n(C), fbar(BCK), S(BCK), S_part(gek::kSplitJ * BCK);
  const gek::Grid reduce = gek::reduce_grid(B, C, K);
  std::vector<acc_t> partial(reduce.y * B);

  launch(gek::inverse_sizes_kernel<acc_t>, dim3(1), dim3(gek::kFlatThreads), C * sizeof(int), q.data(),
         inv_n.data(), M, C);
  launch(gek::group_means_kernel<scalar_t, acc_t>, as_dim3(gek::means_grid(B, K)), tile, 0, f_t.data(), q.data(),
         inv_n.data(), fbar.data(), B, M, C, K);
  launch(gek::group_sums_kernel<scalar_t, w_t, acc_t>, as_dim3(gek::sums_grid(B, C, K)), tile, 0, f_t.data(),
         W_t.data(), S_part.data(), B, M, C, K);
  launch(gek::reduce_sums_kernel<acc_t>, as_dim3(reduce), dim3(gek::kFlatThreads), 0, S_part.data(), inv_n.data(),
         fbar.data(), S.data(), partial.data(), B, C, K);
  std::vector<acc_t> g(B, 0);
  for (int64_t chunk = 0; chunk < reduce.y; ++chunk)
    for (int64_t b = 0; b < B; ++b) g[b] += partial[chunk * B + b];

  std::vector<scalar_t> df(B * M * K);
  std::vector<w_t> dW(M * C * K);
  launch(gek::input_grad_kernel<scalar_t, w_t, acc_t>, as_dim3(gek::input_grad_grid(B, M, K)), tile, 0,
         W_t.data(), fbar.data(), q.data(), S.data(), gg_strided.data(), int64_t{2}, df.data(), B, M, C, K);
  launch(gek::weight_grad_kernel<scalar_t, w_t, acc_t>, as_dim3(gek::weight_grad_grid(M, C, K)), tile, 0,
         f_t.data(), fbar.data(), gg_strided.data(), int64_t{2}, dW.data(), B, M, C, K);

  // The staged products (INTERPGAN_CUDA_PRODUCTS=staged), with the layouts group_energy.cu gives them: the group
  // sums feed the same reduction, and the backward reads the stats of the direct forward.
  std::vector<acc_t> S_part_staged(gek::kSplitJ * BCK), S_staged(BCK);
  const gek::StagedLayout sums = gek::group_sums_layout(B, M, C, K);
  launch(gek::staged_product_kernel<gek::StagedProduct::kGroupSums, scalar_t, w_t, acc_t, scalar_t, acc_t>,
         as_dim3(gek::staged_product_grid(sums, K)), tile, 0, f_t.data(), W_t.data(), sums,
         static_cast<const scalar_t*>(nullptr), int64_t{0}, static_cast<const int64_t*>(nullptr),
         static_cast<const acc_t*>(nullptr), S_part_staged.data(), C, K);
  launch(gek::reduce_sums_kernel<acc_t>, as_dim3(reduce), dim3(gek::kFlatThreads), 0, S_part_staged.data(),
         inv_n.data(), fbar.data(), S_staged.data(), static_cast<acc_t*>(nullptr), B, C, K);
  std::vector<scalar_t> df_staged(B * M * K);
  std::vector<w_t> dW_staged(M * C * K);
  const gek::StagedLayout d_f = gek::input_grad_layout(B, M, C, K), d_W = gek::weight_grad_layout(B, M, C, K);
  launch(gek::staged_product_kernel<gek::StagedProduct::kInputGrad, w_t, acc_t, scalar_t, scalar_t, acc_t>,
         as_dim3(gek::staged_product_grid(d_f, K)), tile, 0, W_t.data(), fbar.data(), d_f, gg_strided.data(),
         int64_t{2}, q.data(), S.data(), df_staged.data(), C, K);
  launch(gek::staged_product_kernel<gek::StagedProduct::kWeightGrad, scalar_t, acc_t, w_t, scalar_t, acc_t>,
         as_dim3(gek::staged_product_grid(d_W, K)), tile, 0, f_t.data(), fbar.data(), d_W, gg_strided.data(),
         int64_t{2}, static_cast<const int64_t*>(nullptr), static_cast<const acc_t*>(nullptr), dW_staged.data(), C,
         K);

  expect_close(name + " fbar", fbar, e.fbar, tol);
  expect_close(name + " S / n_c", S, e.S, tol);
  expect_close(name + " g", g, e.g, tol);
  expect_close(name + " df", df, e.df, tol);
  expect_close(name + " dW", dW, e.dW, tol);
  expect_close(name + " S / n_c (staged)", S_staged, e.S, tol);
  expect_close(name + " df (staged)", df_staged, e.df, tol);
  expect_close(name + " dW (staged)", dW_staged, e.dW, tol);
  if (cuda_emulator::failed_asserts.load() != 0) {
    std::printf("FAIL: %s: a device-side assert fired on valid group ids\n", name.c_str());
    ++failures;
  }
  std::printf("%-28s B=%-3lld M=%-3lld C=%-3lld K=%-3lld checked\n", name.c_str(), static_cast<long long>(B),
              static_cast<long long>(M), static_cast<long long>(C), static_cast<long long>(K));
}

// A group id out of range must fire the device-side assert and must not be used as an index (AddressSanitizer
// reports it if it is).
static void out_of_range_ids_assert_and_stay_in_bounds() {
  const int64_t B = 2, M = 5, C = 3, K = 7;
  std::vector<float> f(B * M * K, 1.0f), inv_n(C), fbar(B * C * K, 0.0f);
  std::vector<int64_t> q = {0, 1, 2, 3, -1};
  cuda_emulator::failed_asserts = 0;
  launch(gek::inverse_sizes_kernel<float>, dim3(1), dim3(gek::kFlatThreads), C * sizeof(int), q.data(), inv_n.data(),
         M, C);
  const int fired_in_sizes = cuda_emulator::failed_asserts.exchange(0);
  launch(gek::group_means_kernel<float, float>, as_dim3(gek::means_grid(B, K)), dim3(gek::kTileK, gek::kRows), 0,
         f.data(), q.data(), inv_n.data(), fbar.data(), B, M, C, K);
  if (fired_in_sizes != 2) {
    std::printf("FAIL: ids 3 and -1 with C=3 fired %d asserts in inverse_sizes, not 2\n", fired_in_sizes);
    ++failures;
  }
  // The in-range filters still give their means (ids 0, 1, 2 hold one filter each, of value 1).
  for (float v : fbar)
    if (v != 1.0f) {
      std::printf("FAIL: group_means with bad ids gave %g, not 1\n", v);
      ++failures;
      break;
    }
  cuda_emulator::failed_asserts = 0;
}

// --no-16-bit: float and double only (the racecheck build: 16-bit inputs share memory as float, so they add nothing
// there).
int main(int argc, char** argv) {
  const bool with_16_bit = !(argc > 1 && std::strcmp(argv[1], "--no-16-bit") == 0);
  const std::vector<std::pair<std::string, Shape>> shapes = {
      {"odd sizes, an empty group", {5, 37, 5, 45}},
      {"C = M, K = 1", {33, 9, 9, 1}},
      {"one of everything", {1, 1, 1, 33}},
      {"several group blocks", {6, 70, 20, 64}},
      {"groups over a shared chunk", {3, 50, 40, 20}},  // group_means sums 32 (float) or 16 groups at a time
  };
  uint32_t seed = 1;
  for (const auto& [name, s] : shapes) {
    run_case<double, double, double>(name + " (f64)", s, seed++, 1e-12);
    run_case<float, float, float>(name + " (f32)", s, seed++, 2e-5);
    if (!with_16_bit) continue;
    // 16-bit f: rounding a 16-bit output costs up to 2^-11 (half) or 2^-8 (bfloat16) of the output's largest value;
    // the tolerance is twice that (accumulating in the 16-bit type instead of float fails it: tried)
    run_case<bf16, bf16, float>(name + " (bf16)", s, seed++, 8e-3);
    run_case<bf16, float, float>(name + " (bf16, W f32)", s, seed++, 8e-3);
#ifdef __FLT16_MAX__  // the compiler has _Float16 (GCC 12 and clang 15 on x86-64 and arm64)
    run_case<_Float16, _Float16, float>(name + " (f16)", s, seed++, 1e-3);
    run_case<_Float16, float, float>(name + " (f16, W f32)", s, seed++, 1e-3);
#endif
  }
#ifndef __FLT16_MAX__
  std::printf("note: this compiler has no _Float16; the half cases were not run (bfloat16 was)\n");
#endif
  out_of_range_ids_assert_and_stay_in_bounds();
  std::printf(failures == 0 ? "cuda kernels (emulated): all passed\n" : "cuda kernels (emulated): %d failed\n",
              failures);
  return failures == 0 ? 0 : 1;
}
