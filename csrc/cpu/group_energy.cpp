// CPU kernels of group_energy (SPEC §2), forward and backward.
//
// Layout: f is [B, M, K] and W is [M, C, K], both with the K positions contiguous. The kernels work on
// tiles of KT consecutive positions held in one vector register (8 floats or 4 doubles), and compute the
// energy's products in register blocks (product_block). Positions are independent in the energy, so tiles
// are the unit of parallelism; a trailing K % KT positions are done one at a time (KT = 1).
// Full tiles are first copied tile-major (copy_tiles), and the backward writes its outputs tile-major too.
// Nothing of size [B, M, C, K] is ever formed: per tile the kernels keep only fbar and S, [C, KT] per sample,
// and the forward can save those for the backward (group_energy_with_stats).
#include "../checks.h"
#include "../ops.h"
#include "buffer_cache.h"
#include "simd.h"

#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <optional>
#if defined(IG_X86_SSE2)
#include <emmintrin.h>
#endif
#include <vector>

namespace interpgan {
namespace cpu_energy {

using namespace simd;

template <typename T>
struct Problem {
  const T* f;        // [B, M, K]
  const T* W;        // [M, C, K]
  const int64_t* q;  // [M], validated ids
  const T* inv_n;    // [C], 1 / n_c, or 0 for an empty group
  const T* n;        // [C], n_c
  const int64_t* members;       // [M]: the filters of group 0 in order, then those of group 1, ...
  const int64_t* member_start;  // [C + 1]: group c is members[member_start[c] : member_start[c + 1]]
  int64_t B, M, K, C;  // K is also the row stride of f and W: KT inside a packed tile
};

// The sum of n lanes. It reads scalars: a vector type deduced as a template argument loses the lowered
// alignment of Vec (GCC drops the attribute), and an aligned load of an 8-byte-aligned buffer crashes.
template <typename T>
IG_INLINE double lane_sum(const T* lanes, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += lanes[i];
  return s;
}

// Per tile every quantity is a vector of KT positions, and the energy's three products are small matrix
// products whose "scalars" are those vectors (lane-wise multiply-adds, the positions never mix):
//   S[b, c] = sum_j f[b, j] W[j, c]         (forward: g = sum_c fbar S; and df's path through fbar)
//   A[b, j] = sum_c fbar[b, c] W[j, c]      (df)
//   dW[j, c] = sum_b f[b, j] gg[b] fbar[b, c]
// Each is computed in R x Q register blocks: a step of the sum loads R + Q vectors for R * Q multiply-adds,
// and the R * Q accumulators are independent chains, enough to hide the FMA latency. On one tile in cache a
// product runs at ~2 vector FMAs per ns per core on the 2-core CI machine, whose peak is 2.5.
constexpr int kBlockR = 4, kBlockQ = 3;  // 12 accumulators + 4 operands: the 16 AVX2 registers

// acc[r][q] = sum_{l < L} a[r * ar + l * al] * b[q * bq + l * bl]; strides in scalars.
template <typename T, int KT, int R, int Q>
IG_INLINE void product_block(const T* a, int64_t ar, int64_t al, const T* b, int64_t bq, int64_t bl, int64_t L,
                             Vec<T, KT> (&acc)[R][Q]) {
  using V = Vec<T, KT>;
  IG_UNROLL for (int r = 0; r < R; ++r) IG_UNROLL for (int q = 0; q < Q; ++q) acc[r][q] = V{};
  for (int64_t l = 0; l < L; ++l) {
    V y[Q];
    IG_UNROLL for (int q = 0; q < Q; ++q) y[q] = vload<V>(b + q * bq + l * bl);
    IG_UNROLL for (int r = 0; r < R; ++r) {
      const V x = vload<V>(a + r * ar + l * al);
      IG_UNROLL for (int q = 0; q < Q; ++q) acc[r][q] += x * y[q];
    }
  }
}

// Runs body.template block<r, q>(i, j) over [0, n1) x [0, n2) in kBlockR x kBlockQ blocks. The edges take one
// block as wide as what is left (a row of 1-wide blocks has too few accumulators to hide the FMA latency: with
// C = 8 groups a quarter of the work was there).
template <int R, typename Body>
IG_INLINE void block_row(int64_t i, int64_t n2, const Body& body) {
  int64_t j = 0;
  for (; j + kBlockQ <= n2; j += kBlockQ) body.template block<R, kBlockQ>(i, j);
  static_assert(kBlockQ == 3, "the edge below covers a remainder of 1 or 2");
  if (n2 - j == 2) body.template block<R, 2>(i, j);
  else if (n2 - j == 1) body.template block<R, 1>(i, j);
}
// Blocks run row by row, each row from column 0 (WeightGradBody relies on it).
template <typename Body>
IG_INLINE void for_blocks(int64_t n1, int64_t n2, const Body& body) {
  int64_t i = 0;
  for (; i + kBlockR <= n1; i += kBlockR) block_row<kBlockR>(i, n2, body);
  static_assert(kBlockR == 4, "the edge below covers a remainder of 1 to 3");
  if (n1 - i == 3) block_row<3>(i, n2, body);
  else if (n1 - i == 2) block_row<2>(i, n2, body);
  else if (n1 - i == 1) block_row<1>(i, n2, body);
}

// fbar[r, c] for the R samples from b on the tile starting at k0, scaled by 1 / n_c. Group by group, the sums
// stay in registers (adding into fbar[q_j] filter by filter made every add wait for the previous store).
template <typename T, int KT, int R>
IG_INLINE void group_means_rows(const Problem<T>& p, int64_t b, int64_t k0, Vec<T, KT>* fbar) {
  using V = Vec<T, KT>;
  const T* fb = p.f + b * p.M * p.K + k0;
  for (int64_t c = 0; c < p.C; ++c) {
    V acc[R];
    IG_UNROLL for (int r = 0; r < R; ++r) acc[r] = V{};
    for (int64_t i = p.member_start[c]; i < p.member_start[c + 1]; ++i) {
      const T* fj = fb + p.members[i] * p.K;
      IG_UNROLL for (int r = 0; r < R; ++r) acc[r] += vload<V>(fj + r * p.M * p.K);
    }
    IG_UNROLL for (int r = 0; r < R; ++r) fbar[r * p.C + c] = acc[r] * p.inv_n[c];
  }
}

// fbar[b - b0, c] for samples [b0, b1), kBlockR samples at a time (independent chains of adds).
template <typename T, int KT>
IG_INLINE void group_means(const Problem<T>& p, int64_t b0, int64_t b1, int64_t k0, Vec<T, KT>* fbar) {
  int64_t b = b0;
  for (; b + kBlockR <= b1; b += kBlockR) group_means_rows<T, KT, kBlockR>(p, b, k0, fbar + (b - b0) * p.C);
  static_assert(kBlockR == 4, "the edge below covers a remainder of 1 to 3");
  if (b1 - b == 3) group_means_rows<T, KT, 3>(p, b, k0, fbar + (b - b0) * p.C);
  else if (b1 - b == 2) group_means_rows<T, KT, 2>(p, b, k0, fbar + (b - b0) * p.C);
  else if (b1 - b == 1) group_means_rows<T, KT, 1>(p, b, k0, fbar + (b - b0) * p.C);
}

// A[b, j] = sum_c fbar[b, c] W[j, c] for the R samples from row i of fbar and the Q filters from j0.
template <typename T, int KT, int R, int Q>
IG_INLINE void weighted_means(const Problem<T>& p, const Vec<T, KT>* fbar, int64_t i, int64_t j0, int64_t k0,
                              Vec<T, KT> (&A)[R][Q]) {
  product_block<T, KT, R, Q>(reinterpret_cast<const T*>(fbar + i * p.C), p.C * KT, KT, p.W + j0 * p.C * p.K + k0,
                             p.C * p.K, p.K, p.C, A);
}

// S[b, c] = inv_n[c] sum_j f[b, j] W[j, c]: the path through fbar, pre-scaled.
template <typename T, int KT>
struct GroupSumsBody {
  const Problem<T>& p;
  Vec<T, KT>* S;  // [rows, C], row b for sample b0 + b
  int64_t k0, b0;
  template <int R, int Q>
  IG_INLINE void block(int64_t b, int64_t c) const {
    Vec<T, KT> acc[R][Q];
    product_block<T, KT, R, Q>(p.f + (b0 + b) * p.M * p.K + k0, p.M * p.K, p.K, p.W + c * p.K + k0, p.K, p.C * p.K, p.M,
                               acc);
    IG_UNROLL for (int r = 0; r < R; ++r)
      IG_UNROLL for (int q = 0; q < Q; ++q) S[(b + r) * p.C + c + q] = acc[r][q] * p.inv_n[c + q];
  }
};

// Buffers kept per thread and grown on demand, never freed: a fresh allocation per call (or per tile) would pay
// for zero-filling and page faults every time; they are reused across the calls of a training loop. They hold
// scalars: std::vector<Vec> would instantiate library code shared by the AVX2 and portable clones, which pass
// 256-bit vectors differently (an ABI mismatch that crashed).
enum ScratchSlot { kPackedF, kPackedW, kPackedDW, kTileStats, kSlab, kNumSlots };
template <typename T>
T* scratch(ScratchSlot slot, int64_t n) {
  thread_local std::vector<T> buffers[kNumSlots];
  auto& buf = buffers[slot];
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// The per-tile statistics the backward needs, [rows, C] vectors of the tile's width each: the group means fbar
// and the pre-scaled group sums S. The forward computes them anyway; saved, the backward skips a third of its work.
template <typename T>
struct TileStats {
  T* fbar = nullptr;
  T* S = nullptr;
};

// Forward on one tile for samples [b0, b1): g[b] += sum_c fbar[b, c] S[b, c] n_c. The statistics go to `out`
// (rows from b0) when it is set, else to a local scratch.
template <typename T, int KT>
IG_INLINE void forward_tile(const Problem<T>& p, int64_t k0, int64_t b0, int64_t b1, double* g, TileStats<T> out) {
  using V = Vec<T, KT>;
  const int64_t nb = b1 - b0;
  V* local = out.fbar ? nullptr : reinterpret_cast<V*>(scratch<T>(kTileStats, 2 * nb * p.C * KT));
  V* fbar = out.fbar ? reinterpret_cast<V*>(out.fbar) : local;
  V* S = out.S ? reinterpret_cast<V*>(out.S) : local + nb * p.C;
  if (p.K == KT) {  // a packed tile: its samples' rows are one run, which group_means reads in group order
    const T* run = p.f + b0 * p.M * KT;
    for (int64_t i = 0; i < nb * p.M * KT; i += 64 / sizeof(T)) __builtin_prefetch(run + i);
  }
  group_means<T, KT>(p, b0, b1, k0, fbar);
  for_blocks(nb, p.C, GroupSumsBody<T, KT>{p, S, k0, b0});
  for (int64_t b = 0; b < nb; ++b) {
    V acc{};
    for (int64_t c = 0; c < p.C; ++c) acc += fbar[b * p.C + c] * S[b * p.C + c] * p.n[c];
    T lanes[KT];
    vstore(lanes, acc);
    g[b0 + b] += lane_sum(lanes, KT);
  }
}

// df[b, j] = gg[b] (A[b, j] + S[b, q_j]), from fbar and S already scaled by gg[b]. Outputs are addressed as
// out + row * ldo + ko: a packed tile writes with stride KT, an unpacked one into the caller's [rows, K] tensor.
template <typename T, int KT>
struct InputGradBody {
  const Problem<T>& p;
  const Vec<T, KT>* fbar_g;  // [B, C], gg * fbar
  const Vec<T, KT>* S_g;     // [B, C], gg * S
  T* df;
  int64_t k0, ldo, ko;
  template <int R, int Q>
  IG_INLINE void block(int64_t b, int64_t j) const {
    Vec<T, KT> A[R][Q];
    weighted_means<T, KT, R, Q>(p, fbar_g, b, j, k0, A);
    IG_UNROLL for (int r = 0; r < R; ++r)
      IG_UNROLL for (int q = 0; q < Q; ++q)
        vstore(df + ((b + r) * p.M + j + q) * ldo + ko, A[r][q] + S_g[(b + r) * p.C + p.q[j + q]]);
  }
};

// dW[j, c] = sum_b f[b, j] fbar_g[b, c], with fbar_g = gg * fbar.
// The sum runs over samples, whose rows of f are M * K apart: 16 KB at 512 filters, so the R filters' 64 samples
// all fall into the same two L1 sets and were fetched from L2 again for every block of groups. The first block of
// each row of blocks (c = 0) copies them into `slab`, [B, R] contiguous, which the row's other blocks read too.
template <typename T, int KT>
struct WeightGradBody {
  const Problem<T>& p;
  const Vec<T, KT>* fbar_g;  // [B, C]
  T* dW;
  int64_t k0, ldo, ko;
  T* slab;  // kBlockR * B vectors
  template <int R, int Q>
  IG_INLINE void block(int64_t j, int64_t c) const {
    using V = Vec<T, KT>;
    if (c == 0) {
      for (int64_t b = 0; b < p.B; ++b)
        IG_UNROLL for (int r = 0; r < R; ++r)
          vstore(slab + (b * R + r) * KT, vload<V>(p.f + (b * p.M + j + r) * p.K + k0));
    }
    V acc[R][Q];
    product_block<T, KT, R, Q>(slab, KT, R * KT, reinterpret_cast<const T*>(fbar_g + c), KT, p.C * KT, p.B, acc);
    IG_UNROLL for (int r = 0; r < R; ++r)
      IG_UNROLL for (int q = 0; q < Q; ++q) vstore(dW + ((j + r) * p.C + c + q) * ldo + ko, acc[r][q]);
  }
};

// Backward outputs of one tile, addressed out + row * ldo + ko (see InputGradBody); a null one is not computed.
template <typename T>
struct TileGrads {
  T* df;
  T* dW;
  int64_t ldo, ko;
};

// The tile's f is last read by dW, so df may be written over it (the packed path does: out.df == p.f). The
// statistics come from the forward when it saved them (saved.fbar set), else they are recomputed.
template <typename T, int KT>
IG_INLINE void backward_tile(const Problem<T>& p, const T* gg, int64_t k0, TileStats<T> saved, TileGrads<T> out) {
  using V = Vec<T, KT>;
  T* buf = scratch<T>(kTileStats, 2 * p.B * p.C * KT);
  V* fbar = reinterpret_cast<V*>(buf);
  V* S = fbar + p.B * p.C;
  if (saved.fbar == nullptr) {
    group_means<T, KT>(p, 0, p.B, k0, fbar);
    if (out.df != nullptr) for_blocks(p.B, p.C, GroupSumsBody<T, KT>{p, S, k0, 0});  // S is df's alone
    saved = {buf, buf + p.B * p.C * KT};
  }
  // Both gradients are linear in gg[b]: scale the statistics once here (saved ones are read, not written).
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t c = 0; c < p.C; ++c) {
      const int64_t i = b * p.C + c;
      fbar[i] = vload<V>(saved.fbar + i * KT) * gg[b];
      if (out.df != nullptr) S[i] = vload<V>(saved.S + i * KT) * gg[b];
    }
  }
  if (out.dW != nullptr) {
    T* slab = scratch<T>(kSlab, kBlockR * p.B * KT);
    for_blocks(p.M, p.C, WeightGradBody<T, KT>{p, fbar, out.dW, k0, out.ldo, out.ko, slab});
  }
  if (out.df != nullptr) for_blocks(p.B, p.M, InputGradBody<T, KT>{p, fbar, S, out.df, k0, out.ldo, out.ko});
}

// Tile widths: one 256-bit register of lanes.
template <typename T>
constexpr int kTile = 32 / sizeof(T);

// Non-template entry points, one per dtype, compiled for each target in IG_MULTIVERSION.
#define IG_TILE_ENTRY_POINTS(T, suffix)                                                                        \
  IG_MULTIVERSION void forward_tile_##suffix(const Problem<T>& p, int64_t k0, int64_t width, int64_t b0,      \
                                             int64_t b1, double* g, TileStats<T> out) {                       \
    if (width == kTile<T>) forward_tile<T, kTile<T>>(p, k0, b0, b1, g, out);                                 \
    else forward_tile<T, 1>(p, k0, b0, b1, g, out);                                                          \
  }                                                                                                            \
  IG_MULTIVERSION void backward_tile_##suffix(const Problem<T>& p, const T* gg, int64_t k0, int64_t width,    \
                                              TileStats<T> saved, TileGrads<T> out) {                         \
    if (width == kTile<T>) backward_tile<T, kTile<T>>(p, gg, k0, saved, out);                                \
    else backward_tile<T, 1>(p, gg, k0, saved, out);                                                         \
  }                                                                                                            \
  inline void forward_tile_any(const Problem<T>& p, int64_t k0, int64_t w, int64_t b0, int64_t b1, double* g, \
                               TileStats<T> out) {                                                             \
    forward_tile_##suffix(p, k0, w, b0, b1, g, out);                                                          \
  }                                                                                                            \
  inline void backward_tile_any(const Problem<T>& p, const T* gg, int64_t k0, int64_t w, TileStats<T> saved,   \
                                TileGrads<T> out) {                                                            \
    backward_tile_##suffix(p, gg, k0, w, saved, out);                                                         \
  }
