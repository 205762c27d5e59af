"""A loaded PWC_Recons deployed for inference: fast paths built once, each one checked.

Why: the model class stays the reference's layers (training and gradients
need exactly them) and carries no inference switches. Deploying, in the
spirit of RepVGG's re-parameterisation, builds once what inference runs
instead: the ResBlock chains, each with the conv before it, as fused oneDNN
ops on the CPU, the tail fused or composed into one LR convolution
(models/tails.py), the feature warp in one pass (ops/warp.py), PWC-Net's
decoders and refiner by our Winograd convolutions (:func:`flow_graphs`,
which the engine passes to PWC_Recons.neighbour_flows). Whether a
fast path runs right depends on the machine (oneDNN picks other kernels
and layouts per instruction set), so each is run once on a small probe
against Jittor's plain operators; one that
raises or differs by more than :data:`TOL` is switched off for the run
with one warning line, and the run goes on with the plain path. Weights
loaded into the network afterwards are not seen: deploy again.
"""
import sys
import time

import numpy as np
import jittor as jt
from jittor import nn

from ..ops import fused_conv, warp
from .fused_weights import chain_weights, head_weights
from .tails import ComposedTail, FusedTail, PlainTail, tail_layers

TOL = 1e-5  # largest difference from the plain ops, relative to the output's peak (at least 1)
# PWC_Recons' methods that run one conv, then a ResBlock chain: (the conv's Sequential, the chain)
FUSED_OPS = {'frame_features': ('in_conv', 'extra_feat'), 'trunk': ('fusion_conv', 'recons_net')}


class FusedChain:
    """A ResBlock chain, after a ``head`` conv if given, as one fused oneDNN op, with a snapshot of its weights."""

    def __init__(self, blocks, layout='auto', algorithm='direct', head=None):
        w, b = chain_weights(blocks)
        self.in_channels = (w if head is None else head.weight).shape[1]
        self.layout, self.algorithm = layout, algorithm
        w, b, hw = fused_conv.chain_arrays(w, b, algorithm, None if head is None else head_weights(head, w))
        self.w, self.b = jt.array(w), jt.array(b)
        self.head = None if hw is None else [jt.array(a) for a in hw]

    def __call__(self, x):
        return fused_conv.resblock_chain(x, self.w, self.b, self.layout, self.algorithm, self.head)


def _only_conv(seq):
    """The one layer of a Sequential holding one Conv2d (in_conv, fusion_conv)."""
    layers = list(seq)
    if len(layers) != 1 or not isinstance(layers[0], nn.Conv2d):
        raise ValueError(f'a fused head takes one Conv2d, not {[type(m).__name__ for m in layers]}')
    return layers[0]


def _layer(conv, src, dst, leaky):
    """A 'same' 3x3 conv of PWC-Net as fused_conv.ConvGraph takes it."""
    d = conv.dilation[0]
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (d, d) or conv.dilation != (d, d) \
            or conv.groups != 1 or conv.bias is None:
        raise ValueError('a PWC-Net layer that is no same-padded 3x3 conv with a bias')
    return conv.weight.numpy(), conv.bias.numpy(), src, dst, d, leaky


def flow_graphs(pwc):
    """{decoder name: its dense layers and flow conv, 'moduleRefiner': the refiner} of PWC-Net
    ``pwc`` (models/flow_pwc.py:Network) as ConvGraphs, as Network.decode takes them.

    A decoder's buffer holds its final concatenation [o5 | o4 | o3 | o2 | o1 | input]; layer k reads
    the suffix from o(k-1) on and writes o(k). The refiner's layers alternate between two buffers.
    """
    graphs = {}
    for name in pwc.DECODERS:
        dec = getattr(pwc, name)
        convs = [getattr(dec, m)[0] for m in dec.LAYERS]
        cin, total = convs[0].in_channels, sum(c.out_channels for c in convs)
        at, layers = total, []
        for conv in convs:
            layers.append(_layer(conv, (0, at), (0, at - conv.out_channels), True))
            at -= conv.out_channels
        layers.append(_layer(dec.moduleSix[0], (0, 0), (1, 0), False))
        graph = fused_conv.ConvGraph([total + fused_conv.up8(cin), 8], (0, total), layers, [(0, total + cin), (1, 2)])
        graphs[name] = lambda x, g=graph: dict(zip(('feat', 'flow'), g(x)))
    convs = [m for m in pwc.moduleRefiner.moduleMain if isinstance(m, nn.Conv)]
    width = max(c.out_channels for c in convs[:-1])
    layers = [_layer(c, (1 if i % 2 else 2, 0) if i else (0, 0), (2 if i % 2 else 1, 0), True)
              for i, c in enumerate(convs[:-1])]
    layers.append(_layer(convs[-1], layers[-1][3], (3, 0), False))
    graph = fused_conv.ConvGraph([fused_conv.up8(convs[0].in_channels), width, width, 8], (0, 0), layers, [(3, 2)])
    graphs['moduleRefiner'] = lambda x, g=graph: g(x)[0]
    return graphs


class SelfCheckFailed(Exception):
    pass


