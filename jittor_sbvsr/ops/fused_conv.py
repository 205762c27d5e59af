"""Inference-only fused oneDNN convolutions on the CPU: ResBlock chains, upsampling tail.

Why: on the CPU nearly all of PWC_Recons' time is Jittor's ``mkl_conv``,
which per convolution re-creates its oneDNN primitive, reorders the input
from NCHW to oneDNN's blocked layout and the output back, and leaves bias,
ReLU and the residual add to separate passes over memory. A chain of
ResBlocks (conv-ReLU-conv + x) here runs in the blocked layout from one
reorder in to one reorder out: the first conv of a block carries bias and
ReLU as post-ops, the second bias and a ``sum`` post-op that accumulates
onto the block input in place. Primitives are cached per shape.
:func:`upsample_tail` does the same for PWC_Recons' upsampling and output
convs, with PixelShuffle done in the blocked layout.

No gradients: training keeps Jittor's own ops. Use :func:`available` to ask
whether this path can run (CPU, Jittor's oneDNN loaded).
"""
import os

import jittor as jt  # jittor_sbvsr/__init__ has configured it

from .. import runtime

CHAIN_HEAD = r'''
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

// Primitives for one (N, C, H, W, K) ResBlock: conv1 with bias + ReLU,
// conv2 with bias + sum onto its destination; both read and write one
// blocked activation layout ``act``. The blocked buffers are kept too:
// freshly mapped pages cost as much as a reorder. At most 4 shapes stay.
struct SbvsrResChain {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    dnnl::memory::desc user, act, wuser, wmd, bmd;
    dnnl::convolution_forward c1, c2;
    dnnl::reorder rin, rout, rw;
    dnnl::memory X, T;                // block input / residual, conv1 output
    std::vector<dnnl::memory> w;      // blocked weights, one per conv
};

static SbvsrResChain& sbvsr_res_chain(int N, int C, int H, int W, int K) {
    using namespace dnnl;
    using tag = memory::format_tag;
    static std::map<std::tuple<int, int, int, int, int>, std::unique_ptr<SbvsrResChain>> cache;
    const auto key = std::make_tuple(N, C, H, W, K);
    auto it = cache.find(key);
    if (it != cache.end()) return *it->second;
    if (cache.size() >= 4) cache.clear();
    auto& slot = cache[key];
    slot.reset(new SbvsrResChain());
    SbvsrResChain& r = *slot;
    const auto f32 = memory::data_type::f32;
    const memory::dims pad = {K / 2, K / 2}, one = {1, 1};
    r.user = memory::desc({N, C, H, W}, f32, tag::nchw);
    r.wuser = memory::desc({C, C, K, K}, f32, tag::oihw);
    r.bmd = memory::desc({C}, f32, tag::x);
    post_ops p1, p2;
    p1.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    p2.append_sum(1.f);
    primitive_attr a1, a2;
    a1.set_post_ops(p1);
    a2.set_post_ops(p2);
    auto pd = [&](const memory::desc& io, const primitive_attr& a) {
        convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, io,
                                    memory::desc({C, C, K, K}, f32, tag::any), r.bmd, io, one, pad, pad);
        return convolution_forward::primitive_desc(d, a, r.eng);
    };
    // let oneDNN pick the layout once, then pin both convs to it
    r.act = pd(memory::desc({N, C, H, W}, f32, tag::any), a1).dst_desc();
    auto pd1 = pd(r.act, a1), pd2 = pd(r.act, a2);
    r.wmd = pd1.weights_desc();
    r.c1 = convolution_forward(pd1);
    r.c2 = convolution_forward(pd2);
    r.rin = reorder(memory(r.user, r.eng, DNNL_MEMORY_NONE), memory(r.act, r.eng, DNNL_MEMORY_NONE));
    r.rout = reorder(memory(r.act, r.eng, DNNL_MEMORY_NONE), memory(r.user, r.eng, DNNL_MEMORY_NONE));
    r.rw = reorder(memory(r.wuser, r.eng, DNNL_MEMORY_NONE), memory(r.wmd, r.eng, DNNL_MEMORY_NONE));
    r.X = memory(r.act, r.eng);
    r.T = memory(r.act, r.eng);
    return r;
}
'''