IG_TILE_ENTRY_POINTS(float, f32)
IG_TILE_ENTRY_POINTS(double, f64)
#undef IG_TILE_ENTRY_POINTS

// One tile row into the packed buffer with non-temporal stores: the buffer is larger than the caches, so a plain
// store would first read each line it writes (write-allocate), a third more memory traffic. The destination must
// be 16-byte aligned (copy_tiles checks).
#if defined(IG_X86_SSE2)
template <typename T, int KT>
IG_INLINE void stream_copy(T* dst, const T* src) {
  static_assert(KT * sizeof(T) % 16 == 0, "whole 16-byte stores");
  for (int i = 0; i < int(KT * sizeof(T) / 16); ++i)
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst) + i, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + i));
}
inline void stream_fence() { _mm_sfence(); }  // the stores are weakly ordered: visible before the threads join
#else
template <typename T, int KT>
IG_INLINE void stream_copy(T* dst, const T* src) { std::memcpy(dst, src, KT * sizeof(T)); }
inline void stream_fence() {}
#endif

// Copies between a [rows, K] array and its tile-major form: packed[t, row, :] = rowmajor[row, t*KT : (t+1)*KT]
// for the full tiles. Inside a packed tile every row is contiguous, so a tile of W (M*C*KT values) streams from
// L2 instead of touching a new cache line and page per (j, c): measured 6x faster on [64, 512, 256] x 24 groups.
// The copy goes by blocks of rows: a block's row-major side (64 rows of K) stays in L1/L2 while its tiles are
// written as 32 sequential runs, so both sides move whole cache lines and few pages at a time (row by row
// thrashes the TLB, tile by tile reads each line twice). KT is a compile-time constant so that each copy is one
// register-wide move, not a library call.
template <typename T, int KT, bool kToPacked>
void copy_tiles(T* rowmajor, int64_t rows, int64_t K, int64_t n_tiles, T* packed) {
  constexpr int64_t kRowBlock = 64;
  TORCH_INTERNAL_ASSERT(reinterpret_cast<uintptr_t>(packed) % 16 == 0, "packed tiles must be 16-byte aligned");
  at::parallel_for(0, (rows + kRowBlock - 1) / kRowBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t r0 = block * kRowBlock, n = std::min(rows, r0 + kRowBlock) - r0;
      for (int64_t t = 0; t < n_tiles; ++t) {
        T* tile = packed + (t * rows + r0) * KT;
        T* row = rowmajor + r0 * K + t * KT;
        for (int64_t r = 0; r < n; ++r) {
          if constexpr (kToPacked) stream_copy<T, KT>(tile + r * KT, row + r * K);
          else std::memcpy(row + r * K, tile + r * KT, KT * sizeof(T));
        }
      }
    }
    stream_fence();
  });
}

