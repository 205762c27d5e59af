"""PWC-Net cost volume (81 displacements of +-4 px) as a Jittor op.

Why a custom op: from Jittor primitives (pad, 81 shifted products, channel
means) the cost volume materialises 81 copies of the features and sums in
whatever order the framework picks. Upstream ran a CUDA kernel that sums
over channels in float32 and divides by C afterwards, backward too, and the
flow net amplifies small differences; so the CPU (OpenMP) and CUDA sources
here share one arithmetic: each output sums channels c = 0..C-1, each
gradient sums displacements d = 0..80, then divides by C. That keeps both
devices within float rounding of the reference and of each other.
Channel (dy+4)*9 + (dx+4) holds displacement (dx, dy): the transposed order
loads and runs silently but moves flows by up to 2 px (docs/porting.md, trap 5).

The CUDA kernels are plain ``__global__`` functions in ``CU_HEAD`` so that
the tests can compile them, and run them emulated, without a GPU.
"""
import jittor as jt  # jittor_sbvsr/__init__ has configured it

# ---------------------------------------------------------------- CPU ----
# One OpenMP task per (n, y) row; a row of accumulators per displacement, so
# the inner loop runs over contiguous x and the channel order stays 0..C-1.

CPU_HEAD = '#include <vector>\n#include <algorithm>\n'

CPU_FWD = '''
const float* f = in0_p; const float* s = in1_p; float* o = out0_p;
const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const long long HW = (long long)H * W;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
for (int t = 0; t < N * H; t++) {
    const int n = t / H, y = t % H;
    std::vector<float> acc(81 * (size_t)W, 0.f);
    for (int c = 0; c < C; c++) {
        const float* fr = f + (n * (long long)C + c) * HW + (long long)y * W;
        for (int i = 0; i < 9; i++) {
            const int yy = y + i - 4;
            if (yy < 0 || yy >= H) continue;
            const float* sr = s + (n * (long long)C + c) * HW + (long long)yy * W;
            for (int j = 0; j < 9; j++) {
                const int dx = j - 4, xa = std::max(0, -dx), xb = std::min(W, W - dx);
                float* a = &acc[(i * 9 + j) * (size_t)W];
                for (int x = xa; x < xb; x++) a[x] += fr[x] * sr[x + dx];
            }
        }
    }
    for (int d = 0; d < 81; d++)
        for (int x = 0; x < W; x++)
            o[(n * 81LL + d) * HW + (long long)y * W + x] = acc[d * (size_t)W + x] / (float)C;
}
'''

CPU_BWD = '''
const float* f = in0_p; const float* s = in1_p; const float* g = in2_p;
float* gf = out0_p; float* gs = out1_p;
const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const long long HW = (long long)H * W;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
for (int t = 0; t < N * H; t++) {
    const int n = t / H, y = t % H;
    std::vector<float> a1(W), a2(W);
    const float* gn = g + n * 81LL * HW;
    for (int c = 0; c < C; c++) {
        const long long nc = (n * (long long)C + c) * HW;
        std::fill(a1.begin(), a1.end(), 0.f);
        std::fill(a2.begin(), a2.end(), 0.f);
        for (int i = 0; i < 9; i++) {
            const int dy = i - 4;
            const bool in1 = y + dy >= 0 && y + dy < H, in2 = y - dy >= 0 && y - dy < H;
            for (int j = 0; j < 9; j++) {
                const int dx = j - 4, xa = std::max(0, -dx), xb = std::min(W, W - dx);
                if (in1) {  // grad_first[y,x] += g[d,y,x] * s[y+dy,x+dx]
                    const float* gr = gn + (i * 9 + j) * HW + (long long)y * W;
                    const float* sr = s + nc + (long long)(y + dy) * W + dx;
                    for (int x = xa; x < xb; x++) a1[x] += gr[x] * sr[x];
                }
                if (in2) {  // grad_second[y,x] += g[d,y-dy,x-dx] * f[y-dy,x-dx]
                    const float* gr = gn + (i * 9 + j) * HW + (long long)(y - dy) * W - dx;
                    const float* fr = f + nc + (long long)(y - dy) * W - dx;
                    for (int x = dx + xa; x < dx + xb; x++) a2[x] += gr[x] * fr[x];
                }
            }
        }
        for (int x = 0; x < W; x++) {
            gf[nc + (long long)y * W + x] = a1[x] / (float)C;
            gs[nc + (long long)y * W + x] = a2[x] / (float)C;
        }
    }
}
'''