# in0 x [N,C,H,W], in1 weights [2B,C,C,K,K] (conv1, conv2 of each block),
# in2 biases [2B,C]; out0 = the chain's output [N,C,H,W].
CHAIN_SRC = r'''
using namespace dnnl;
const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
const int B2 = in1_shape0, K = in1_shape3;
SbvsrResChain& r = sbvsr_res_chain(N, C, H, W, K);
memory &X = r.X, &T = r.T;
while ((int)r.w.size() < B2) r.w.emplace_back(r.wmd, r.eng);
r.rin.execute(r.strm, {{DNNL_ARG_FROM, memory(r.user, r.eng, (void*)in0_p)}, {DNNL_ARG_TO, X}});
for (int i = 0; i < B2; i++) {
    memory &w = r.w[i], b(r.bmd, r.eng, (void*)(in2_p + (long long)i * C));
    r.rw.execute(r.strm, {{DNNL_ARG_FROM, memory(r.wuser, r.eng, (void*)(in1_p + (long long)i * C * C * K * K))},
                          {DNNL_ARG_TO, w}});
    if (i % 2 == 0)  // T = relu(conv1(X) + b1)
        r.c1.execute(r.strm, {{DNNL_ARG_SRC, X}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, T}});
    else             // X = X + conv2(T) + b2
        r.c2.execute(r.strm, {{DNNL_ARG_SRC, T}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, X}});
}
r.rout.execute(r.strm, {{DNNL_ARG_FROM, X}, {DNNL_ARG_TO, memory(r.user, r.eng, (void*)out0_p)}});
r.strm.wait();
'''

# ---------------------------------------------------------------- tail ----
# Upsampling (conv C->4C, PixelShuffle(2); per x2 stage) and the two output
# convs, in the blocked layout (channel blocks of bs = 8 or 16). With the
# upsampling weights' output channels permuted to (offset k = 2i + j, c),
# PixelShuffle moves whole channel blocks: block k*C/bs + cb at (y, x) goes
# to block cb at (2y + i, 2x + j). The tensors are large here, so they are
# allocated per call; oneDNN's own primitive cache keeps the primitives.

TAIL_HEAD = r"""
#include <dnnl.hpp>
#include <cstring>
#include <stdexcept>

static dnnl::memory::desc sbvsr_md(int n, int c, int h, int w, dnnl::memory::format_tag t) {
    return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32, t);
}

// conv (stride 1, 'same' padding) + bias from user oihw weights, executed
static void sbvsr_conv(dnnl::stream& s, const dnnl::engine& eng, const dnnl::memory& src, const dnnl::memory::desc& dst_md,
                       dnnl::memory& dst, int K, float* w, float* b) {
    using namespace dnnl;
    const auto f32 = memory::data_type::f32;
    const memory::dim O = dst_md.dims()[1], I = src.get_desc().dims()[1];
    convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src.get_desc(),
                                memory::desc({O, I, K, K}, f32, memory::format_tag::any),
                                memory::desc({O}, f32, memory::format_tag::x), dst_md, {1, 1}, {K / 2, K / 2}, {K / 2, K / 2});
    convolution_forward::primitive_desc pd(d, eng);
    if (!dst) dst = memory(pd.dst_desc(), eng);
    memory wu({{O, I, K, K}, f32, memory::format_tag::oihw}, eng, w), wb(pd.weights_desc(), eng);
    reorder(wu, wb).execute(s, wu, wb);
    convolution_forward(pd).execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wb},
        {DNNL_ARG_BIAS, memory(pd.bias_desc(), eng, b)}, {DNNL_ARG_DST, dst}});
    s.wait();
}

// u [N, 4C/bs, H, W, bs] (channel k*C + c) -> p [N, C/bs, 2H, 2W, bs]
static void sbvsr_shuffle(const float* u, float* p, int N, int C, int H, int W, int bs) {
    const int CB = C / bs;
    #pragma omp parallel for collapse(3) schedule(static)
    for (int n = 0; n < N; n++)
        for (int cb = 0; cb < CB; cb++)
            for (int y = 0; y < H; y++)
                for (int i = 0; i < 2; i++) {
                    float* d = p + (((long long)(n * CB + cb) * 2 * H + 2 * y + i) * 2 * W) * bs;
                    for (int x = 0; x < W; x++)
                        for (int j = 0; j < 2; j++)
                            std::memcpy(d + (2LL * x + j) * bs,
                                        u + (((long long)(n * 4 * CB + (2 * i + j) * CB + cb) * H + y) * W + x) * bs,
                                        bs * sizeof(float));
                }
}
"""

