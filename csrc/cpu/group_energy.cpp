// CPU kernels of group_energy (SPEC §2), forward and backward.
//
// Layout: f is [B, M, K] and W is [M, C, K], both with the K positions contiguous. The kernels work on
// tiles of KT consecutive positions held in one vector register (8 floats or 4 doubles), with register
// tiles over samples, so each load of W feeds kBlockB multiply-adds. Positions are independent in the energy,
// so tiles are the unit of parallelism; a trailing K % KT positions are done one at a time (KT = 1).
// Full tiles are first copied tile-major (pack_tiles). Nothing of size [B, M, C, K] is ever formed: per tile
// the kernels keep only fbar and S, [C, KT] per sample.
#include "../checks.h"
#include "../ops.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>

// A portable build (no -march) still gets AVX2+FMA code where the CPU has it: GCC compiles the tile
// entry points twice and picks one at load time. The templates below are force-inlined into them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(INTERPGAN_NO_MULTIVERSION)
#define IG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define IG_MULTIVERSION
#endif
#define IG_INLINE inline __attribute__((always_inline))

namespace interpgan {
namespace cpu_energy {

template <typename T>
struct Problem {
  const T* f;        // [B, M, K]
  const T* W;        // [M, C, K]
  const int64_t* q;  // [M], validated ids
  const T* inv_n;    // [C], 1 / n_c, or 0 for an empty group
  int64_t B, M, K, C;  // K is also the row stride of f and W: KT inside a packed tile
};

constexpr int kBlockB = 4;  // samples sharing each W load
constexpr int kBlockC = 4;  // groups sharing each f load in dW

// A tile of KT positions is one GCC/Clang vector (256 bits: 8 floats or 4 doubles), so every multiply-add
// below is a packed FMA in the AVX2 clone and two SSE ones in the portable clone; KT = 1 is the scalar tail.
// The typedef lowers the vector's alignment to T's, so scalar buffers can hold vectors (see VecBuffer).
template <typename T, int KT>
struct VecOf {
  typedef T type __attribute__((vector_size(KT * sizeof(T)), aligned(sizeof(T))));
};
template <typename T>
struct VecOf<T, 1> {
  using type = T;
};
template <typename T, int KT>
using Vec = typename VecOf<T, KT>::type;

template <typename V, typename T>
IG_INLINE V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));  // an unaligned vector load
  return v;
}
template <typename V, typename T>
IG_INLINE void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename T, typename V>
IG_INLINE double hsum(const V& v) {
  if constexpr (sizeof(V) == sizeof(T)) {
    return v;
  } else {
    double s = 0;
    for (size_t i = 0; i < sizeof(V) / sizeof(T); ++i) s += v[i];
    return s;
  }
}

// fbar[c] for sample b on the tile starting at k0.
template <typename T, int KT>
IG_INLINE void group_means(const Problem<T>& p, int64_t b, int64_t k0, Vec<T, KT>* fbar) {
  using V = Vec<T, KT>;
  for (int64_t c = 0; c < p.C; ++c) fbar[c] = V{};
  const T* fb = p.f + b * p.M * p.K + k0;
  for (int64_t j = 0; j < p.M; ++j) fbar[p.q[j]] += vload<V>(fb + j * p.K);
  for (int64_t c = 0; c < p.C; ++c) fbar[c] *= p.inv_n[c];
}

// a[r] = sum_c W[j, c, tile] * fbar[r, c] for BB samples; fbar is [BB, C].
template <typename T, int KT, int BB>
IG_INLINE void weighted_means(const Problem<T>& p, int64_t j, int64_t k0, const Vec<T, KT>* fbar,
                              Vec<T, KT> (&a)[BB]) {
  using V = Vec<T, KT>;
  for (int r = 0; r < BB; ++r) a[r] = V{};
  const T* wj = p.W + j * p.C * p.K + k0;
  for (int64_t c = 0; c < p.C; ++c) {
    const V w = vload<V>(wj + c * p.K);
    for (int r = 0; r < BB; ++r) a[r] += w * fbar[r * p.C + c];
  }
}

// g[b0 + r] += sum_{j, k in tile} f[b, j, k] * A[b, j, k].
template <typename T, int KT, int BB>
IG_INLINE void energy_block(const Problem<T>& p, int64_t b0, int64_t k0, const Vec<T, KT>* fbar, double* g) {
  using V = Vec<T, KT>;
  V acc[BB], a[BB];
  for (int r = 0; r < BB; ++r) acc[r] = V{};
  for (int64_t j = 0; j < p.M; ++j) {
    weighted_means<T, KT, BB>(p, j, k0, fbar, a);
    for (int r = 0; r < BB; ++r) acc[r] += vload<V>(p.f + ((b0 + r) * p.M + j) * p.K + k0) * a[r];
  }
  for (int r = 0; r < BB; ++r) g[r] += hsum<T>(acc[r]);
}

