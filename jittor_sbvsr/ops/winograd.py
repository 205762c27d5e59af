"""Winograd 3x3 convolutions of our own for the fused chains (ops/fused_conv.py), on any x86 CPU with AVX2.

Why: oneDNN 2.2 has Winograd kernels only for AVX-512's blocked layouts;
on an AVX2 CPU the chains' direct 3x3 convolutions run at about three
quarters of the FMA peak, so only fewer multiplications go further. Here
F(m x m, 3x3) splits the image into m x m output tiles; per tile and
channel the (m+2) x (m+2) input patch is transformed (B^T d B), the
(m+2)^2 positions are (m+2)^2 independent matrix products over the
channels (tiles x Ci by Ci x Co, oneDNN's sgemm: it takes the best kernel
of the CPU it runs on, AVX-512 included), and the output transform
(A^T M A) gives the tile, with bias, ReLU or the residual add fused in.
The transforms are AVX2/FMA intrinsics over 8 channels at once, in
blocks of tiles small enough that a block's transformed data stay in the
caches (bounded memory: no whole-image transformed buffers), threaded
with OpenMP over blocks. The weights are transformed once, in float64
(:func:`transform_weights`).

Which tile. Multiplications per output pixel against direct's 9: F(2x2)
16/4 = 4 (2.25x fewer), F(4x4) 36/16 = 2.25 (4x), F(6x6) 64/36 = 1.78
(5.1x). The float32 rounding error grows with the tile (larger entries in
the transforms) and depends on the interpolation points. Against a float64
evaluation of a fusion conv (640 -> 128) and three 128-channel ResBlocks,
RMS / max error relative to oneDNN's direct convolution's, on a 2-core AMD
EPYC (Zen 4): F(4x4) with the points 0, +-5/8, +-3/2 1.0x / 0.8x with AVX2,
1.8x / 2.0x with AVX-512 (whose NHWC direct kernel rounds less), where
oneDNN's own F(4x4) has 1.4x / 1.4x; with Lavin & Gray's 0, +-1, +-2 it
was 2.2x the RMS and 2.6x the max of that. F(2x2) 0.4x / 0.2x (AVX2);
tests/test_winograd.py bounds them. In a float32 emulation in numpy of
one 128-channel conv, F(6x6) (points 0, +-1, +-2, +-1/2, inf) had 2.0x
the RMS error of F(4x4) with Lavin & Gray's points and 1.8x its max: beyond what the parity tolerance
leaves across the 41 convs of the trunk, for 1.27x fewer multiplications
whose gain the (m+2)^2 = 64 products' memory traffic would eat. F(4x4) is
used for every 3x3 layer of the chains (trunk, frame features, the fusion
conv as their head): it was the faster on the trunk's convs (128 channels
at 180x320: F(2x2) took 1.2x its time; its transforms, memory-bound, serve
4 outputs instead of 16), within the parity tolerance. F(2x2) stays as the more
accurate kernel (``algorithm='wino2'``), covered by the same tests.

The products: oneDNN's sgemm, one call per position and block (inside
the OpenMP region it runs on the calling thread). A 6x16 AVX2
micro-kernel of our own measured 1.2-1.3x sgemm's CPU time here, so it is
not kept; on AVX-512 sgemm uses its 16-wide kernels.

Only 'same'-padded stride-1 3x3 convolutions whose channel counts are
multiples of 8 (the activation layouts keep 8 channels contiguous: nChw8c,
nChw16c, NHWC); the rest runs oneDNN's direct convolution. Where the
compiler or the CPU has no AVX2/FMA :func:`available` is False and the
chains stay direct.
"""
import numpy as np