# in0 x [N,C,h,w]; in1 up weights [S,4C,C,K,K], in2 up biases [S,4C] (permuted,
# see above); in3/in4 out conv 1 [C,C,K,K]/[C]; in5/in6 out conv 2 [Co,C,K,K]/[Co].
TAIL_SRC = r"""
using namespace dnnl;
using tag = memory::format_tag;
const int N = in0_shape0, C = in0_shape1, S = in1_shape0, K = in1_shape3, Co = in5_shape0;
int H = in0_shape2, W = in0_shape3;
static engine eng(engine::kind::cpu, 0);
stream s(eng);
// the layout oneDNN wants for this conv; every C-channel tensor then uses it
convolution_forward::desc probe(prop_kind::forward_inference, algorithm::convolution_direct,
    sbvsr_md(N, C, H, W, tag::any), memory::desc({C, C, K, K}, memory::data_type::f32, tag::any),
    sbvsr_md(N, C, H, W, tag::any), {1, 1}, {K / 2, K / 2}, {K / 2, K / 2});
const auto picked = convolution_forward::primitive_desc(probe, eng).src_desc();
const tag bt = picked == sbvsr_md(N, C, H, W, tag::nChw16c) ? tag::nChw16c : tag::nChw8c;
const int bs = bt == tag::nChw16c ? 16 : 8;
if (picked != sbvsr_md(N, C, H, W, bt) || C % bs) throw std::runtime_error("sbvsr tail: unexpected oneDNN layout");
memory x(sbvsr_md(N, C, H, W, bt), eng), u;
memory xu(sbvsr_md(N, C, H, W, tag::nchw), eng, (void*)in0_p);
reorder(xu, x).execute(s, xu, x);
for (int k = 0; k < S; k++) {
    u = memory(sbvsr_md(N, 4 * C, H, W, bt), eng);
    sbvsr_conv(s, eng, x, u.get_desc(), u, K, in1_p + (long long)k * 4 * C * C * K * K, in2_p + (long long)k * 4 * C);
    x = memory(sbvsr_md(N, C, 2 * H, 2 * W, bt), eng);
    sbvsr_shuffle((const float*)u.get_data_handle(), (float*)x.get_data_handle(), N, C, H, W, bs);
    H *= 2; W *= 2;
}
// out conv 1 writes into the last upsampling buffer (same size; S >= 1), out conv 2 where oneDNN likes
memory o1(sbvsr_md(N, C, H, W, bt), eng, u.get_data_handle()), o2;
sbvsr_conv(s, eng, x, o1.get_desc(), o1, K, in3_p, in4_p);
sbvsr_conv(s, eng, o1, sbvsr_md(N, Co, H, W, tag::any), o2, K, in5_p, in6_p);
memory y(sbvsr_md(N, Co, H, W, tag::nchw), eng, (void*)out0_p);
reorder(o2, y).execute(s, o2, y);
s.wait();
"""


def _flags():
    d = runtime.onednn_dir()
    return (f' -I"{os.path.join(d, "include")}" -L"{os.path.join(d, "lib")}" '
            f'-Wl,-rpath,"{os.path.join(d, "lib")}" -lmkldnn ')


def available():
    """True where the fused path can run: CPU with Jittor's oneDNN loaded."""
    return (runtime.onednn_enabled() and not jt.flags.use_cuda
            and jt.compile_extern.mkl_ops is not None)


