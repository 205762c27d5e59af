"""The feature warp of inference (models/flow_pwc.py ``Flow_PWC.warp``) as one CPU pass.

Why: the plain warp is two ``grid_sample`` calls made of Jittor's reindex
ops (the features with border padding, then a ones image with zero padding
for the occupancy mask), each gathering four taps per channel and pixel
through index arrays of the full [B, C, H, W] shape. Here each pixel's
sample position, its four weights and its mask (the weights of the taps
inside the image, summed, >= 0.999) are computed once, then every channel
is gathered with them, in one pass with OpenMP over image rows.
Same float32 arithmetic as the plain warp, in the same order, so the two
agree to rounding (models/deploy.py checks it on each machine; off with
``--no_fused``). Inference only: no gradient.
"""
import jittor as jt  # jittor_sbvsr/__init__ has configured it

HEAD = '#include <cmath>\n#include <vector>\n#include <algorithm>\n'

# in0: x [B, C, H, W]; in1: flow [B, 2, H, W] (pixels); out0: x warped and masked
SRC = '''
const float* x = in0_p; const float* fl = in1_p; float* o = out0_p;
const int B = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const long long HW = (long long)H * W;
// per pixel: the top-left tap (border-clamped position), the steps to the right and lower taps
// (0 past the last column or row, where their weight is 0), and the four weights, masked
std::vector<long long> at(B * HW);
std::vector<int> step(2 * B * HW);
std::vector<float> wt(4 * B * HW);
const float sx = (float)std::max(W - 1, 1), sy = (float)std::max(H - 1, 1);
const float hx = (float)((W - 1) / 2.0), hy = (float)((H - 1) / 2.0);
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
for (long long p = 0; p < B * HW; p++) {
    const long long b = p / HW, q = p % HW;
    const int yy = (int)(q / W), xx = (int)(q % W);
    const float vx = 2.0f * ((float)xx + fl[(b * 2) * HW + q]) / sx - 1.0f;
    const float vy = 2.0f * ((float)yy + fl[(b * 2 + 1) * HW + q]) / sy - 1.0f;
    // the mask: a ones image sampled with zero padding at the unclamped position
    const float ux = (vx + 1.0f) * hx, uy = (vy + 1.0f) * hy;
    const float ux0 = std::floor(ux), uy0 = std::floor(uy);
    const float mx1 = ux - ux0, my1 = uy - uy0, mx0 = 1.0f - mx1, my0 = 1.0f - my1;
    const bool inx0 = ux0 >= 0.0f && ux0 <= (float)(W - 1), inx1 = ux0 + 1.0f >= 0.0f && ux0 + 1.0f <= (float)(W - 1);
    const bool iny0 = uy0 >= 0.0f && uy0 <= (float)(H - 1), iny1 = uy0 + 1.0f >= 0.0f && uy0 + 1.0f <= (float)(H - 1);
    const float mask = (iny0 && inx0 ? my0 * mx0 : 0.0f) + (iny0 && inx1 ? my0 * mx1 : 0.0f)
                     + (iny1 && inx0 ? my1 * mx0 : 0.0f) + (iny1 && inx1 ? my1 * mx1 : 0.0f);
    const float m = mask >= 0.999f ? 1.0f : 0.0f;
    // the features: border padding clamps the position into the image
    const float ix = std::min(std::max(ux, 0.0f), (float)(W - 1)), iy = std::min(std::max(uy, 0.0f), (float)(H - 1));
    const float x0 = std::floor(ix), y0 = std::floor(iy);
    const float wx1 = ix - x0, wy1 = iy - y0, wx0 = 1.0f - wx1, wy0 = 1.0f - wy1;
    // clamped again as integers: a NaN flow (whose comparisons -Ofast may drop) still reads in bounds
    long long xi = (long long)x0, yi = (long long)y0;
    xi = xi < 0 ? 0 : xi > W - 1 ? W - 1 : xi;
    yi = yi < 0 ? 0 : yi > H - 1 ? H - 1 : yi;
    const bool right = xi + 1 < W, down = yi + 1 < H;
    at[p] = yi * W + xi;
    step[2 * p] = right ? 1 : 0;
    step[2 * p + 1] = down ? W : 0;
    wt[4 * p] = m * (wy0 * wx0);
    wt[4 * p + 1] = right ? m * (wy0 * wx1) : 0.0f;
    wt[4 * p + 2] = down ? m * (wy1 * wx0) : 0.0f;
    wt[4 * p + 3] = right && down ? m * (wy1 * wx1) : 0.0f;
}
// one image row per task, every channel through it: the row's taps and weights stay in L1
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
for (long long r = 0; r < (long long)B * H; r++) {
    const long long b = r / H, q0 = (r % H) * W;
    const long long* a = at.data() + b * HW + q0;
    const int* d = step.data() + 2 * (b * HW + q0);
    const float* w = wt.data() + 4 * (b * HW + q0);
    for (int c = 0; c < C; c++) {
        const float* src = x + (b * C + c) * HW;
        float* dst = o + (b * C + c) * HW + q0;
        for (int q = 0; q < W; q++) {
            const float* t = src + a[q];
            const int dx = d[2 * q], dy = d[2 * q + 1];
            const float* u = w + 4 * q;
            dst[q] = u[0] * t[0] + u[1] * t[dx] + u[2] * t[dy] + u[3] * t[dy + dx];
        }
    }
}
'''


def warp_features(x, flow):
    """``Flow_PWC.warp(x, flow)[0]`` on the CPU in one pass: x [B,C,H,W] sampled at each pixel + flow
    [B,2,H,W] (bilinear, border padding), zero where the sample is not wholly inside the image."""
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != x.shape[0] \
            or tuple(flow.shape[2:]) != tuple(x.shape[2:]):
        raise ValueError(f'warp_features: features {tuple(x.shape)} and flow {tuple(flow.shape)} do not fit')
    with jt.no_grad():
        return jt.code(x.shape, 'float32', [x.float32(), flow.float32()], cpu_header=HEAD, cpu_src=SRC)