// Scratch of n vectors, held as scalars: std::vector<Vec> would instantiate library code shared by the AVX2
// and portable clones, which pass 256-bit vectors differently (an ABI mismatch that crashed).
template <typename T, int KT>
struct VecBuffer {
  std::vector<T> data;
  explicit VecBuffer(int64_t n) : data(n * KT, T(0)) {}
  Vec<T, KT>* get() { return reinterpret_cast<Vec<T, KT>*>(data.data()); }  // vector types alias T
};

template <typename T, int KT>
IG_INLINE void forward_tile(const Problem<T>& p, int64_t k0, int64_t b_begin, int64_t b_end, double* g) {
  VecBuffer<T, KT> fbar_buf(kBlockB * p.C);
  Vec<T, KT>* fbar = fbar_buf.get();
  int64_t b = b_begin;
  for (; b + kBlockB <= b_end; b += kBlockB) {
    for (int r = 0; r < kBlockB; ++r) group_means<T, KT>(p, b + r, k0, fbar + r * p.C);
    energy_block<T, KT, kBlockB>(p, b, k0, fbar, g + b);
  }
  for (; b < b_end; ++b) {
    group_means<T, KT>(p, b, k0, fbar);
    energy_block<T, KT, 1>(p, b, k0, fbar, g + b);
  }
}

// S[r, c] = inv_n[c] * sum_j W[j, c, tile] f[b0 + r, j, tile]   (the path through fbar, pre-scaled),
// two groups x BB samples per pass so that each load feeds several multiply-adds.
template <typename T, int KT, int BB>
IG_INLINE void scaled_group_sums(const Problem<T>& p, int64_t b0, int64_t k0, Vec<T, KT>* S) {
  using V = Vec<T, KT>;
  constexpr int CB = 2;
  int64_t c = 0;
  for (; c + CB <= p.C; c += CB) {
    V s[BB][CB];
    for (int r = 0; r < BB; ++r)
      for (int cb = 0; cb < CB; ++cb) s[r][cb] = V{};
    for (int64_t j = 0; j < p.M; ++j) {
      const V w0 = vload<V>(p.W + (j * p.C + c) * p.K + k0), w1 = vload<V>(p.W + (j * p.C + c + 1) * p.K + k0);
      for (int r = 0; r < BB; ++r) {
        const V x = vload<V>(p.f + ((b0 + r) * p.M + j) * p.K + k0);
        s[r][0] += w0 * x;
        s[r][1] += w1 * x;
      }
    }
    for (int r = 0; r < BB; ++r)
      for (int cb = 0; cb < CB; ++cb) S[r * p.C + c + cb] = s[r][cb] * p.inv_n[c + cb];
  }
  for (; c < p.C; ++c) {
    V s[BB];
    for (int r = 0; r < BB; ++r) s[r] = V{};
    for (int64_t j = 0; j < p.M; ++j) {
      const V w = vload<V>(p.W + (j * p.C + c) * p.K + k0);
      for (int r = 0; r < BB; ++r) s[r] += w * vload<V>(p.f + ((b0 + r) * p.M + j) * p.K + k0);
    }
    for (int r = 0; r < BB; ++r) S[r * p.C + c] = s[r] * p.inv_n[c];
  }
}

// df[b, j, tile] = gg[b] * (A[b, j] + S[b, q_j] / n_{q_j}) for BB samples from b0.
// Outputs are addressed as out + row * ldo + ko: a packed tile reads with stride KT but writes into the
// caller's [rows, K] tensor.
template <typename T, int KT, int BB>
IG_INLINE void df_block(const Problem<T>& p, const T* gg, int64_t b0, int64_t k0, const Vec<T, KT>* fbar,
                        Vec<T, KT>* S, T* df, int64_t ldo, int64_t ko) {
  using V = Vec<T, KT>;
  scaled_group_sums<T, KT, BB>(p, b0, k0, S);
  V a[BB];
  for (int64_t j = 0; j < p.M; ++j) {
    weighted_means<T, KT, BB>(p, j, k0, fbar, a);
    for (int r = 0; r < BB; ++r)
      vstore(df + ((b0 + r) * p.M + j) * ldo + ko, (a[r] + S[r * p.C + p.q[j]]) * gg[b0 + r]);
  }
}