# --------------------------------------------------------------- CUDA ----
# A block owns a TX x TY pixel tile of one sample. Per chunk of channels it
# stages the shifted input (second; first for grad_second) over the tile
# plus a 4 px halo in shared memory, where 81 neighbours reuse each value.
# Forward: each thread keeps all 81 displacements of its pixel in registers.
# Backward: each thread keeps a chunk of channels and walks the 81
# displacements in order. Values a thread uses once (its own first pixel,
# grad_output) are read straight from global memory, coalesced.

CU_HEAD = r'''
#define CORR_TX 32
#define CORR_TY 8
#define CORR_CF 8
#define CORR_CB 16
#define CORR_HX (CORR_TX + 8)
#define CORR_HY (CORR_TY + 8)

__device__ __forceinline__ void corr_halo(float* sh, const float* src, int c0, int cn,
                                          int C, int H, int W, int x0, int y0) {
    // sh[cn][HY][HX] <- src[c0 + c][y0 - 4 + r][x0 - 4 + q], zero outside the image
    // and past channel C
    const int tid = threadIdx.y * CORR_TX + threadIdx.x;
    for (int k = tid; k < cn * CORR_HY * CORR_HX; k += CORR_TX * CORR_TY) {
        const int c = k / (CORR_HY * CORR_HX), r = k % (CORR_HY * CORR_HX);
        const int yy = y0 - 4 + r / CORR_HX, xx = x0 - 4 + r % CORR_HX;
        sh[k] = (c0 + c < C && yy >= 0 && yy < H && xx >= 0 && xx < W)
              ? src[(long long)(c0 + c) * H * W + (long long)yy * W + xx] : 0.f;
    }
}

__global__ void corr_fwd(const float* __restrict__ f, const float* __restrict__ s,
                         float* __restrict__ o, int C, int H, int W) {
    __shared__ float ss[CORR_CF][CORR_HY][CORR_HX];
    const int tx = threadIdx.x, ty = threadIdx.y, n = blockIdx.z;
    const int x0 = blockIdx.x * CORR_TX, y0 = blockIdx.y * CORR_TY, x = x0 + tx, y = y0 + ty;
    const long long HW = (long long)H * W;
    f += n * C * HW; s += n * C * HW; o += n * 81LL * HW;
    float acc[81];
    #pragma unroll
    for (int d = 0; d < 81; d++) acc[d] = 0.f;
    for (int c0 = 0; c0 < C; c0 += CORR_CF) {
        float a[CORR_CF];  // this pixel's own channels: no sharing, registers
        #pragma unroll
        for (int c = 0; c < CORR_CF; c++)
            a[c] = (c0 + c < C && y < H && x < W) ? f[(c0 + c) * HW + (long long)y * W + x] : 0.f;
        corr_halo(&ss[0][0][0], s, c0, CORR_CF, C, H, W, x0, y0);
        __syncthreads();
        #pragma unroll
        for (int c = 0; c < CORR_CF; c++) {
            if (c0 + c >= C) break;
            #pragma unroll
            for (int i = 0; i < 9; i++)
                #pragma unroll
                for (int j = 0; j < 9; j++) acc[i * 9 + j] += a[c] * ss[c][ty + i][tx + j];
        }
        __syncthreads();
    }
    if (y < H && x < W) {
        #pragma unroll
        for (int d = 0; d < 81; d++) o[d * HW + (long long)y * W + x] = acc[d] / (float)C;
    }
}

__global__ void corr_bwd_first(const float* __restrict__ g, const float* __restrict__ s,
                               float* __restrict__ gf, int C, int H, int W) {
    // gf[c,y,x] = sum_d g[d,y,x] * s[c,y+dy,x+dx] / C
    __shared__ float ss[CORR_CB][CORR_HY][CORR_HX];
    const int tx = threadIdx.x, ty = threadIdx.y, n = blockIdx.z;
    const int x0 = blockIdx.x * CORR_TX, y0 = blockIdx.y * CORR_TY, x = x0 + tx, y = y0 + ty;
    const long long HW = (long long)H * W;
    const bool in = y < H && x < W;
    g += n * 81LL * HW + (long long)y * W + x; s += n * C * HW; gf += n * C * HW;
    for (int c0 = 0; c0 < C; c0 += CORR_CB) {
        corr_halo(&ss[0][0][0], s, c0, CORR_CB, C, H, W, x0, y0);
        __syncthreads();
        if (in) {
            float acc[CORR_CB];
            #pragma unroll
            for (int c = 0; c < CORR_CB; c++) acc[c] = 0.f;
            for (int i = 0; i < 9; i++)
                #pragma unroll
                for (int j = 0; j < 9; j++) {
                    const float gv = g[(i * 9 + j) * HW];
                    #pragma unroll
                    for (int c = 0; c < CORR_CB; c++) acc[c] += gv * ss[c][ty + i][tx + j];
                }
            #pragma unroll
            for (int c = 0; c < CORR_CB; c++)
                if (c0 + c < C) gf[(c0 + c) * HW + (long long)y * W + x] = acc[c] / (float)C;
        }
        __syncthreads();
    }
}

__global__ void corr_bwd_second(const float* __restrict__ g, const float* __restrict__ f,
                                float* __restrict__ gs, int C, int H, int W) {
    // gs[c,y,x] = sum_d g[d,y-dy,x-dx] * f[c,y-dy,x-dx] / C
    __shared__ float sf[CORR_CB][CORR_HY][CORR_HX];
    const int tx = threadIdx.x, ty = threadIdx.y, n = blockIdx.z;
    const int x0 = blockIdx.x * CORR_TX, y0 = blockIdx.y * CORR_TY, x = x0 + tx, y = y0 + ty;
    const long long HW = (long long)H * W;
    const bool in = y < H && x < W;
    g += n * 81LL * HW; f += n * C * HW; gs += n * C * HW;
    for (int c0 = 0; c0 < C; c0 += CORR_CB) {
        corr_halo(&sf[0][0][0], f, c0, CORR_CB, C, H, W, x0, y0);
        __syncthreads();
        if (in) {
            float acc[CORR_CB];
            #pragma unroll
            for (int c = 0; c < CORR_CB; c++) acc[c] = 0.f;
            for (int i = 0; i < 9; i++) {
                const int yy = y + 4 - i;
                #pragma unroll
                for (int j = 0; j < 9; j++) {
                    const int xx = x + 4 - j;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                    const float gv = g[(i * 9 + j) * HW + (long long)yy * W + xx];
                    #pragma unroll
                    for (int c = 0; c < CORR_CB; c++) acc[c] += gv * sf[c][ty + 8 - i][tx + 8 - j];
                }
            }
            #pragma unroll
            for (int c = 0; c < CORR_CB; c++)
                if (c0 + c < C) gs[(c0 + c) * HW + (long long)y * W + x] = acc[c] / (float)C;
        }
        __syncthreads();
    }
}
'''

