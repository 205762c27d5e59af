"""Inference-only fused oneDNN convolutions on the CPU: ResBlock chains, upsampling tail.

Why: on the CPU nearly all of PWC_Recons' time is Jittor's ``mkl_conv``,
which per convolution re-creates its oneDNN primitive, reorders the input
from NCHW to oneDNN's layout and the output back, and leaves bias, ReLU and
the residual add to separate passes over memory. A chain of ResBlocks
(conv-ReLU-conv + x) here runs in one activation layout from one reorder in
to one reorder out: the first conv of a block carries bias and ReLU as
post-ops, the second bias and a ``sum`` post-op that accumulates onto the
block input in place. The conv before a chain (PWC_Recons' ``in_conv``,
``fusion_conv``) may run as the chain's head: it reads the NCHW input in
the layout oneDNN wants for it and writes the chain's layout, so that the
blocks start without a reorder. :func:`upsample_tail` does the same for
PWC_Recons' upsampling and output convs, PixelShuffle included. The chains'
3x3 convolutions can be Winograd's (ours, ops/winograd.py, on any CPU with
AVX2; or oneDNN's kernels for AVX-512's blocked layouts): fewer
multiplications for the bulk of the model's FLOPs.

The layout is whatever oneDNN prefers on this CPU (``layout='auto'``: e.g.
``nChw8c`` with AVX2, NHWC for its brgemm kernels on AVX-512), or one forced
by the caller (``nChw8c``, ``nChw16c``, ``nhwc``), which oneDNN runs on any
ISA (a slower reference kernel where it has no fast one): tests force each
to cover every CPU on one machine. Nothing here assumes a layout: the
PixelShuffle reads the strides and channel block of the descriptors oneDNN
reports.

No gradients: training keeps Jittor's own ops. :func:`available` says
whether this path can run (CPU, Jittor's oneDNN loaded).

One file: the C++ kernels sit beside the launchers that feed them (the
shapes and codes each side reads), as in ops/correlation.py.
"""
import os

import numpy as np
import jittor as jt  # jittor_sbvsr/__init__ has configured it

from .. import runtime
from . import winograd

# layout name -> the code the C++ side reads (0: oneDNN's choice)
LAYOUTS = {'auto': 0, 'nhwc': 1, 'nChw8c': 8, 'nChw16c': 16}
# the chains' convolution algorithm -> its code ('winograd': oneDNN's; 'auto': oneDNN's Winograd where
# it has it, else direct; 'wino4', 'wino2': ours, F(4x4,3x3) and F(2x2,3x3), ops/winograd.py)
ALGORITHMS = {'direct': 0, 'winograd': 1, 'auto': 2, 'wino4': 3, 'wino2': 4}

COMMON_HEAD = r'''
#include <dnnl.hpp>
#include <algorithm>
#include <cstring>
#include <stdexcept>

// An activation [n, c, h, w] in layout code L: 0 = any (oneDNN picks),
// 1 = nhwc, 8 = nChw8c, 16 = nChw16c.
static dnnl::memory::desc sbvsr_md(long long n, long long c, long long h, long long w, int L) {
    using tag = dnnl::memory::format_tag;
    const tag t = L == 1 ? tag::nhwc : L == 8 ? tag::nChw8c : L == 16 ? tag::nChw16c : L == 0 ? tag::any : tag::undef;
    if (t == tag::undef) throw std::runtime_error("sbvsr: unknown layout code");
    return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32, t);
}

// A K x K convolution src -> dst [N, O, H, W], stride 1, 'same' padding, with bias.
static dnnl::convolution_forward::desc sbvsr_conv_desc(dnnl::algorithm alg, const dnnl::memory::desc& src,
                                                       const dnnl::memory::desc& dst, long long K) {
    using namespace dnnl;
    const auto f32 = memory::data_type::f32;
    const memory::dim O = dst.dims()[1], I = src.dims()[1];
    return convolution_forward::desc(prop_kind::forward_inference, alg, src,
                                     memory::desc({O, I, K, K}, f32, memory::format_tag::any),
                                     memory::desc({O}, f32, memory::format_tag::x), dst,
                                     {1, 1}, {K / 2, K / 2}, {K / 2, K / 2});
}

// The same format as ``like`` (one of the usual activation tags), for other dims; else nchw.
static dnnl::memory::desc sbvsr_like(const dnnl::memory::desc& like, long long n, long long c, long long h, long long w) {
    using tag = dnnl::memory::format_tag;
    const auto d = like.dims();
    for (tag t : {tag::nChw16c, tag::nChw8c, tag::nChw4c, tag::nhwc, tag::nchw})
        if (like == dnnl::memory::desc(d, dnnl::memory::data_type::f32, t))
            return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32, t);
    return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32, tag::nchw);
}
'''