// dW[j, c0 + cc, tile] = sum_b gg[b] f[b, j, tile] fbar[b, c0 + cc]; fbar_all is [B, C].
template <typename T, int KT, int CC>
IG_INLINE void dW_block(const Problem<T>& p, const T* gg, int64_t j, int64_t c0, int64_t k0,
                        const Vec<T, KT>* fbar_all, T* dW, int64_t ldo, int64_t ko) {
  using V = Vec<T, KT>;
  V acc[CC];
  for (int cc = 0; cc < CC; ++cc) acc[cc] = V{};
  for (int64_t b = 0; b < p.B; ++b) {
    const V x = vload<V>(p.f + (b * p.M + j) * p.K + k0) * gg[b];
    const V* fb = fbar_all + b * p.C + c0;
    for (int cc = 0; cc < CC; ++cc) acc[cc] += x * fb[cc];
  }
  for (int cc = 0; cc < CC; ++cc) vstore(dW + (j * p.C + c0 + cc) * ldo + ko, acc[cc]);
}

template <typename T, int KT>
IG_INLINE void backward_tile(const Problem<T>& p, const T* gg, int64_t k0, T* df, T* dW, int64_t ldo, int64_t ko) {
  VecBuffer<T, KT> fbar_buf(p.B * p.C), S_buf(kBlockB * p.C);
  Vec<T, KT>* fbar_all = fbar_buf.get();
  Vec<T, KT>* S = S_buf.get();
  for (int64_t b = 0; b < p.B; ++b) group_means<T, KT>(p, b, k0, fbar_all + b * p.C);
  int64_t b = 0;
  for (; b + kBlockB <= p.B; b += kBlockB)
    df_block<T, KT, kBlockB>(p, gg, b, k0, fbar_all + b * p.C, S, df, ldo, ko);
  for (; b < p.B; ++b) df_block<T, KT, 1>(p, gg, b, k0, fbar_all + b * p.C, S, df, ldo, ko);
  for (int64_t j = 0; j < p.M; ++j) {
    int64_t c = 0;
    for (; c + kBlockC <= p.C; c += kBlockC) dW_block<T, KT, kBlockC>(p, gg, j, c, k0, fbar_all, dW, ldo, ko);
    for (; c < p.C; ++c) dW_block<T, KT, 1>(p, gg, j, c, k0, fbar_all, dW, ldo, ko);
  }
}

// Tile widths: one 256-bit register of lanes.
template <typename T>
constexpr int kTile = 32 / sizeof(T);

// Non-template entry points, one per dtype, compiled for each target in IG_MULTIVERSION.
IG_MULTIVERSION void forward_tile_f32(const Problem<float>& p, int64_t k0, int64_t width, int64_t b0, int64_t b1,
                                      double* g) {
  if (width == kTile<float>) forward_tile<float, kTile<float>>(p, k0, b0, b1, g);
  else forward_tile<float, 1>(p, k0, b0, b1, g);
}
IG_MULTIVERSION void forward_tile_f64(const Problem<double>& p, int64_t k0, int64_t width, int64_t b0, int64_t b1,
                                      double* g) {
  if (width == kTile<double>) forward_tile<double, kTile<double>>(p, k0, b0, b1, g);
  else forward_tile<double, 1>(p, k0, b0, b1, g);
}
IG_MULTIVERSION void backward_tile_f32(const Problem<float>& p, const float* gg, int64_t k0, int64_t width, float* df,
                                       float* dW, int64_t ldo, int64_t ko) {
  if (width == kTile<float>) backward_tile<float, kTile<float>>(p, gg, k0, df, dW, ldo, ko);
  else backward_tile<float, 1>(p, gg, k0, df, dW, ldo, ko);
}
IG_MULTIVERSION void backward_tile_f64(const Problem<double>& p, const double* gg, int64_t k0, int64_t width,
                                       double* df, double* dW, int64_t ldo, int64_t ko) {
  if (width == kTile<double>) backward_tile<double, kTile<double>>(p, gg, k0, df, dW, ldo, ko);
  else backward_tile<double, 1>(p, gg, k0, df, dW, ldo, ko);
}