def _reason(e):
    """One short line for an exception (Jittor's carry a '[Reason]: ...' line deep inside)."""
    text = str(e)
    lines = [ln.split('[Reason]:', 1)[1].strip() for ln in text.splitlines() if '[Reason]:' in ln]
    line = lines[0] if lines else (text.strip().splitlines() or [type(e).__name__])[0]
    return f'{type(e).__name__}: {line[:160]}'


def compare(fast, plain, probe, ref=None):
    """Raise SelfCheckFailed unless fast(probe) equals plain(probe) (or ``ref``, computed so) within TOL."""
    with jt.no_grad():
        ref = plain(probe).numpy() if ref is None else ref
        got = fast(probe).numpy()
    if got.shape != ref.shape:
        raise SelfCheckFailed(f'output {got.shape} instead of {ref.shape}')
    err = float(np.abs(got.astype(np.float64) - ref).max()) / max(1.0, float(np.abs(ref).max()))
    if not np.isfinite(err) or err > TOL:
        raise SelfCheckFailed(f'differs from Jittor\'s ops by {err:.1e} (allowed {TOL:.0e})')


def _probe(c, h, w, seed):
    return jt.array(np.random.RandomState(seed).standard_normal((1, c, h, w)).astype(np.float32))


class InferenceNet:
    """``net`` for inference, with the fast paths asked for that pass their self-check.

    ``fused``: :data:`FUSED_OPS` (a conv, then a ResBlock chain) and the
    layered tail as fused oneDNN ops (CPU with oneDNN only), and the
    feature warp in one pass (ops/warp.py, CPU); ``winograd``:
    the chains' 3x3 convs by Winograd, ours (ops/winograd.py: AVX2 and up)
    or oneDNN's (AVX-512), whichever is faster here;
    ``compose``: the tail as one LR convolution; ``layout`` the fused ops'
    activation layout (ops/fused_conv.py). ``warn`` takes the warning lines
    (default: stderr). ``paths`` says what runs and why.
    """

    def __init__(self, net, fused=True, compose=True, layout='auto', warn=None, winograd=True):
        self.net, self.layout = net, layout
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.frame_features, self.trunk, self.align = net.frame_features, net.trunk, net.align
        self.tail = PlainTail(net)
        self.paths = {}
        self.probe_seconds = 0.0  # of build_seconds: running the probes
        self._refs = {}  # plain outputs of the probes, by (plain op, probe)
        t0 = time.perf_counter()
        up, out = tail_layers(net)
        c = net.out_conv[0].weight.shape[1]
        if not fused or not fused_conv.available():
            why = 'off (--no_fused)' if not fused else 'not available (needs the CPU with oneDNN)'
            self.paths['fused chains'] = self.paths['fused tail'] = why
            self.paths['winograd'] = 'off (no fused chains)'
        else:
            ops = {k: hb for k, hb in FUSED_OPS.items() if len(getattr(net, hb[1]))}
            build = lambda algorithm: lambda: {k: FusedChain(getattr(net, b), layout, algorithm,  # noqa: E731
                                                             _only_conv(getattr(net, h))) for k, (h, b) in ops.items()}
            # two probe sizes: oneDNN takes its F(2x2,3x3) Winograd kernel for
            # tiny images and F(4x4,3x3) from 16x16 up; each must be checked
            # the same probes for the direct and the Winograd chains: plain's outputs are computed once (_try)
            cases = lambda f: [(op, getattr(net, k), _probe(op.in_channels, *hw, i))  # noqa: E731
                               for i, (k, op) in enumerate(f.items()) for hw in ((9, 13), (16, 20))]
            made = self._try('fused chains', 'the fused oneDNN ResBlock chains', '--no_fused', build('direct'), cases)
            algorithm, why = self._winograd(net, ops, layout) if made and winograd else (None, None)
            if not made or not winograd:
                self.paths['winograd'] = 'off (--no_winograd)' if made else 'off (no fused chains)'
            elif algorithm is None:
                self.paths['winograd'] = why
            else:
                wino = self._try('winograd', 'the Winograd convolutions of the fused chains', '--no_winograd',
                                 build(algorithm), cases, instead='direct convolutions')
                direct = [h for h, _ in ops.values() if wino and fused_conv.chain_algorithm(
                    (1, c, 16, 20), layout, algorithm, tuple(getattr(net, h)[0].weight.shape[1:3])) == 'direct']
                if wino:
                    self.paths['winograd'] += f" ({why}{'; direct for ' + ', '.join(direct) if direct else ''})"
                made = wino or made
            for k, chain in (made or {}).items():
                setattr(self, k, chain)
            if up and FusedTail.fits(up, out):
                made = self._try('fused tail', 'the fused oneDNN tail', '--no_fused',
                                 lambda: FusedTail(up, out, layout),
                                 lambda f: [(f, self.tail, _probe(c, 6, 7, 2))])
                self.tail = made or self.tail
            else:
                self.paths['fused tail'] = 'not applicable to these layers'
        if not fused or jt.flags.use_cuda:
            self.paths['fused warp'] = 'off (--no_fused)' if not fused else 'not available (a CPU op)'
        else:
            # the probe: features and, in its last two channels, a flow of a few pixels
            split = lambda f: lambda z: f(z[:, :-2], 3.0 * z[:, -2:])  # noqa: E731
            made = self._try('fused warp', 'the one-pass feature warp', '--no_fused', lambda: warp.warp_features,
                             lambda f: [(split(f), split(net.align), _probe(c + 2, 16, 20, 4))])
            self.align = made or self.align
        self.flow_layers = {}  # Network.decode's fast layers (models/flow_pwc.py)
        if not fused or not winograd or not fused_conv.available() or not fused_conv.winograd_available():
            self.paths['winograd flow'] = ('off (--no_fused)' if not fused else 'off (--no_winograd)' if not winograd
                                           else 'not available (ours needs AVX2 and FMA, on the CPU with oneDNN)')
        else:
            pwc = net.flow_net.moduleNetwork
            both = lambda d: jt.concat([d['flow'], d['feat']], 1)  # noqa: E731 (a decoder's two outputs)
            cases = lambda f: [(lambda z, g=f[k]: both(g(z)), lambda z, d=getattr(pwc, k): both(d.dense(z)),  # noqa: E731
                                _probe(getattr(pwc, k).moduleOne[0].in_channels, 11, 13, 10 + i))
                               for i, k in enumerate(pwc.DECODERS)] + [
                (f['moduleRefiner'], pwc.moduleRefiner, _probe(pwc.moduleRefiner.moduleMain[0].in_channels, 36, 40, 9))]
            self.flow_layers = self._try('winograd flow', 'the Winograd PWC-Net decoders', '--no_winograd',
                                         lambda: flow_graphs(pwc), cases, instead='their direct convolutions') or {}
        if not compose:
            self.paths['composed tail'] = 'off (--no_compose)'
        else:
            layered = self.tail
            made = self._try('composed tail', 'the composed tail', '--no_compose',
                             lambda: ComposedTail(up, out, layered),
                             lambda f: [(f, PlainTail(net), _probe(c, *self._fitting(f), 3))])
            self.tail = made or self.tail
        self.build_seconds = time.perf_counter() - t0

    def _winograd(self, net, ops, layout):
        """(algorithm, why) for the chains' 3x3 convs: ours (ops/winograd.py) on every CPU with AVX2,
        else oneDNN's where it has it (AVX-512 only); (None, why) if neither. Ours also where both
        run: not timed against oneDNN's per run, so that a run gives the same bits every time (on a
        2-core Zen 4 ours took 0.6x oneDNN's time on a 128-channel block at 48x64, 1.0-1.1x at
        180x320: bench/RESULTS.md)."""
        c = getattr(net, next(iter(ops.values()))[1])[0].conv1.weight.shape[0]
        if fused_conv.own_winograd(c, 'wino4'):
            return 'wino4', 'ours, F(4x4,3x3)'
        if fused_conv.chain_algorithm((1, c, 16, 20), layout, 'auto') == 'winograd':
            return 'auto', "oneDNN's"
        return None, ('not available (ours needs AVX2 and FMA and channels in groups of 8; '
                      "oneDNN's has kernels for AVX-512's blocked layouts only)")

    @staticmethod
    def _fitting(tail):
        n = next(n for n in range(4, 64) if tail.fits(n) and tail.fits(n + 1))
        return n, n + 1

    def _try(self, key, name, flag, build, cases, instead="Jittor's plain ops"):
        """build() checked on cases(built); None (with one warning line) if it fails."""
        try:
            made = build()
            jt.sync_all(True)  # Jittor is lazy: time the probes' compute, not what was queued before
            t0 = time.perf_counter()
            try:
                for fast, plain, probe in cases(made):
                    # bound methods are equal where their object and function are: net.trunk twice is one key
                    case = (plain, tuple(probe.shape), float(probe[0, 0, 0, 0].item()))
                    if case not in self._refs:
                        with jt.no_grad():
                            self._refs[case] = plain(probe).numpy()
                    compare(fast, plain, probe, self._refs[case])
                jt.sync_all(True)
            finally:
                self.probe_seconds += time.perf_counter() - t0
            self.paths[key] = 'on'
            return made
        except Exception as e:  # noqa: BLE001 (any failure of a fast path means: use the plain one)
            why = str(e) if isinstance(e, SelfCheckFailed) else _reason(e)
            self.paths[key] = f'failed its self-check: {why}'
            self.warn(f'warning: {name} failed the self-check on this machine ({why}); '
                      f'running {instead} instead for this run ({flag} skips the fast path)')
            return None

    def describe(self):
        on = [k for k, v in self.paths.items() if v.startswith('on')]
        return (f"fast paths: {', '.join(on) if on else 'none'} (oneDNN layout {self.layout}; built in "
                f'{self.build_seconds:.2f} s, self-check {self.probe_seconds:.2f} s); ' + '; '.join(f'{k}: {v}' for k, v in self.paths.items()))

    # -- what the engine runs (and frame_features, trunk, tail) --------------
    def recons_forward(self, frames, feats=None, keys=None, flows=None):
        return self.net.recons_forward(frames, feats, keys, flows, parts=self)