CHAIN_HEAD = COMMON_HEAD + winograd.HEAD + r'''
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

// build(algorithm) with A: 0 direct, 1 Winograd, 2 Winograd where oneDNN has
// a kernel for it (AVX-512: blocked layouts, 3x3), else direct.
// Returns whether it built Winograd.
template <class Build>
static bool sbvsr_algorithm(int A, Build build) {
    if (A != 0) {
        try {
            build(dnnl::algorithm::convolution_winograd);
            return true;
        } catch (const dnnl::error&) {
            if (A != 2) throw;  // no Winograd kernel here (e.g. AVX2, NHWC, a 5x5 head)
        }
    }
    build(dnnl::algorithm::convolution_direct);
    return false;
}

// A head convolution Ci -> C (bias, no activation) before the blocks: it reads
// the NCHW input, reordered into S where oneDNN wants another layout for it
// (nchw: it reads the input as it is; S is kept like X and T: 147 MB for
// fusion_conv's 640 channels at 180x320), and writes the blocks' input X.
struct SbvsrHead {
    dnnl::memory::desc user, wuser;
    dnnl::convolution_forward conv;
    dnnl::reorder rin, rw;
    dnnl::memory S, w;
    bool nchw = false, wino = false;
};

// Primitives for one (N, C, H, W, K, L, A) ResBlock: conv1 with bias + ReLU,
// conv2 with bias + sum onto its destination; both read and write one
// activation layout ``act``; A as sbvsr_algorithm takes it. The activation
// buffers are kept too: freshly mapped pages cost as much as a reorder. At
// most 4 shapes stay, each with its heads.
struct SbvsrResChain {
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    dnnl::memory::desc user, act, wuser, wmd, bmd;
    dnnl::convolution_forward c1, c2;
    dnnl::reorder rin, rout, rw;
    dnnl::memory X, T;                // block input / residual, conv1 output
    std::vector<dnnl::memory> w;      // weights in the convs' layout, one per conv
    bool wino = false;
    int A = 0;
    std::map<std::pair<int, int>, std::unique_ptr<SbvsrHead>> heads;  // by (Ci, K)
};

static SbvsrResChain& sbvsr_res_chain(int N, int C, int H, int W, int K, int L, int A) {
    using namespace dnnl;
    using tag = memory::format_tag;
    static std::map<std::tuple<int, int, int, int, int, int, int>, std::unique_ptr<SbvsrResChain>> cache;
    const auto key = std::make_tuple(N, C, H, W, K, L, A);
    auto it = cache.find(key);
    if (it != cache.end()) return *it->second;
    if (cache.size() >= 4) cache.clear();
    std::unique_ptr<SbvsrResChain> slot(new SbvsrResChain());
    SbvsrResChain& r = *slot;
    const auto f32 = memory::data_type::f32;
    r.user = memory::desc({N, C, H, W}, f32, tag::nchw);
    r.wuser = memory::desc({C, C, K, K}, f32, tag::oihw);
    r.bmd = memory::desc({C}, f32, tag::x);
    post_ops p1, p2;
    p1.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    p2.append_sum(1.f);
    primitive_attr a1, a2;
    a1.set_post_ops(p1);
    a2.set_post_ops(p2);
    auto pd = [&](const memory::desc& io, const primitive_attr& a, algorithm alg) {
        return convolution_forward::primitive_desc(sbvsr_conv_desc(alg, io, io, K), a, r.eng);
    };
    r.A = A;
    if (A >= 3) {  // our Winograd (ops/winograd.py): the layout asked for, else 8-channel blocks
        if (!sbvsr_wino_cpu()) throw std::runtime_error("sbvsr chain: no AVX2/FMA for our Winograd kernels");
        if (K != 3 || C % 8) throw std::runtime_error("sbvsr chain: our Winograd takes 3x3 convs on 8k channels");
        r.act = sbvsr_md(N, C, H, W, L ? L : 8);
        sbvsr_act(memory(r.act, r.eng, DNNL_MEMORY_NONE));  // throws for a layout it cannot read
        r.wino = true;
    } else  // the layout asked for, or the one oneDNN picks; then both convs are pinned to it
    r.wino = sbvsr_algorithm(A, [&](algorithm alg) {
        r.act = L ? sbvsr_md(N, C, H, W, L) : pd(sbvsr_md(N, C, H, W, 0), a1, alg).dst_desc();
        auto pd1 = pd(r.act, a1, alg), pd2 = pd(r.act, a2, alg);
        if (pd1.src_desc() != r.act || pd2.dst_desc() != r.act || pd1.weights_desc() != pd2.weights_desc())
            throw std::runtime_error("sbvsr chain: oneDNN changed the pinned layout");
        r.wmd = pd1.weights_desc();
        r.c1 = convolution_forward(pd1);
        r.c2 = convolution_forward(pd2);
    });
    r.rin = reorder(memory(r.user, r.eng, DNNL_MEMORY_NONE), memory(r.act, r.eng, DNNL_MEMORY_NONE));
    r.rout = reorder(memory(r.act, r.eng, DNNL_MEMORY_NONE), memory(r.user, r.eng, DNNL_MEMORY_NONE));
    if (A < 3) r.rw = reorder(memory(r.wuser, r.eng, DNNL_MEMORY_NONE), memory(r.wmd, r.eng, DNNL_MEMORY_NONE));
    r.X = memory(r.act, r.eng);
    r.T = memory(r.act, r.eng);
    return *(cache[key] = std::move(slot));
}

// The head Ci -> C, K x K of chain r: its own algorithm (r.A; Winograd falls
// back to direct for this conv alone), its output pinned to r.act. 'auto'
// keeps heads of under 16 input channels direct: Winograd pads them to 16
// (in_conv's 3 channels: 45 ms against direct's 23 at 180x320, AVX-512).
// With our Winograd (r.A >= 3) a head given here is oneDNN's direct conv
// (ours are set up by sbvsr_whead).
static SbvsrHead& sbvsr_head(SbvsrResChain& r, int Ci, int K) {
    using namespace dnnl;
    using tag = memory::format_tag;
    const auto key = std::make_pair(Ci, K);
    auto it = r.heads.find(key);
    if (it != r.heads.end()) return *it->second;
    std::unique_ptr<SbvsrHead> slot(new SbvsrHead());
    SbvsrHead& h = *slot;
    const auto f32 = memory::data_type::f32;
    const memory::dims d = r.act.dims();
    const memory::dim N = d[0], C = d[1], H = d[2], W = d[3];
    h.user = memory::desc({N, Ci, H, W}, f32, tag::nchw);
    h.wuser = memory::desc({C, Ci, K, K}, f32, tag::oihw);
    memory::desc src, wmd;
    h.wino = sbvsr_algorithm((r.A == 2 && Ci < 16) || r.A >= 3 ? 0 : r.A, [&](algorithm alg) {
        convolution_forward::primitive_desc pd(
            sbvsr_conv_desc(alg, memory::desc({N, Ci, H, W}, f32, tag::any), r.act, K), r.eng);
        if (pd.dst_desc() != r.act) throw std::runtime_error("sbvsr chain: oneDNN changed the pinned layout");
        src = pd.src_desc();
        wmd = pd.weights_desc();
        h.conv = convolution_forward(pd);
    });
    h.nchw = src == h.user;
    if (!h.nchw) {
        h.rin = reorder(memory(h.user, r.eng, DNNL_MEMORY_NONE), memory(src, r.eng, DNNL_MEMORY_NONE));
        h.S = memory(src, r.eng);
    }
    h.rw = reorder(memory(h.wuser, r.eng, DNNL_MEMORY_NONE), memory(wmd, r.eng, DNNL_MEMORY_NONE));
    h.w = memory(wmd, r.eng);
    return *(r.heads[key] = std::move(slot));
}

// r.X = head(x) + bias by oneDNN (sbvsr_head), x [N, Ci, H, W] NCHW, w [C, Ci, K, K] oihw
static void sbvsr_run_head(SbvsrResChain& r, int Ci, int K, const float* x, const float* w, const float* b) {
    using namespace dnnl;
    SbvsrHead& h = sbvsr_head(r, Ci, K);
    memory xm(h.user, r.eng, (void*)x);
    if (!h.nchw) h.rin.execute(r.strm, {{DNNL_ARG_FROM, xm}, {DNNL_ARG_TO, h.S}});
    h.rw.execute(r.strm, {{DNNL_ARG_FROM, memory(h.wuser, r.eng, (void*)w)}, {DNNL_ARG_TO, h.w}});
    h.conv.execute(r.strm, {{DNNL_ARG_SRC, h.nchw ? xm : h.S}, {DNNL_ARG_WEIGHTS, h.w},
                            {DNNL_ARG_BIAS, memory(r.bmd, r.eng, (void*)b)}, {DNNL_ARG_DST, r.X}});
}

// The head Ci -> C of chain r by our Winograd: the NCHW input reordered into S,
// in r.act's kind of layout (it reads 8 contiguous channels); kept as heads are.
static SbvsrHead& sbvsr_whead(SbvsrResChain& r, int Ci) {
    using namespace dnnl;
    const auto key = std::make_pair(Ci, -3);
    auto it = r.heads.find(key);
    if (it != r.heads.end()) return *it->second;
    std::unique_ptr<SbvsrHead> slot(new SbvsrHead());
    SbvsrHead& h = *slot;
    const memory::dims d = r.act.dims();
    h.user = memory::desc({d[0], Ci, d[2], d[3]}, memory::data_type::f32, memory::format_tag::nchw);
    const memory::desc src = sbvsr_like(r.act, d[0], Ci, d[2], d[3]);
    h.rin = reorder(memory(h.user, r.eng, DNNL_MEMORY_NONE), memory(src, r.eng, DNNL_MEMORY_NONE));
    h.S = memory(src, r.eng);
    h.wino = true;
    return *(r.heads[key] = std::move(slot));
}
'''