inline void forward_tile_any(const Problem<float>& p, int64_t k0, int64_t w, int64_t b0, int64_t b1, double* g) {
  forward_tile_f32(p, k0, w, b0, b1, g);
}
inline void forward_tile_any(const Problem<double>& p, int64_t k0, int64_t w, int64_t b0, int64_t b1, double* g) {
  forward_tile_f64(p, k0, w, b0, b1, g);
}
inline void backward_tile_any(const Problem<float>& p, const float* gg, int64_t k0, int64_t w, float* df, float* dW,
                              int64_t ldo, int64_t ko) {
  backward_tile_f32(p, gg, k0, w, df, dW, ldo, ko);
}
inline void backward_tile_any(const Problem<double>& p, const double* gg, int64_t k0, int64_t w, double* df,
                              double* dW, int64_t ldo, int64_t ko) {
  backward_tile_f64(p, gg, k0, w, df, dW, ldo, ko);
}

// Tile-major copy of a [rows, K] array: packed[t, row, :] = src[row, t*KT : (t+1)*KT] for the full tiles. Inside a
// tile every row is then contiguous, so a tile of W (M*C*KT values) streams from L2 instead of touching a new
// cache line and page per (j, c): measured 6x faster on [64, 512, 256] x 24 groups. KT is a compile-time
// constant so that each copy is one register-wide move, not a library call: with a runtime size the copies
// cost more than the whole energy on small problems (~80 of 104 us at [8, 64, 64] x 8 groups).
template <typename T, int KT>
void pack_tiles(const T* src, int64_t rows, int64_t K, int64_t n_tiles, T* packed) {
  // Tile-outer: the writes are sequential (scattered ones, a tile apart, thrash the TLB on large arrays).
  at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* out = packed + t * rows * KT;
      const T* in = src + t * KT;
      for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * KT, in + r * K, KT * sizeof(T));
    }
  });
}

// Packing buffers, kept per calling thread and grown on demand: a fresh allocation per call would pay for
// zero-filling and page faults on tens of MB every time (they are reused across the calls of a training loop).
template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> buffers[2];
  auto& buf = buffers[slot];
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Tile t covers [k0, k0 + width): full tiles first, then the trailing positions one by one.
struct Tiling {
  int64_t full, count, KT;
  Tiling(int64_t K, int64_t KT_) : full(K / KT_), count(K / KT_ + K % KT_), KT(KT_) {}
  int64_t start(int64_t t) const { return t < full ? t * KT : full * KT + (t - full); }
  int64_t width(int64_t t) const { return t < full ? KT : 1; }
};

// 1 / n_c per group, 0 for an empty group (so its fbar is 0).
template <typename T>
std::vector<T> inverse_group_sizes(const at::Tensor& groups, int64_t C) {
  std::vector<int64_t> n(C, 0);
  const int64_t* q = groups.data_ptr<int64_t>();
  for (int64_t j = 0; j < groups.numel(); ++j) ++n[q[j]];
  std::vector<T> inv(C);
  for (int64_t c = 0; c < C; ++c) inv[c] = n[c] > 0 ? T(1) / T(n[c]) : T(0);
  return inv;
}

template <typename T>
Problem<T> make_problem(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups, const std::vector<T>& inv_n,
                        const EnergyShape& s) {
  return Problem<T>{f.data_ptr<T>(), W.data_ptr<T>(), groups.data_ptr<int64_t>(), inv_n.data(), s.B, s.M, s.K, s.C};
}

// Packing pays off once f and W outgrow the caches; below this many bytes the kernels read them in place.
constexpr int64_t kPackBytes = 1 << 20;

// Where the kernels read tile t from: the tile-major packed copies of f and W, or the inputs themselves.
template <typename T>
struct TileSource {
  const Problem<T>& p;
  const Tiling& tiles;
  T* f_packed = nullptr;
  T* W_packed = nullptr;

  TileSource(const Problem<T>& p_, const Tiling& tiles_) : p(p_), tiles(tiles_) {
    if ((p.B + p.C) * p.M * p.K * int64_t(sizeof(T)) <= kPackBytes) return;
    f_packed = scratch<T>(0, tiles.full * tiles.KT * p.B * p.M);
    W_packed = scratch<T>(1, tiles.full * tiles.KT * p.M * p.C);
    pack_tiles<T, kTile<T>>(p.f, p.B * p.M, p.K, tiles.full, f_packed);
    pack_tiles<T, kTile<T>>(p.W, p.M * p.C, p.K, tiles.full, W_packed);
  }

  // The problem to run tile t on, with the tile's first position in it (k0) and its width.
  Problem<T> problem(int64_t t, int64_t& k0, int64_t& width) const {
    width = tiles.width(t);
    if (f_packed == nullptr || t >= tiles.full) {
      k0 = tiles.start(t);
      return p;
    }
    Problem<T> pt = p;  // packed tile t: rows of KT values, positions from 0
    pt.f = f_packed + t * p.B * p.M * tiles.KT;
    pt.W = W_packed + t * p.M * p.C * tiles.KT;
    pt.K = tiles.KT;
    k0 = 0;
    return pt;
  }
};