// Tile t covers [k0, k0 + width): full tiles first, then the trailing positions one by one.
struct Tiling {
  int64_t full, count, KT;
  Tiling(int64_t K, int64_t KT_) : full(K / KT_), count(K / KT_ + K % KT_), KT(KT_) {}
  int64_t start(int64_t t) const { return t < full ? t * KT : full * KT + (t - full); }
  int64_t width(int64_t t) const { return t < full ? KT : 1; }
};

// n_c and 1 / n_c per group; 1 / n_c is 0 for an empty group (so its fbar is 0).
template <typename T>
struct GroupSizes {
  std::vector<T> n, inv;
  std::vector<int64_t> members, member_start;  // the filters listed group by group (see Problem)
  GroupSizes(const at::Tensor& groups, int64_t C)
      : n(C, T(0)), inv(C, T(0)), members(groups.numel()), member_start(C + 1, 0) {
    const int64_t* q = groups.data_ptr<int64_t>();
    const int64_t M = groups.numel();
    for (int64_t j = 0; j < M; ++j) ++member_start[q[j] + 1];
    for (int64_t c = 0; c < C; ++c) {
      n[c] = T(member_start[c + 1]);
      inv[c] = n[c] > 0 ? T(1) / n[c] : T(0);
      member_start[c + 1] += member_start[c];
    }
    std::vector<int64_t> next(member_start.begin(), member_start.end() - 1);
    for (int64_t j = 0; j < M; ++j) members[next[q[j]]++] = j;
  }
};