# in0 x [N,C,H,W] ([N,Ci,H,W] with a head), in1 weights [2B,C,C,K,K] (conv1,
# conv2 of each block), in2 biases [2B,C], in3 [layout code, algorithm code];
# with SBVSR_HEAD defined in4/in5 the head's weights [C,Ci,Kh,Kh] / bias [C].
# out0 = the chain's output [N,C,H,W].
CHAIN_SRC = r'''
using namespace dnnl;
const int N = in0_shape0, H = in0_shape2, W = in0_shape3;
const int B2 = in1_shape0, C = in1_shape1, K = in1_shape3;
SbvsrResChain& r = sbvsr_res_chain(N, C, H, W, K, in3_p[0], in3_p[1]);
memory &X = r.X, &T = r.T;
while ((int)r.w.size() < B2) r.w.emplace_back(r.wmd, r.eng);
#ifdef SBVSR_HEAD  // X = head(x) + bias
sbvsr_run_head(r, in0_shape1, in4_shape2, in0_p, in4_p, in5_p);
#else
r.rin.execute(r.strm, {{DNNL_ARG_FROM, memory(r.user, r.eng, (void*)in0_p)}, {DNNL_ARG_TO, X}});
#endif
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

# Our Winograd (ops/winograd.py): in0 x, in1 transformed weights [2B,P,C,C], in2 biases
# [2B,C], in3 codes; SBVSR_HEAD: in4/in5 a oneDNN direct head's weights/bias as above;
# SBVSR_WHEAD: in4 our head's transformed weights [P,Ci,C], in5 its bias.
WINO_CHAIN_SRC = r'''
using namespace dnnl;
const int N = in0_shape0, H = in0_shape2, W = in0_shape3;
const int B2 = in1_shape0, P = in1_shape1, C = in1_shape3, M = P == 36 ? 4 : 2;
SbvsrResChain& r = sbvsr_res_chain(N, C, H, W, 3, in3_p[0], in3_p[1]);
memory &X = r.X, &T = r.T;
#if defined(SBVSR_HEAD)  // X = head(x) + bias, oneDNN's direct conv
sbvsr_run_head(r, in0_shape1, in4_shape2, in0_p, in4_p, in5_p);
r.strm.wait();
#elif defined(SBVSR_WHEAD)  // X = head(x) + bias, ours
SbvsrHead& h = sbvsr_whead(r, in0_shape1);
h.rin.execute(r.strm, {{DNNL_ARG_FROM, memory(h.user, r.eng, (void*)in0_p)}, {DNNL_ARG_TO, h.S}});
r.strm.wait();
sbvsr_wino(M, h.S, X, in4_p, in5_p, 0);
#else
r.rin.execute(r.strm, {{DNNL_ARG_FROM, memory(r.user, r.eng, (void*)in0_p)}, {DNNL_ARG_TO, X}});
r.strm.wait();
#endif
for (int i = 0; i < B2; i++)  // T = relu(conv1(X) + b1); X = X + conv2(T) + b2
    sbvsr_wino(M, i % 2 ? T : X, i % 2 ? X : T, in1_p + (long long)i * P * C * C, in2_p + (long long)i * C, i % 2 ? 2 : 1);