def toom_cook(points, m, r=3):
    """(B^T, G, A^T) of F(m, r) from its m + r - 2 finite interpolation points (and infinity), in
    float64: A^T holds the points' powers, G their powers over prod(p_j - p_l), B^T the
    coefficients of prod(x - p_l) over the other points."""
    n, p = m + r - 1, np.asarray(points, np.float64)
    at = np.zeros((m, n))
    at[:, :-1], at[-1, -1] = p[None] ** np.arange(m)[:, None], 1
    g, bt = np.zeros((n, r)), np.zeros((n, n))
    for j in range(n - 1):
        others = np.delete(p, j)
        g[j] = p[j] ** np.arange(r) / np.prod(p[j] - others)
        bt[j, :-1] = np.polynomial.polynomial.polyfromroots(others)
    g[-1, -1], bt[-1] = 1, np.polynomial.polynomial.polyfromroots(p)
    return bt, g, at


# tile m -> (B^T, G, A^T) of F(m x m, 3x3). F(4x4): the points 0, +-5/8, +-3/2 (and infinity; those
# oneDNN's AVX-512 kernels use) round to 0.5x the RMS and 0.3x the max error of Lavin & Gray's
# 0, +-1, +-2 (a float32 emulation of a 128-channel conv); all their powers are exact in float32.
# F(2x2): Lavin & Gray's 0, +-1.
MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: toom_cook((0, 5 / 8, -5 / 8, 3 / 2, -3 / 2), 4),
}
# algorithm name (ops/fused_conv.py:ALGORITHMS) -> tile
TILES = {'wino4': 4, 'wino2': 2}


def transform_weights(w, m):
    """Weights [..., Co, Ci, 3, 3] -> [..., (m+2)^2, Ci, Co] float32: G g G^T per filter, in float64,
    laid out as the B operands of the per-position matrix products."""
    w = np.asarray(w, np.float64)
    g = MATRICES[m][1]
    u = np.moveaxis(g @ w @ g.T, (-4, -3), (-1, -2))  # [..., A, A, Ci, Co]
    return np.ascontiguousarray(u.reshape(w.shape[:-4] + ((m + 2) ** 2, w.shape[-3], w.shape[-4])), np.float32)