template <typename T>
Problem<T> make_problem(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups, const GroupSizes<T>& sizes,
                        const EnergyShape& s) {
  return Problem<T>{f.data_ptr<T>(), W.data_ptr<T>(), groups.data_ptr<int64_t>(), sizes.inv.data(), sizes.n.data(),
                    sizes.members.data(), sizes.member_start.data(), s.B, s.M, s.K, s.C};
}

// Packing pays off once f and W outgrow the caches; below this many bytes the kernels read them in place.
constexpr int64_t kPackBytes = 1 << 20;

// Which tensor a packed buffer of the calling thread holds a copy of, so that a backward right after its forward
// on the same thread (autograd runs CPU backwards on the calling thread) skips copying f and W again. A copy
// matches while the caller's tensor is alive (a weak reference to its storage), is the same view of it, and has
// not been written since (its version counter, shared with its views: in-place ops bump it). A write through
// `.data` bumps no counter, so only a backward given the forward's statistics reuses a copy: it computes the
// gradient at the forward's f and W, and the copies are those. Forwards always copy, so that a forward after a
// `.data` update (manual SGD) never reads a stale W.
class PackedOrigin {
 public:
  bool holds(const at::Tensor& t) const {
    if (!storage_ || !t.defined() || t.is_inference()) return false;  // inference tensors keep no version counter
    const auto alive = storage_->lock();
    return alive && alive.get() == t.storage().unsafeGetStorageImpl() && t.storage_offset() == offset_ &&
           t.sizes() == at::IntArrayRef(sizes_) && t.scalar_type() == dtype_ && version(t) == version_;
  }
  void set(const at::Tensor& t) {  // just copied t; an undefined t (a converted copy was packed) matches nothing
    if (!t.defined() || t.is_inference()) return forget();
    storage_.emplace(t.storage().getWeakStorageImpl());
    offset_ = t.storage_offset();
    sizes_ = t.sizes().vec();
    dtype_ = t.scalar_type();
    version_ = version(t);
  }
  void forget() { storage_.reset(); }