r.rout.execute(r.strm, {{DNNL_ARG_FROM, X}, {DNNL_ARG_TO, memory(r.user, r.eng, (void*)out0_p)}});
r.strm.wait();
'''

# ---------------------------------------------------------------- tail ----
# Upsampling (conv C->4C, PixelShuffle(2); per x2 stage) and the two output
# convs. With the upsampling weights' output channels permuted to (offset
# k = 2i + j, c), PixelShuffle moves runs of channels: channels k*C + c..
# at (y, x) go to channels c.. at (2y + i, 2x + j). The runs are as long as
# both layouts keep channels contiguous (a channel block, all C channels in
# NHWC, one channel in NCHW). The tensors are large here, so they are
# allocated per call; oneDNN's own primitive cache keeps the primitives.

TAIL_HEAD = COMMON_HEAD + r"""
// element (n, c, y, x) of a layout with at most one block, on channels, is at
// off0 + n*s0 + (c/ib)*s1 + y*s2 + x*s3 + c%ib
struct SbvsrLay { long long s[4]; long long ib, off0; };

static SbvsrLay sbvsr_lay(const dnnl::memory::desc& md) {
    const dnnl_memory_desc_t& d = md.data;
    const auto& b = d.format_desc.blocking;
    if (d.format_kind != dnnl_blocked || d.ndims != 4 || b.inner_nblks > 1
        || (b.inner_nblks == 1 && b.inner_idxs[0] != 1))
        throw std::runtime_error("sbvsr tail: an activation layout with blocks other than one channel block");
    return {{b.strides[0], b.strides[1], b.strides[2], b.strides[3]}, b.inner_nblks ? b.inner_blks[0] : 1, d.offset0};
}

static long long sbvsr_gcd(long long a, long long b) { return b ? sbvsr_gcd(b, a % b) : a; }  // C++14: no std::gcd

// channels that stay contiguous in a layout, for runs starting at multiples of the result
static long long sbvsr_run(const SbvsrLay& l, long long C) {
    return l.ib > 1 ? sbvsr_gcd(C, l.ib) : l.s[1] == 1 ? C : 1;
}

// conv (stride 1, 'same' padding) + bias from user oihw weights. src is reordered
// if the primitive wants another layout; dst is allocated, or placed in ``reuse``
// when that buffer is large enough.
static dnnl::memory sbvsr_conv(dnnl::stream& s, const dnnl::engine& eng, const dnnl::memory& src, int O, int K,
                               const float* w, const float* b, int L, const dnnl::memory* reuse = nullptr) {
    using namespace dnnl;
    const auto f32 = memory::data_type::f32;
    const auto dims = src.get_desc().dims();
    const memory::dim N = dims[0], I = dims[1], H = dims[2], W = dims[3];
    convolution_forward::primitive_desc pd(
        sbvsr_conv_desc(algorithm::convolution_direct, sbvsr_md(N, I, H, W, L), sbvsr_md(N, O, H, W, L), K), eng);
    memory x = src;
    if (pd.src_desc() != src.get_desc()) {
        x = memory(pd.src_desc(), eng);
        reorder(src, x).execute(s, const_cast<memory&>(src), x);
    }
    memory dst = reuse && reuse->get_desc().get_size() >= pd.dst_desc().get_size()
        ? memory(pd.dst_desc(), eng, reuse->get_data_handle()) : memory(pd.dst_desc(), eng);
    memory wu({{O, I, K, K}, f32, memory::format_tag::oihw}, eng, (void*)w), wb(pd.weights_desc(), eng);
    reorder(wu, wb).execute(s, wu, wb);
    convolution_forward(pd).execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, wb},
        {DNNL_ARG_BIAS, memory(pd.bias_desc(), eng, (void*)b)}, {DNNL_ARG_DST, dst}});
    s.wait();
    return dst;
}

// u [N, 4C, H, W] (channel k*C + c) -> p [N, C, 2H, 2W], any two layouts
static void sbvsr_shuffle(const dnnl::memory& u, dnnl::memory& p, long long N, long long C, long long H, long long W) {
    const SbvsrLay a = sbvsr_lay(u.get_desc()), b = sbvsr_lay(p.get_desc());
    const long long g = sbvsr_gcd(sbvsr_run(a, C), sbvsr_run(b, C));
    const float* src = (const float*)u.get_data_handle();
    float* dst = (float*)p.get_data_handle();
    if (p.get_desc().data.padded_dims[1] != C)  // blocked layouts keep their padding channels zero
        std::memset(dst, 0, p.get_desc().get_size());
    auto at = [](const SbvsrLay& l, long long n, long long c, long long y, long long x) {
        return l.off0 + n * l.s[0] + (c / l.ib) * l.s[1] + y * l.s[2] + x * l.s[3] + c % l.ib;
    };
#if defined(_OPENMP) && _OPENMP >= 200805  // collapse: OpenMP 3.0 (MSVC's /openmp is 2.0)
    #pragma omp parallel for collapse(3) schedule(static)
#elif defined(_OPENMP)
    #pragma omp parallel for schedule(static)
#endif
    for (long long n = 0; n < N; n++)
        for (long long y = 0; y < H; y++)
            for (int i = 0; i < 2; i++)
                for (long long x = 0; x < W; x++)
                    for (int j = 0; j < 2; j++)
                        for (long long c = 0; c < C; c += g)
                            std::memcpy(dst + at(b, n, c, 2 * y + i, 2 * x + j),
                                        src + at(a, n, (2 * i + j) * C + c, y, x), g * sizeof(float));
}
"""

# in0 x [N,C,h,w]; in1 up weights [S,4C,C,K,K], in2 up biases [S,4C] (permuted,
# see above); in3/in4 out conv 1 [C,C,K,K]/[C]; in5/in6 out conv 2 [Co,C,K,K]/[Co];
# in7 [layout code, algorithm code] (the tail runs direct convolutions).
TAIL_SRC = r"""
using namespace dnnl;
using tag = memory::format_tag;
const int N = in0_shape0, C = in0_shape1, S = in1_shape0, K = in1_shape3, Co = in5_shape0, L = in7_p[0];
int H = in0_shape2, W = in0_shape3;
static engine eng(engine::kind::cpu, 0);
stream s(eng);
memory x(memory::desc({N, C, H, W}, memory::data_type::f32, tag::nchw), eng, (void*)in0_p), u;
for (int k = 0; k < S; k++) {
    u = sbvsr_conv(s, eng, x, 4 * C, K, in1_p + (long long)k * 4 * C * C * K * K, in2_p + (long long)k * 4 * C, L);
    x = memory(L ? sbvsr_md(N, C, 2 * H, 2 * W, L) : sbvsr_like(u.get_desc(), N, C, 2 * H, 2 * W), eng);
    sbvsr_shuffle(u, x, N, C, H, W);
    H *= 2; W *= 2;
}
// out conv 1 may write into the last upsampling buffer (same size), out conv 2 where oneDNN likes
memory o1 = sbvsr_conv(s, eng, x, C, K, in3_p, in4_p, L, &u);
memory o2 = sbvsr_conv(s, eng, o1, Co, K, in5_p, in6_p, L);
memory y(memory::desc({N, Co, H, W}, memory::data_type::f32, tag::nchw), eng, (void*)out0_p);
reorder(o2, y).execute(s, o2, y);
s.wait();
"""

ISA_SRC = 'out0_p[0] = (int)dnnl::get_effective_cpu_isa();'
ISA_NAMES = {0x1: 'sse41', 0x3: 'avx', 0x7: 'avx2', 0xf: 'avx512_mic', 0x1f: 'avx512_mic_4ops',
             0x27: 'avx512_core', 0x67: 'avx512_core_vnni', 0xe7: 'avx512_core_bf16',
             0x3e7: 'avx512_core_amx', 0x407: 'avx2_vnni'}


def _flags(cc_type=None, d=None):
    """Compile and link flags for oneDNN in ``d`` with Jittor's compiler (``jt.flags.cc_type``).

    MSVC (``cl``) takes Jittor's own oneDNN flags for it: Jittor turns
    ``-L`` into ``/LIBPATH`` and a DLL search folder (``bin`` holds
    dnnl.dll) and ``-ldnnl`` into ``dnnl.lib``. gcc and clang link
    libmkldnn with an rpath, so that no LD_LIBRARY_PATH is needed.
    """
    cc_type = cc_type or jt.flags.cc_type
    d = d or runtime.onednn_dir()
    inc, lib = os.path.join(d, 'include'), os.path.join(d, 'lib')
    if cc_type == 'cl':
        return f' -I"{inc}" -L"{lib}" -L"{os.path.join(d, "bin")}" -ldnnl '
    return f' -I"{inc}" -L"{lib}" -Wl,-rpath,"{lib}" -lmkldnn '


def available():
    """True where the fused path can run: CPU with Jittor's oneDNN loaded."""
    return (runtime.onednn_enabled() and not jt.flags.use_cuda
            and jt.compile_extern.mkl_ops is not None)


def _need():
    if not available():
        raise RuntimeError('fused oneDNN convolutions need the CPU with Jittor\'s oneDNN enabled')


def _codes(layout, algorithm='direct'):
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {", ".join(LAYOUTS)}, not {layout!r}')
    if algorithm not in ALGORITHMS:
        raise ValueError(f'algorithm must be one of {", ".join(ALGORITHMS)}, not {algorithm!r}')
    return jt.array(np.array([LAYOUTS[layout], ALGORITHMS[algorithm]], np.int32))


def onednn_isa():
    """The instruction set oneDNN's kernels use here (after ``DNNL_MAX_CPU_ISA``), e.g. 'avx2'."""
    _need()
    y = jt.code((1,), 'int32', [], cpu_header=COMMON_HEAD, cpu_src=ISA_SRC)
    y.compile_options = {'FLAGS:' + _flags(): 1}
    code = int(y.numpy()[0])
    return ISA_NAMES.get(code, hex(code))


def own_winograd(c, algorithm, head=None):
    """Whether ``algorithm`` is ours (ops/winograd.py) and takes 3x3 blocks of c channels (or, with
    ``head`` = (Ci, K), that head conv): channels in whole groups of 8 on a CPU with AVX2/FMA."""
    if algorithm not in winograd.TILES or not winograd_available():
        return False
    ci, k = head or (c, 3)
    return c % 8 == 0 and ci % 8 == 0 and k == 3


def chain_arrays(weights, biases, algorithm='direct', head=None):
    """The weights as the chain op takes them: for our Winograd (where it takes the chain, see
    :func:`own_winograd`) transformed once here (ops/winograd.py:transform_weights), with the
    head's where it takes the head; else as given. Returns (weights, biases, head), numpy."""
    weights, biases = np.asarray(weights, np.float32), np.asarray(biases, np.float32)
    head = None if head is None else tuple(np.asarray(a, np.float32) for a in head)
    c = weights.shape[1]
    if weights.ndim == 5 and weights.shape[3] == 3 and own_winograd(c, algorithm):
        m = winograd.TILES[algorithm]
        weights = winograd.transform_weights(weights, m)
        if head is not None and own_winograd(c, algorithm, head[0].shape[1:3]):
            head = (winograd.transform_weights(head[0], m), head[1])
    return weights, biases, head


def resblock_chain(x, weights, biases, layout='auto', algorithm='direct', head=None):
    """ResBlocks (conv-ReLU-conv + x, 'same' padding) applied to x [N,C,H,W], or to head(x).

    ``weights``/``biases`` as models/fused_weights.py:chain_weights gives them
    (numpy or Vars), or as :func:`chain_arrays` prepares them; ``head`` (weights
    [C,Ci,K,K], bias [C], as its head_weights gives them) a conv first, on
    x [N,Ci,H,W], written straight into the blocks' layout: no reorder between
    it and the blocks. Same result as the layers run by Jittor to float
    rounding; no gradient. ``algorithm`` (:data:`ALGORITHMS`), for each conv:
    Winograd does 3x3 convs with fewer multiplications. 'winograd' is
    oneDNN's (F(4x4,3x3) and F(2x2,3x3) kernels, AVX-512 only in this oneDNN;
    'auto': oneDNN's where it has it, and not for a head of under 16
    channels); its rounding error against a float64 evaluation is 0.6x
    (F(2x2,3x3)) to 1.8x (F(4x4,3x3)) direct's RMS (tests/test_fused_conv.py).
    'wino4' and 'wino2' are ours (ops/winograd.py, any CPU with AVX2) where
    :func:`own_winograd` says they apply, else direct.
    """
    _need()
    if algorithm in winograd.TILES and weights.ndim == 5:  # raw weights: transformed here (tests, benches)
        weights, biases, head = chain_arrays(weights.numpy() if isinstance(weights, jt.Var) else weights,
                                             biases.numpy() if isinstance(biases, jt.Var) else biases, algorithm,
                                             None if head is None else [a.numpy() if isinstance(a, jt.Var) else a
                                                                        for a in head])
    ours = weights.ndim == 4  # transformed: [2B, P, C, C]
    c = weights.shape[-1] if ours else weights.shape[1]
    hours = head is not None and head[0].ndim == 3  # transformed: [P, Ci, C]
    cin = c if head is None else head[0].shape[1]
    if x.ndim != 4 or x.shape[1] != cin or (head is not None and head[0].shape[-1 if hours else 0] != c):
        raise ValueError(f'resblock_chain: input {tuple(x.shape)} does not fit {cin} channels')
    args = [x.float32(), jt.array(weights), jt.array(biases), _codes(layout, algorithm if ours else
                                                                    'direct' if algorithm in winograd.TILES
                                                                    else algorithm)]
    if head is not None:
        args += [jt.array(head[0]), jt.array(head[1])]
    define = '' if head is None else '#define SBVSR_WHEAD\n' if hours else '#define SBVSR_HEAD\n'
    with jt.no_grad():
        y = jt.code((x.shape[0], c) + tuple(x.shape[2:]), 'float32', args, cpu_header=CHAIN_HEAD,
                    cpu_src=define + (WINO_CHAIN_SRC if ours else CHAIN_SRC))
    y.compile_options = {'FLAGS:' + _flags(): 1}
    return y


_WINO_CPU: list = []


def winograd_available():
    """Whether our Winograd kernels (ops/winograd.py) run here: built with AVX2 intrinsics, CPU with AVX2/FMA."""
    if not _WINO_CPU:
        _need()
        y = jt.code((1,), 'int32', [], cpu_header=COMMON_HEAD + winograd.HEAD,
                    cpu_src='out0_p[0] = sbvsr_wino_cpu() ? 1 : 0;')
        y.compile_options = {'FLAGS:' + _flags(): 1}
        _WINO_CPU.append(bool(y.numpy()[0]))
    return _WINO_CPU[0]


def chain_algorithm(shape, layout='auto', algorithm='auto', head=None):
    """The algorithm :func:`resblock_chain` runs for x of ``shape`` [N,C,H,W] and 3x3
    blocks, or with ``head`` = (Ci, K) for its K x K head conv from Ci channels:
    'winograd' (oneDNN's), 'wino4' / 'wino2' (ours) or 'direct' (what 'auto'
    and ours become on this CPU)."""
    _need()
    n, c, h, w = shape
    if algorithm in winograd.TILES:
        return algorithm if own_winograd(c, algorithm) and own_winograd(c, algorithm, head) else 'direct'
    ci, k = head or (0, 0)
    dims = jt.array(np.array([n, c, h, w, 3, ci, k], np.int32))
    y = jt.code((1,), 'int32', [dims, _codes(layout, algorithm)], cpu_header=CHAIN_HEAD,
                cpu_src='SbvsrResChain& r = sbvsr_res_chain(in0_p[0], in0_p[1], in0_p[2], in0_p[3], in0_p[4], '
                        'in1_p[0], in1_p[1]);\n'
                        'out0_p[0] = in0_p[5] ? sbvsr_head(r, in0_p[5], in0_p[6]).wino : r.wino;')
    y.compile_options = {'FLAGS:' + _flags(): 1}
    return 'winograd' if int(y.numpy()[0]) else 'direct'


def upsample_tail(x, weights, layout='auto'):
    """The output convs after (conv, PixelShuffle(2)) per upsampling stage, on x [N,C,h,w].

    ``weights`` as models/fused_weights.py:tail_weights gives them. Same result as the plain
    layers to float rounding; no gradient.
    """
    _need()
    wu, bu, w1, b1, w2, b2 = weights
    if x.ndim != 4 or x.shape[1] != w1.shape[1]:
        raise ValueError(f'upsample_tail: input {tuple(x.shape)} does not fit {w1.shape[1]} channels')
    n, c, h, w = x.shape
    s = wu.shape[0]
    with jt.no_grad():
        args = [x.float32()] + [jt.array(v) for v in weights] + [_codes(layout)]
        y = jt.code((n, w2.shape[0], h << s, w << s), 'float32', args, cpu_header=TAIL_HEAD, cpu_src=TAIL_SRC)
    y.compile_options = {'FLAGS:' + _flags(): 1}
    return y


# C++: ConvGraph's op. in0 x [N, Cx, H, W]; in1 the plan (ints, see ConvGraph.__init__); in2 the transformed
# weights, in3 the biases, both layer after layer; out0 (and out1) the buffers' first channels as NCHW.
GRAPH_SRC = r'''
const int N = in0_shape0, Cx = in0_shape1, H = in0_shape2, W = in0_shape3;
const long long HW = (long long)H * W;
const int* q = in1_p;
int k = 0;
const int nbuf = q[k++];
std::vector<int> bc(q + k, q + k + nbuf);
k += nbuf;
std::vector<std::vector<float>> bufs(nbuf);
for (int b = 0; b < nbuf; b++) bufs[b].assign((size_t)N * HW * bc[b], 0.f);
{  // x into its buffer's channels [xo, xo + Cx), NCHW -> NHWC
    const int xb = q[k++], xo = q[k++], C = bc[xb];
    float* B = bufs[xb].data();
#ifdef _OPENMP
    #pragma omp parallel for
#endif
    for (long long r = 0; r < N * (long long)H; r++)
        for (int c = 0; c < Cx; c++) {
            const float* src = in0_p + ((r / H * Cx + c) * H + r % H) * W;
            float* dst = B + r * W * C + xo + c;
            for (int w = 0; w < W; w++) dst[w * C] = src[w];
        }
}
#if SBVSR_WINO
const float *U = in2_p, *bias = in3_p;
const int nl = q[k++];
for (int l = 0; l < nl; l++, k += 8) {
    const int sb = q[k], so = q[k + 1], Ci = q[k + 2], db = q[k + 3], dof = q[k + 4], Co = q[k + 5], d = q[k + 6];
    // dilation d: the d x d phase sub-images (every d-th row and column) are each a plain 3x3 conv
    for (int py = 0; py < std::min(d, H); py++)
        for (int px = 0; px < std::min(d, W); px++) {
            SbvsrAct x{bufs[sb].data() + so + (py * (long long)W + px) * bc[sb], HW * bc[sb],
                       (long long)d * W * bc[sb], (long long)d * bc[sb], {}};
            SbvsrAct y{bufs[db].data() + dof + (py * (long long)W + px) * bc[db], HW * bc[db],
                       (long long)d * W * bc[db], (long long)d * bc[db], {}};
            for (int c = 0; c < Ci; c += 8) x.go.push_back(c);
            for (int c = 0; c < Co; c += 8) y.go.push_back(c);
            sbvsr_wino_conv<4>(x, Ci, y, Co, N, (H - py + d - 1) / d, (W - px + d - 1) / d, U, bias, q[k + 7]);
        }
    U += 36LL * Ci * Co;
    bias += Co;
}
#else
throw std::runtime_error("sbvsr winograd: built without AVX2 intrinsics");
#endif
float* outs[2] = {out0_p, SBVSR_OUT1};
for (int o = 0; o < SBVSR_NOUT; o++, k += 2) {  // buffer q[k]'s first q[k + 1] channels, NHWC -> NCHW
    const int C = bc[q[k]], Co = q[k + 1];
    const float* B = bufs[q[k]].data();
    float* out = outs[o];
#ifdef _OPENMP
    #pragma omp parallel for
#endif
    for (long long r = 0; r < N * (long long)H; r++)
        for (int c = 0; c < Co; c++) {
            float* dst = out + ((r / H * Co + c) * H + r % H) * W;
            const float* src = B + r * W * C + c;
            for (int w = 0; w < W; w++) dst[w] = src[w * C];
        }
}
'''


def up8(c):
    """c rounded up to whole groups of 8 channels."""
    return -(-c // 8) * 8


class ConvGraph:
    """3x3 convolutions ('same' padding, any dilation, bias, then a leaky ReLU (slope 0.1) or
    nothing) between channel slices of NHWC buffers, each by F(4x4,3x3), in one op; no gradient.

    Why: PWC-Net's decoders put each layer's output in front of its input
    (dense connections). In one buffer laid out as the final concatenation
    every layer reads a contiguous channel suffix and writes the slot before
    it: no concatenation copies, and Winograd for their odd channel counts
    (zero-padded to a multiple of 8). The refiner's dilated convs run as
    d x d phase sub-images (strided views, no copies), each a plain 3x3 conv.
    Every buffer starts zeroed, so the padding channels read zeros.

    ``channels``: each buffer's channel count (multiples of 8); ``x_at``:
    (buffer, offset) of the input's channels; ``layers``: (weight [Co, Ci,
    3, 3], bias [Co], (buffer, offset) read, (buffer, offset) written,
    dilation, leaky), reading ceil8(Ci) channels and writing ceil8(Co);
    ``outputs``: (buffer, channels) each, returned NCHW from the buffer's
    first channels.
    """

    def __init__(self, channels, x_at, layers, outputs):
        if any(c % 8 for c in channels) or not 1 <= len(outputs) <= 2:
            raise ValueError('ConvGraph: buffers of whole groups of 8 channels and one or two outputs')
        plan, us, bs = [len(channels), *channels, *x_at, len(layers)], [], []
        for w, b, (sb, so), (db, do), d, leaky in layers:
            co, ci = w.shape[:2]
            ci8, co8 = up8(ci), up8(co)
            if so + ci8 > channels[sb] or do + co8 > channels[db]:
                raise ValueError(f'ConvGraph: a layer of {ci} -> {co} channels does not fit its buffers')
            wp = np.zeros((co8, ci8, 3, 3))
            wp[:co, :ci] = w
            us.append(winograd.transform_weights(wp, 4).ravel())
            bs.append(np.concatenate([np.asarray(b, np.float32), np.zeros(co8 - co, np.float32)]))
            plan += [sb, so, ci8, db, do, co8, d, 3 if leaky else 0]
        for b, c in outputs:
            plan += [b, c]
        self.channels, self.x_at, self.outputs = channels, x_at, outputs
        self.arrays = [jt.array(np.array(plan, np.int32)), jt.array(np.concatenate(us)), jt.array(np.concatenate(bs))]

    def __call__(self, x):
        _need()
        n, c, h, w = x.shape
        if x.ndim != 4 or self.x_at[1] + c > self.channels[self.x_at[0]]:
            raise ValueError(f'ConvGraph: input {tuple(x.shape)} does not fit its buffer')
        shapes = [(n, c, h, w) for _, c in self.outputs]
        src = (f'#define SBVSR_NOUT {len(shapes)}\n#define SBVSR_OUT1 '
               f"{'out1_p' if len(shapes) > 1 else 'nullptr'}\n" + GRAPH_SRC)
        with jt.no_grad():
            ys = jt.code(shapes, ['float32'] * len(shapes), [x.float32(), *self.arrays],
                         cpu_header=CHAIN_HEAD, cpu_src=src)
        for y in ys:
            y.compile_options = {'FLAGS:' + _flags(): 1}
        return ys