// Half/bfloat16 inputs on the CPU are computed in float32 and cast back.
at::ScalarType compute_dtype(const at::Tensor& f) {
  return f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace cpu_energy

using namespace cpu_energy;

at::Tensor group_energy_cpu(const at::Tensor& f_in, const at::Tensor& W_in, const at::Tensor& groups_in) {
  const EnergyShape s = check_group_energy_args("group_energy", f_in, W_in, groups_in);
  const auto groups = groups_in.contiguous();
  check_group_ids_cpu("group_energy", groups, s.C);
  const auto ct = compute_dtype(f_in);
  const auto f = as_bmk(f_in, s).to(ct);
  const auto W = W_in.contiguous().to(ct);
  auto g_acc = at::zeros({s.B}, f.options().dtype(at::kDouble));
  if (s.B == 0 || s.K == 0 || s.M == 0) return g_acc.to(W_in.scalar_type());

  AT_DISPATCH_FLOATING_TYPES(ct, "group_energy_cpu", [&] {
    const auto inv_n = inverse_group_sizes<scalar_t>(groups, s.C);
    const auto p = make_problem<scalar_t>(f, W, groups, inv_n, s);
    const Tiling tiles(s.K, kTile<scalar_t>);
    // Samples are split into chunks too, so that small K still keeps every core busy.
    const int64_t chunk = std::max<int64_t>(kBlockB, (s.B + 15) / 16 / kBlockB * kBlockB);
    const int64_t n_chunks = (s.B + chunk - 1) / chunk;
    std::vector<double> partial(tiles.count * s.B, 0.0);  // per tile, so tasks never share an accumulator
    double* part = partial.data();
    const TileSource<scalar_t> source(p, tiles);
    at::parallel_for(0, tiles.count * n_chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / n_chunks, b0 = (task % n_chunks) * chunk, b1 = std::min(s.B, b0 + chunk);
        int64_t k0, width;
        const auto pt = source.problem(t, k0, width);
        forward_tile_any(pt, k0, width, b0, b1, part + t * s.B);
      }
    });
    double* g = g_acc.data_ptr<double>();
    for (int64_t t = 0; t < tiles.count; ++t)
      for (int64_t b = 0; b < s.B; ++b) g[b] += part[t * s.B + b];
  });
  return g_acc.to(W_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_cpu(const at::Tensor& grad_out, const at::Tensor& f_in,
                                                             const at::Tensor& W_in, const at::Tensor& groups_in) {
  const EnergyShape s = check_group_energy_args("group_energy_backward", f_in, W_in, groups_in);
  TORCH_CHECK(grad_out.dim() == 1 && grad_out.size(0) == s.B, "group_energy_backward: expected grad_out of shape [B=",
              s.B, "], but got ", shape_str(grad_out));
  TORCH_CHECK(grad_out.device() == f_in.device(), "group_energy_backward: expected grad_out on ", f_in.device(),
              ", but got ", grad_out.device());
  const auto groups = groups_in.contiguous();
  check_group_ids_cpu("group_energy_backward", groups, s.C);
  const auto ct = compute_dtype(f_in);
  const auto f = as_bmk(f_in, s).to(ct);
  const auto W = W_in.contiguous().to(ct);
  const auto gg = grad_out.contiguous().to(ct);
  auto df = at::zeros({s.B, s.M, s.K}, f.options());
  auto dW = at::zeros({s.M, s.C, s.K}, W.options());
  if (s.B > 0 && s.K > 0 && s.M > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "group_energy_backward_cpu", [&] {
      const auto inv_n = inverse_group_sizes<scalar_t>(groups, s.C);
      const auto p = make_problem<scalar_t>(f, W, groups, inv_n, s);
      const Tiling tiles(s.K, kTile<scalar_t>);
      scalar_t* df_p = df.data_ptr<scalar_t>();
      scalar_t* dW_p = dW.data_ptr<scalar_t>();
      const scalar_t* gg_p = gg.data_ptr<scalar_t>();
      const TileSource<scalar_t> source(p, tiles);
      // Each tile writes its own positions of df and dW: no reduction across tasks.
      at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          int64_t k0, width;
          const auto pt = source.problem(t, k0, width);
          backward_tile_any(pt, gg_p, k0, width, df_p, dW_p, s.K, tiles.start(t));
        }
      });
    });
  }
  return {df.view(f_in.sizes()).to(f_in.scalar_type()), dW.to(W_in.scalar_type())};
}

}  // namespace interpgan