 private:
  static int64_t version(const at::Tensor& t) { return t.unsafeGetTensorImpl()->version_counter().current_version(); }
  std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> storage_;
  int64_t offset_ = 0, version_ = 0;
  std::vector<int64_t> sizes_;
  at::ScalarType dtype_ = at::kFloat;
};

template <typename T>
PackedOrigin& packed_origin(ScratchSlot slot) {
  thread_local PackedOrigin origins[kNumSlots];  // one per scratch<T>(slot) buffer
  return origins[slot];
}

// The caller's tensor whose version counter stands for the data the kernels read (`used`, contiguous in the
// compute dtype): the caller's own when the kernels read it as it is, else none (a converted or contiguous copy,
// which no later call can name).
inline at::Tensor origin_of(const at::Tensor& caller, const at::Tensor& used) {
  return used.is_same(caller) ? caller : at::Tensor();
}

// Where the kernels read tile t from: the tile-major packed copies of f and W, or the inputs themselves.
// An operand the caller will not read is not copied (a backward with saved statistics reads f for dW only and
// W for df only), nor, in a backward (`reuse`), one whose copy the forward left (PackedOrigin). A packed buffer
// is there even when not copied, for the caller to write a tile-major output into (after overwrite_f()).
// f_origin and W_origin: see origin_of.
template <typename T>
struct TileSource {
  const Problem<T>& p;
  const Tiling& tiles;
  T* f_packed = nullptr;
  T* W_packed = nullptr;