# Launchers: what jt.code runs on the host, in its names (in0_p, in0_shape0...).
CU_BIND = '''
const float* f = in0_p; const float* s = in1_p;
const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const dim3 blk(CORR_TX, CORR_TY), grd((W + CORR_TX - 1) / CORR_TX, (H + CORR_TY - 1) / CORR_TY, N);
'''

CU_FWD = CU_BIND + '''
corr_fwd<<<grd, blk>>>(f, s, out0_p, C, H, W);
'''

CU_BWD = CU_BIND + '''
corr_bwd_first<<<grd, blk>>>(in2_p, s, out0_p, C, H, W);
corr_bwd_second<<<grd, blk>>>(in2_p, f, out1_p, C, H, W);
'''


class Correlation(jt.Function):
    """Cost volume; ``Correlation()(first, second)`` with float32 [N,C,H,W]."""

    def execute(self, first, second):
        self.saved = first, second
        n, c, h, w = first.shape
        return jt.code((n, 81, h, w), 'float32', [first, second],
                       cpu_header=CPU_HEAD, cpu_src=CPU_FWD,
                       cuda_header=CU_HEAD, cuda_src=CU_FWD)

    def grad(self, g):
        first, second = self.saved
        g = _f32(g)
        return jt.code([first.shape, second.shape], ['float32', 'float32'], [first, second, g],
                       cpu_header=CPU_HEAD, cpu_src=CPU_BWD,
                       cuda_header=CU_HEAD, cuda_src=CU_BWD)


def _f32(v):
    return v if v.dtype == 'float32' else v.float32()


def correlation(first, second):
    """PWC-Net correlation of two [N,C,H,W] feature maps -> [N,81,H,W].

    out[n, (dy+4)*9 + (dx+4), y, x] = sum_c first[n,c,y,x] * second[n,c,y+dy,x+dx] / C,
    dx, dy in [-4, 4], ``second`` zero outside the image. Differentiable in both.
    """
    if first.ndim != 4 or tuple(first.shape) != tuple(second.shape):
        raise ValueError(f'correlation needs two [N,C,H,W] inputs of one shape, '
                         f'got {tuple(first.shape)} and {tuple(second.shape)}')
    return Correlation()(_f32(first), _f32(second))
