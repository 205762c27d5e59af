"""SSIM's map of 8-bit frames in C, compiled once per user with the machine's C compiler.

Why: scipy's ``correlate1d`` filters line by line in scalar code; every
720x1280 frame of a run with ground truth took 0.15 s of it, CPU that a
CPU run takes from the network (bench/RESULTS.md). This kernel does the
same arithmetic (float64, the same symmetric 11-tap sums, the same SSIM
formula; no fast-math, no fused multiply-adds) in cache-sized bands of rows
with loops the compiler vectorises: 5x faster. Its map agrees with scipy's
to rounding (tests/test_host_speed.py: 1e-12 on the mean, also against a
2-D formulation written out in the test).

Built without ISA flags (the x86-64 baseline, SSE2: AVX2 gains ~10% here),
so one binary runs on every CPU that shares a home folder. It is built
with the compiler Jittor uses (``cc_path``), else gcc, cc, g++ or clang from
PATH, into ``<Jittor's home>/.cache/jittor-sbvsr/`` (atomically: MPI ranks
may build at once), named by a hash of the source and compiler. Where none
builds (no compiler; Windows, where Jittor uses MSVC) ``ssim_map`` returns
None and psnr_ssim.py uses scipy, with the same numbers.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np

_SOURCE = r'''
#include <stdint.h>
#define V 5  /* rows and columns lost on each side: only full 11x11 windows */

static void hpass(const double *__restrict s, double *__restrict o, long n, long c, const double *g) {
    const double g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];
    for (long i = 0; i < n; i++)
        o[i] = g0 * (s[i] + s[i + 10 * c]) + g1 * (s[i + c] + s[i + 9 * c]) + g2 * (s[i + 2 * c] + s[i + 8 * c])
             + g3 * (s[i + 3 * c] + s[i + 7 * c]) + g4 * (s[i + 4 * c] + s[i + 6 * c]) + g5 * s[i + 5 * c];
}

static void vpass(const double *__restrict p, double *__restrict o, long n, const double *g) {
    const double g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];
    for (long i = 0; i < n; i++)
        o[i] = g0 * (p[i] + p[i + 10 * n]) + g1 * (p[i + n] + p[i + 9 * n]) + g2 * (p[i + 2 * n] + p[i + 8 * n])
             + g3 * (p[i + 3 * n] + p[i + 7 * n]) + g4 * (p[i + 4 * n] + p[i + 6 * n]) + g5 * p[i + 5 * n];
}

/* a, b: h x w x c uint8; g: the 11 Gaussian taps; out: (h-10) x (w-10) x c SSIM map;
   hb: 4 * (band + 10) * (w-10) * c doubles; rb: 4 * w * c + 4 * (w-10) * c doubles */
void sbvsr_ssim_map(const uint8_t *a, const uint8_t *b, long h, long w, long c, const double *g,
                    double c1, double c2, long band, double *out, double *hb, double *rb) {
    const long wo = (w - 2 * V) * c, ho = h - 2 * V, rs = w * c;
    double *ra = rb, *rbb = rb + rs, *rq = rb + 2 * rs, *rp = rb + 3 * rs, *v = rb + 4 * rs;
    double *m1 = v, *m2 = v + wo, *e = v + 2 * wo, *e12 = v + 3 * wo;
    for (long y0 = 0; y0 < ho; y0 += band) {
        const long r = ho - y0 < band ? ho - y0 : band, rin = r + 2 * V;
        double *H0 = hb, *H1 = hb + rin * wo, *H2 = H1 + rin * wo, *H3 = H2 + rin * wo;
        for (long y = 0; y < rin; y++) {  /* the four local sums' rows: a, b, a^2 + b^2, ab */
            const uint8_t *pa = a + (y0 + y) * rs, *pb = b + (y0 + y) * rs;
            for (long i = 0; i < rs; i++) {
                double x = pa[i], z = pb[i];
                ra[i] = x; rbb[i] = z; rq[i] = x * x + z * z; rp[i] = x * z;
            }
            hpass(ra, H0 + y * wo, wo, c, g); hpass(rbb, H1 + y * wo, wo, c, g);
            hpass(rq, H2 + y * wo, wo, c, g); hpass(rp, H3 + y * wo, wo, c, g);
        }
        for (long y = 0; y < r; y++) {
            vpass(H0 + y * wo, m1, wo, g); vpass(H1 + y * wo, m2, wo, g);
            vpass(H2 + y * wo, e, wo, g); vpass(H3 + y * wo, e12, wo, g);
            double *o = out + (y0 + y) * wo;
            for (long i = 0; i < wo; i++) {
                double m12 = m1[i] * m2[i], msq = m1[i] * m1[i] + m2[i] * m2[i];
                o[i] = ((2 * m12 + c1) * (2 * (e12[i] - m12) + c2)) / ((msq + c1) * ((e[i] - msq) + c2));
            }
        }
    }
}
'''
_FLAGS = ['-O3', '-fPIC', '-shared', '-ffp-contract=off', '-fno-fast-math']
BAND = 32  # rows per band: the 4 planes of (BAND + 10) rows of a 720p frame stay in L2/L3
_lib = []  # [the function, or None where it cannot be built]; built on first use


def compiler():
    """The C compiler to build with (None: none found, or Windows)."""
    if sys.platform == 'win32':
        return None
    for cc in (os.environ.get('cc_path'), 'gcc', 'cc', 'g++', 'clang'):
        found = cc and shutil.which(cc)
        if found:
            return found
    return None


def _build(cc):
    from ..runtime import jittor_home
    from ..utils.files import temp_name
    tag = hashlib.sha256('\0'.join([_SOURCE, cc, *_FLAGS]).encode('utf-8')).hexdigest()[:16]
    folder = os.path.join(jittor_home(), '.cache', 'jittor-sbvsr')
    path = os.path.join(folder, f'ssim-{tag}.so')
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        src, tmp = temp_name(path[:-3] + '.c'), temp_name(path)
        try:
            with open(src, 'w', encoding='utf-8') as f:
                f.write(_SOURCE)
            subprocess.run([cc, '-x', 'c', src, *_FLAGS, '-o', tmp], check=True, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120)
            os.replace(tmp, path)
        finally:
            for p in (src, tmp):
                if os.path.exists(p):
                    os.unlink(p)
    fn = ctypes.CDLL(path).sbvsr_ssim_map
    ptr, n, x = ctypes.c_void_p, ctypes.c_long, ctypes.c_double
    fn.argtypes = [ptr, ptr, n, n, n, ptr, x, x, n, ptr, ptr, ptr]
    fn.restype = None
    return fn


def _function():
    if not _lib:
        cc = compiler()
        try:
            _lib.append(_build(cc) if cc else None)
        except (OSError, subprocess.SubprocessError):
            _lib.append(None)  # scipy instead: slower, the same numbers
    return _lib[0]


def ssim_map(a, b, g, c1, c2):
    """SSIM map of the full 11x11 windows of two uint8 HxWxC frames (float64), or None where the
    kernel cannot be built."""
    fn = _function()
    if fn is None:
        return None
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    g = np.ascontiguousarray(g, np.float64)
    h, w, c = a.shape
    out = np.empty((h - 10, w - 10, c), np.float64)
    hb = np.empty(4 * (BAND + 10) * (w - 10) * c, np.float64)
    rb = np.empty(4 * w * c + 4 * (w - 10) * c, np.float64)
    fn(a.ctypes.data, b.ctypes.data, h, w, c, g.ctypes.data, c1, c2, BAND, out.ctypes.data,
       hb.ctypes.data, rb.ctypes.data)
    return out