  TileSource(const Problem<T>& p_, const Tiling& tiles_, const at::Tensor& f_origin, const at::Tensor& W_origin,
             bool reads_f = true, bool reads_W = true, bool reuse = false)
      : p(p_), tiles(tiles_) {
    if ((p.B + p.C) * p.M * p.K * int64_t(sizeof(T)) <= kPackBytes) return;
    f_packed = pack(kPackedF, p.f, f_origin, p.B * p.M, reads_f, reuse);
    W_packed = pack(kPackedW, p.W, W_origin, p.M * p.C, reads_W, reuse);
  }

  void overwrite_f() const { packed_origin<T>(kPackedF).forget(); }

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

 private:
  T* pack(ScratchSlot slot, const T* src, const at::Tensor& origin, int64_t rows, bool reads, bool reuse) const {
    T* packed = scratch<T>(slot, tiles.full * tiles.KT * rows);
    PackedOrigin& held = packed_origin<T>(slot);
    if (reads && !(reuse && held.holds(origin))) {
      copy_tiles<T, kTile<T>, true>(const_cast<T*>(src), rows, p.K, tiles.full, packed);
      held.set(origin);
    }
    return packed;
  }
};

// Half/bfloat16 inputs on the CPU are computed in float32 and cast back.
at::ScalarType compute_dtype(const at::Tensor& f) {
  return f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The saved statistics of group_energy_with_stats: fbar, then S, each B * C * K values in tile order (tile t,
// starting at k0 with width w, holds [B, C, w] at k0 * B * C). Only this file reads them.
template <typename T>
TileStats<T> saved_stats(T* stats, const EnergyShape& s, int64_t k0, int64_t width, int64_t b0) {
  if (stats == nullptr) return {};
  T* fbar = stats + k0 * s.B * s.C + b0 * s.C * width;
  return {fbar, fbar + s.B * s.C * s.K};
}

// grad_out's values in the compute dtype, read through its stride: autograd passes the gradient of a sum as a
// stride-0 expansion, which .contiguous().to() would copy with two more ops per call.
template <typename T>
std::vector<T> grad_values(const at::Tensor& grad_out) {
  std::vector<T> values(grad_out.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "group_energy_backward_cpu", [&] {
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const int64_t stride = grad_out.stride(0);
    for (size_t b = 0; b < values.size(); ++b) values[b] = static_cast<T>(g[b * stride]);
  });
  return values;
}

// g, and the statistics when save_stats (else an undefined tensor).
std::tuple<at::Tensor, at::Tensor> energy_forward(const at::Tensor& f_in, const at::Tensor& W_in,
                                                  const at::Tensor& groups_in, bool save_stats) {
  const EnergyShape s = check_group_energy_args("group_energy", f_in, W_in, groups_in);
  const auto groups = groups_in.contiguous();
  check_group_ids_cpu("group_energy", groups, s.C);
  const auto ct = compute_dtype(f_in);
  const auto f = in_dtype(as_bmk(f_in, s), ct);
  const auto W = in_dtype(W_in.contiguous(), ct);
  const bool nothing = s.B == 0 || s.K == 0 || s.M == 0;  // g = 0, fbar = S = 0
  at::Tensor stats;
  if (save_stats) {
    const int64_t n = 2 * s.B * s.C * s.K;
    stats = nothing ? at::zeros({n}, f.options()) : buffer_cache::empty({n}, ct);
  }
  std::vector<double> g(s.B, 0.0);
  if (!nothing) {
    AT_DISPATCH_FLOATING_TYPES(ct, "group_energy_cpu", [&] {
      const GroupSizes<scalar_t> sizes(groups, s.C);
      const auto p = make_problem<scalar_t>(f, W, groups, sizes, s);
      const Tiling tiles(s.K, kTile<scalar_t>);
      scalar_t* stats_p = save_stats ? stats.data_ptr<scalar_t>() : nullptr;
      // Samples are split into chunks too, so that small K still keeps every core busy.
      const int64_t chunk = std::max<int64_t>(kBlockR, (s.B + 15) / 16 / kBlockR * kBlockR);
      const int64_t n_chunks = (s.B + chunk - 1) / chunk;
      std::vector<double> partial(tiles.count * s.B, 0.0);  // per tile, so tasks never share an accumulator
      double* part = partial.data();
      const TileSource<scalar_t> source(p, tiles, origin_of(f_in, f), origin_of(W_in, W));
      at::parallel_for(0, tiles.count * n_chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t t = task / n_chunks, b0 = (task % n_chunks) * chunk, b1 = std::min(s.B, b0 + chunk);
          int64_t k0, width;
          const auto pt = source.problem(t, k0, width);
          forward_tile_any(pt, k0, width, b0, b1, part + t * s.B, saved_stats(stats_p, s, tiles.start(t), width, b0));
        }
      });
      for (int64_t t = 0; t < tiles.count; ++t)
        for (int64_t b = 0; b < s.B; ++b) g[b] += part[t * s.B + b];
    });
  }
  auto out = at::empty({s.B}, W_in.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "group_energy_cpu_out", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < s.B; ++b) o[b] = static_cast<scalar_t>(g[b]);
  });
  return {out, stats};
}

}  // namespace cpu_energy