def same_conv(c, k):
    """Whether conv c is k x k, stride 1, undilated, ungrouped, 'same'-padded, with a bias."""
    return (c.bias is not None and c.groups == 1 and tuple(c.weight.shape[2:]) == (k, k)
            and tuple(c.stride) == (1, 1) and tuple(c.dilation) == (1, 1) and tuple(c.padding) == (k // 2, k // 2))


def _plain_resblock(b):
    c1, c2 = b.conv1, b.conv2
    k = c1.weight.shape[2]
    return (b.res_translate is None and same_conv(c1, k) and same_conv(c2, k)
            and c1.weight.shape[0] == c1.weight.shape[1] == c2.weight.shape[0] == c2.weight.shape[1])


def resblock_chain(x, blocks):
    """``blocks`` (ResBlocks, same-width, stride 1, no dilation) applied to x [N,C,H,W].

    Same result as ``nn.Sequential(*blocks)(x)`` to float rounding; no gradient.
    """
    blocks = list(blocks)
    if not blocks:
        return x
    if not available():
        raise RuntimeError('fused oneDNN convolutions need the CPU with Jittor\'s oneDNN enabled')
    if not all(_plain_resblock(b) for b in blocks):
        raise ValueError('resblock_chain takes ResBlocks of one width, stride 1, dilation 1, with biases')
    convs = [c for b in blocks for c in (b.conv1, b.conv2)]
    if x.ndim != 4 or x.shape[1] != convs[0].weight.shape[1]:
        raise ValueError(f'resblock_chain: input {tuple(x.shape)} does not fit {convs[0].weight.shape[1]} channels')
    with jt.no_grad():
        w = jt.stack([c.weight.float32() for c in convs])
        b = jt.stack([c.bias.float32() for c in convs])
        y = jt.code(x.shape, 'float32', [x.float32(), w, b], cpu_header=CHAIN_HEAD, cpu_src=CHAIN_SRC)
    y.compile_options = {'FLAGS:' + _flags(): 1}
    return y


def tail_fits(x, up_convs, out_convs):
    """Whether :func:`upsample_tail` takes these layers (same-padded convs, C a multiple of 16)."""
    up_convs, out_convs = list(up_convs), list(out_convs)
    if x.ndim != 4 or not up_convs or len(out_convs) != 2:
        return False
    c, k = x.shape[1], out_convs[0].weight.shape[2]
    return (c % 16 == 0 and k % 2 == 1
            and all(same_conv(v, k) for v in up_convs + out_convs)
            and all(tuple(v.weight.shape[:2]) == (4 * c, c) for v in up_convs)
            and tuple(out_convs[0].weight.shape[:2]) == (c, c) and out_convs[1].weight.shape[1] == c)


def upsample_tail(x, up_convs, out_convs):
    """``out_convs`` after (conv, PixelShuffle(2)) per conv of ``up_convs``, on x [N,C,h,w].

    Same result as the plain layers to float rounding; no gradient.
    """
    if not available():
        raise RuntimeError('fused oneDNN convolutions need the CPU with Jittor\'s oneDNN enabled')
    up_convs, out_convs = list(up_convs), list(out_convs)
    if not tail_fits(x, up_convs, out_convs):
        raise ValueError('upsample_tail takes stride-1 same-padded convs with biases, C->4C then C->C->Co, C % 16 == 0')
    n, c, h, w = x.shape
    k, s = out_convs[0].weight.shape[2], len(up_convs)
    with jt.no_grad():
        # output channels (c, k) -> (k, c): PixelShuffle then moves whole channel blocks
        wu = jt.stack([v.weight.float32().reshape(c, 4, c, k, k).transpose(1, 0, 2, 3, 4).reshape(4 * c, c, k, k)
                       for v in up_convs])
        bu = jt.stack([v.bias.float32().reshape(c, 4).transpose(1, 0).reshape(4 * c) for v in up_convs])
        o1, o2 = out_convs
        args = [x.float32(), wu, bu] + [v.float32() for v in (o1.weight, o1.bias, o2.weight, o2.bias)]
        y = jt.code((n, o2.weight.shape[0], h << s, w << s), 'float32', args,
                    cpu_header=TAIL_HEAD, cpu_src=TAIL_SRC)
    y.compile_options = {'FLAGS:' + _flags(): 1}
    return y