# C++: included by the fused chains (after ops/fused_conv.py's COMMON_HEAD)
HEAD = r'''
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SBVSR_WINO 1
#define SBVSR_AVX2 __attribute__((target("avx2,fma")))
#include <immintrin.h>
#elif defined(_MSC_VER) && defined(_M_X64)
#define SBVSR_WINO 1
#define SBVSR_AVX2
#include <immintrin.h>
#include <intrin.h>
#else
#define SBVSR_WINO 0
#endif
// unconditional includes last: Jittor puts its own #defines after the last #include
#include <vector>
#include <cstdint>
#include <cstdlib>

// Whether this build and this CPU run the Winograd kernels (AVX2 and FMA, saved by the OS), and
// DNNL_MAX_CPU_ISA allows AVX2 (so that a cap below it stands for a CPU without: tests/test_isa.py).
static bool sbvsr_wino_cpu() {
    const dnnl::cpu_isa cap = dnnl::get_effective_cpu_isa();
    if (cap == dnnl::cpu_isa::sse41 || cap == dnnl::cpu_isa::avx) return false;
#if SBVSR_WINO && defined(_MSC_VER) && !defined(__clang__)
    int r[4];
    __cpuid(r, 1);
    const bool fma = r[2] & (1 << 12), osx = r[2] & (1 << 27);
    __cpuidex(r, 7, 0);
    return fma && osx && (r[1] & (1 << 5)) && (_xgetbv(0) & 6) == 6;
#elif SBVSR_WINO
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

// An activation [N, C, H, W] whose channels run in contiguous groups of 8:
// group g (channels 8g..8g+7) of pixel (n, y, x) at p + n*sn + go[g] + y*sy + x*sx.
struct SbvsrAct {
    float* p;
    long long sn, sy, sx;
    std::vector<long long> go;
};

static SbvsrAct sbvsr_act(const dnnl::memory& m) {
    const dnnl_memory_desc_t& d = m.get_desc().data;
    const auto& b = d.format_desc.blocking;
    const long long ib = b.inner_nblks ? b.inner_blks[0] : 1, C = d.dims[1];
    if (d.format_kind != dnnl_blocked || d.ndims != 4 || b.inner_nblks > 1 || (ib > 1 && (b.inner_idxs[0] != 1 || ib % 8))
        || (ib == 1 && b.strides[1] != 1) || C % 8)
        throw std::runtime_error("sbvsr winograd: a layout without 8 contiguous channels");
    SbvsrAct a{(float*)m.get_data_handle() + d.offset0, b.strides[0], b.strides[2], b.strides[3], {}};
    for (long long c = 0; c < C; c += 8) a.go.push_back((c / ib) * b.strides[1] + c % ib);
    return a;
}

#if SBVSR_WINO
// 1-D transforms of F(M, 3) on 8 channels: input (M+2 -> M+2) and output (M+2 -> M)
template <int M> struct SbvsrWt;
template <> struct SbvsrWt<4> {  // points 0, +-a, +-b, inf with a = 5/8, b = 3/2 (MATRICES[4])
    SBVSR_AVX2 static inline void in(const __m256* d, __m256* o) {
        const __m256 a = _mm256_set1_ps(.625f), b = _mm256_set1_ps(1.5f), a2 = _mm256_set1_ps(.390625f),
                     b2 = _mm256_set1_ps(2.25f), p = _mm256_set1_ps(.87890625f), s = _mm256_set1_ps(2.640625f);
        o[0] = _mm256_fmadd_ps(p, d[0], _mm256_fnmadd_ps(s, d[2], d[4]));
        o[1] = _mm256_fnmadd_ps(b2, _mm256_fmadd_ps(a, d[1], d[2]), _mm256_fmadd_ps(a, d[3], d[4]));
        o[2] = _mm256_fmadd_ps(b2, _mm256_fmsub_ps(a, d[1], d[2]), _mm256_fnmadd_ps(a, d[3], d[4]));
        o[3] = _mm256_fnmadd_ps(a2, _mm256_fmadd_ps(b, d[1], d[2]), _mm256_fmadd_ps(b, d[3], d[4]));
        o[4] = _mm256_fmadd_ps(a2, _mm256_fmsub_ps(b, d[1], d[2]), _mm256_fnmadd_ps(b, d[3], d[4]));
        o[5] = _mm256_fmadd_ps(p, d[1], _mm256_fnmadd_ps(s, d[3], d[5]));
    }
    SBVSR_AVX2 static inline void out(const __m256* m, __m256* y) {
        const __m256 u = _mm256_add_ps(m[1], m[2]), v = _mm256_sub_ps(m[1], m[2]);
        const __m256 w = _mm256_add_ps(m[3], m[4]), z = _mm256_sub_ps(m[3], m[4]);
        y[0] = _mm256_add_ps(_mm256_add_ps(m[0], u), w);
        y[1] = _mm256_fmadd_ps(_mm256_set1_ps(.625f), v, _mm256_mul_ps(_mm256_set1_ps(1.5f), z));
        y[2] = _mm256_fmadd_ps(_mm256_set1_ps(.390625f), u, _mm256_mul_ps(_mm256_set1_ps(2.25f), w));
        y[3] = _mm256_fmadd_ps(_mm256_set1_ps(.244140625f), v, _mm256_fmadd_ps(_mm256_set1_ps(3.375f), z, m[5]));
    }
};
template <> struct SbvsrWt<2> {
    SBVSR_AVX2 static inline void in(const __m256* d, __m256* o) {
        o[0] = _mm256_sub_ps(d[0], d[2]);
        o[1] = _mm256_add_ps(d[1], d[2]);
        o[2] = _mm256_sub_ps(d[2], d[1]);
        o[3] = _mm256_sub_ps(d[1], d[3]);
    }
    SBVSR_AVX2 static inline void out(const __m256* m, __m256* y) {
        y[0] = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
        y[1] = _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]);
    }
};

struct SbvsrWinoJob {
    const SbvsrAct *x, *y;
    int Ci, Co, H, W, mode;
    long long TY, TX, TB;
    const float *U, *bias;
};

// One block of tiles [t0, t0 + nt) of job j: input transform into V [P][TB][Ci], the P products
// into Mb [P][TB][Co] (oneDNN's sgemm: inside a parallel region it runs on the calling thread),
// output transform with bias and mode. False if sgemm failed.
template <int M>
SBVSR_AVX2 static bool sbvsr_wino_block(const SbvsrWinoJob& j, long long t0, long long nt, float* V, float* Mb) {
    constexpr int A = M + 2, P = A * A;
    const SbvsrAct &x = *j.x, &y = *j.y;
    const int Ci = j.Ci, Co = j.Co, H = j.H, W = j.W;
    const long long TB = j.TB, TY = j.TY, TX = j.TX;
    for (long long t = 0; t < nt; t++) {  // input transform: V[p][t][ci]
        const long long tile = t0 + t, n = tile / (TY * TX), ty = tile / TX % TY, tx = tile % TX;
        const long long y0 = ty * M - 1, x0 = tx * M - 1;
        bool ry[A], cx[A];
        for (int i = 0; i < A; i++) ry[i] = y0 + i >= 0 && y0 + i < H, cx[i] = x0 + i >= 0 && x0 + i < W;
        for (int g = 0; g < Ci / 8; g++) {
            const float* base = x.p + n * x.sn + x.go[g] + y0 * x.sy + x0 * x.sx;
            __m256 d[A][A], c[A], e[A];
            for (int i = 0; i < A; i++)
                for (int k = 0; k < A; k++)
                    d[i][k] = ry[i] && cx[k] ? _mm256_loadu_ps(base + i * x.sy + k * x.sx) : _mm256_setzero_ps();
            for (int k = 0; k < A; k++) {  // columns, then rows
                for (int i = 0; i < A; i++) c[i] = d[i][k];
                SbvsrWt<M>::in(c, e);
                for (int i = 0; i < A; i++) d[i][k] = e[i];
            }
            float* v = V + t * Ci + g * 8;
            for (int i = 0; i < A; i++) {
                SbvsrWt<M>::in(d[i], e);
                for (int k = 0; k < A; k++) _mm256_store_ps(v + (i * A + k) * TB * Ci, e[k]);
            }
        }
    }
    for (int p = 0; p < P; p++)
        if (dnnl_sgemm('N', 'N', nt, Co, Ci, 1.f, V + p * TB * Ci, Ci, j.U + (long long)p * Ci * Co, Co, 0.f,
                            Mb + p * TB * Co, Co) != dnnl_success)
            return false;
    const __m256 zero = _mm256_setzero_ps(), slope = _mm256_set1_ps(.1f);
    for (long long t = 0; t < nt; t++) {  // output transform, bias, mode
        const long long tile = t0 + t, n = tile / (TY * TX), ty = tile / TX % TY, tx = tile % TX;
        const int my = (int)std::min<long long>(M, H - ty * M), mx = (int)std::min<long long>(M, W - tx * M);
        for (int g = 0; g < Co / 8; g++) {
            const float* m = Mb + t * Co + g * 8;
            __m256 d[A][A], c[A], e[A], o[A][M];
            for (int i = 0; i < A; i++)
                for (int k = 0; k < A; k++) d[i][k] = _mm256_load_ps(m + (i * A + k) * TB * Co);
            for (int i = 0; i < A; i++) SbvsrWt<M>::out(d[i], o[i]);  // rows, then columns
            const __m256 b = _mm256_loadu_ps(j.bias + g * 8);
            float* out = y.p + n * y.sn + y.go[g] + ty * M * y.sy + tx * M * y.sx;
            for (int k = 0; k < mx; k++) {
                for (int i = 0; i < A; i++) c[i] = o[i][k];
                SbvsrWt<M>::out(c, e);
                for (int i = 0; i < my; i++) {
                    float* q = out + i * y.sy + k * y.sx;
                    __m256 v = _mm256_add_ps(e[i], b);
                    v = j.mode == 1 ? _mm256_max_ps(v, zero) : j.mode == 2 ? _mm256_add_ps(v, _mm256_loadu_ps(q))
                      : j.mode == 3 ? _mm256_max_ps(v, _mm256_mul_ps(v, slope)) : v;
                    _mm256_storeu_ps(q, v);
                }
            }
        }
    }
    return true;
}

// y = conv3x3(x) + bias ('same' padding), then mode 0: as is; 1: ReLU; 2: + what y holds (the residual);
// 3: leaky ReLU, slope 0.1 (PWC-Net).
// x [N, Ci, H, W] and y [N, Co, H, W] are distinct buffers; U [(M+2)^2, Ci, Co] (transform_weights).
template <int M>
static void sbvsr_wino_conv(const SbvsrAct& x, int Ci, const SbvsrAct& y, int Co, int N, int H, int W,
                            const float* U, const float* bias, int mode) {
    constexpr int P = (M + 2) * (M + 2);
    SbvsrWinoJob j{&x, &y, Ci, Co, H, W, mode, (H + M - 1) / M, (W + M - 1) / M, 0, U, bias};
    const long long NT = N * j.TY * j.TX;
    // tiles per block: a block's transformed input and products (P x TB x (Ci + Co) floats) in ~3 MB a
    // thread (L2 and a share of L3; 0.5 to 6 MB measured within 15% of each other at 128 channels),
    // at least 8 rows for sgemm, at most 96
    j.TB = std::max(8LL, std::min((long long)(3e6 / (4.0 * P * (Ci + Co))), 96LL));
    const long long NB = (NT + j.TB - 1) / j.TB;
    bool ok = true;
#ifdef _OPENMP
    #pragma omp parallel
#endif
    {
        float* buf = (float*)std::malloc(sizeof(float) * (size_t)(P * j.TB * (Ci + Co)) + 64);
        float* V = (float*)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
        bool mine = buf != nullptr;
#ifdef _OPENMP
        #pragma omp for schedule(dynamic, 1)
#endif
        for (long long blk = 0; blk < NB; blk++)
            if (mine) mine = sbvsr_wino_block<M>(j, blk * j.TB, std::min(j.TB, NT - blk * j.TB), V, V + P * j.TB * Ci);
        std::free(buf);
        if (!mine) {
#ifdef _OPENMP
            #pragma omp critical
#endif
            ok = false;
        }
    }
    if (!ok) throw std::runtime_error("sbvsr winograd: out of memory or oneDNN's sgemm failed");
}
#endif

// conv by F(M x M, 3x3), M = 4 or 2, on layouts as sbvsr_act takes them
static void sbvsr_wino(int M, const dnnl::memory& x, const dnnl::memory& y, const float* U, const float* bias, int mode) {
#if SBVSR_WINO
    const auto xd = x.get_desc().dims(), yd = y.get_desc().dims();
    const SbvsrAct xa = sbvsr_act(x), ya = sbvsr_act(y);
    if (M == 4)
        sbvsr_wino_conv<4>(xa, (int)xd[1], ya, (int)yd[1], (int)xd[0], (int)xd[2], (int)xd[3], U, bias, mode);
    else
        sbvsr_wino_conv<2>(xa, (int)xd[1], ya, (int)yd[1], (int)xd[0], (int)xd[2], (int)xd[3], U, bias, mode);
#else
    throw std::runtime_error("sbvsr winograd: built without AVX2 intrinsics");
#endif
}
'''