using namespace cpu_energy;

at::Tensor group_energy_cpu(const at::Tensor& f, const at::Tensor& W, const at::Tensor& groups) {
  return std::get<0>(energy_forward(f, W, groups, false));
}

std::tuple<at::Tensor, at::Tensor> group_energy_with_stats_cpu(const at::Tensor& f, const at::Tensor& W,
                                                               const at::Tensor& groups) {
  return energy_forward(f, W, groups, true);
}

std::tuple<at::Tensor, at::Tensor> group_energy_backward_cpu(const at::Tensor& grad_out, const at::Tensor& f_in,
                                                             const at::Tensor& W_in, const at::Tensor& groups_in,
                                                             const std::optional<at::Tensor>& stats,
                                                             std::array<bool, 2> output_mask) {
  const EnergyShape s = check_group_energy_args("group_energy_backward", f_in, W_in, groups_in);
  check_grad_out("group_energy_backward", grad_out, f_in, s.B);
  const auto groups = groups_in.contiguous();
  check_group_ids_cpu("group_energy_backward", groups, s.C);
  const auto ct = compute_dtype(f_in);
  const bool has_stats = stats.has_value() && stats->defined();
  if (has_stats) check_saved_stats("group_energy_backward", *stats, f_in, s, ct);
  const auto f = in_dtype(as_bmk(f_in, s), ct);
  const auto W = in_dtype(W_in.contiguous(), ct);
  // Not a structured binding: the lambdas below capture these, which Clang accepts only from version 16.
  const bool want_df = output_mask[0], want_dW = output_mask[1];
  // Every element of df and dW is written below (fresh zeroed memory would cost a second pass), except dW
  // when there are no samples. They come from the buffer cache: a training loop asks for the same sizes again.
  at::Tensor df, dW;
  if (want_df) df = buffer_cache::empty({s.B, s.M, s.K}, ct);
  if (want_dW) dW = s.B == 0 ? at::zeros({s.M, s.C, s.K}, W.options()) : buffer_cache::empty({s.M, s.C, s.K}, ct);
  if (s.B > 0 && s.K > 0 && s.M > 0 && (want_df || want_dW)) {
    AT_DISPATCH_FLOATING_TYPES(ct, "group_energy_backward_cpu", [&] {
      const GroupSizes<scalar_t> sizes(groups, s.C);
      const auto p = make_problem<scalar_t>(f, W, groups, sizes, s);
      const Tiling tiles(s.K, kTile<scalar_t>);
      scalar_t* df_p = want_df ? df.data_ptr<scalar_t>() : nullptr;
      scalar_t* dW_p = want_dW ? dW.data_ptr<scalar_t>() : nullptr;
      const std::vector<scalar_t> gg = grad_values<scalar_t>(grad_out);
      const scalar_t* gg_p = gg.data();
      scalar_t* stats_p = has_stats ? stats->data_ptr<scalar_t>() : nullptr;  // read only
      // f feeds dW and the recomputed statistics; W feeds df (and S, recomputed for df only).
      const TileSource<scalar_t> source(p, tiles, origin_of(f_in, f), origin_of(W_in, W), want_dW || !has_stats,
                                        want_df, /*reuse=*/has_stats);
      if (want_df) source.overwrite_f();  // df is written over the packed f
      // Packed tiles write tile-major, then one blocked pass scatters both gradients: written in place, each
      // tile's 32-byte pieces are half cache lines a page apart (measured ~10 ms slower at [64, 512, 256]).
      // df goes over the packed f (its buffer, when f was not copied), dW into a scratch of its own.
      const bool packed = source.f_packed != nullptr;
      scalar_t* dW_packed =
          packed && want_dW ? scratch<scalar_t>(kPackedDW, tiles.full * tiles.KT * s.M * s.C) : nullptr;
      // Each tile writes its own positions of df and dW: no reduction across tasks.
      at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          int64_t k0, width;
          const auto pt = source.problem(t, k0, width);
          const auto saved = saved_stats(stats_p, s, tiles.start(t), width, 0);
          if (packed && t < tiles.full)
            backward_tile_any(pt, gg_p, k0, width, saved,
                              {want_df ? const_cast<scalar_t*>(pt.f) : nullptr,
                               want_dW ? dW_packed + t * s.M * s.C * tiles.KT : nullptr, tiles.KT, 0});
          else
            backward_tile_any(pt, gg_p, k0, width, saved, {df_p, dW_p, s.K, tiles.start(t)});
        }
      });
      constexpr int KT = kTile<scalar_t>;
      if (packed && want_df) copy_tiles<scalar_t, KT, false>(df_p, s.B * s.M, s.K, tiles.full, source.f_packed);
      if (packed && want_dW) copy_tiles<scalar_t, KT, false>(dW_p, s.M * s.C, s.K, tiles.full, dW_packed);
    });
  }
  return {want_df ? in_dtype(df.view(f_in.sizes()), f_in.scalar_type()) : at::Tensor(),
          want_dW ? in_dtype(dW, W_in.scalar_type()) : at::Tensor()};
}

}  // namespace interpgan
