"""The fused oneDNN path under every instruction set this CPU supports, in subprocesses.

oneDNN picks other kernels and activation layouts per ISA (blocked nChw8c
with AVX2, NHWC brgemm kernels with AVX-512); DNNL_MAX_CPU_ISA caps what it
uses, so one machine checks the lower levels too. Each level runs every
layout of tests/isa_check.py against Jittor's own operators (chains with
and without their conv before them) and the deployed engine must keep
every fast path without a warning.
"""
import json
import os
import sys

import pytest

from conftest import ROOT, run_child

import jittor_sbvsr  # noqa: F401
from jittor_sbvsr.ops import fused_conv


def _cpu_flags():
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return next((set(ln.split(':', 1)[1].split()) for ln in f if ln.startswith('flags')), set())
    except OSError:
        return set()


FLAGS = _cpu_flags()
# (DNNL_MAX_CPU_ISA value, the ISA oneDNN must then report, CPU flags it needs)
LEVELS = [('AVX2', 'avx2', {'avx2', 'fma'}),
          ('AVX512_CORE', 'avx512_core', {'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'}),
          (None, None, set())]  # native: no cap


@pytest.mark.parametrize('cap, expect, needs', LEVELS, ids=[lv[0] or 'native' for lv in LEVELS])
def test_fused_path_under_isa(cap, expect, needs):
    if not fused_conv.available():
        pytest.skip('no oneDNN')
    if not needs <= FLAGS:
        pytest.skip(f'this CPU has no {cap}')
    env = dict(os.environ)
    env.pop('DNNL_MAX_CPU_ISA', None)
    if cap:
        env['DNNL_MAX_CPU_ISA'] = cap
    r = run_child([sys.executable, str(ROOT / 'tests' / 'isa_check.py'), str(ROOT)], env=env,
                  capture_output=True, text=True, timeout=900, encoding='utf-8')
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith('ISA_CHECK ')), None)
    assert r.returncode == 0 and line, r.stderr[-3000:]
    res = json.loads(line[len('ISA_CHECK '):])
    if expect:
        assert res['isa'] == expect
    bad = {k: v for k, v in res['errors'].items() if not v <= 1e-5}
    assert not bad, bad
    # per width: 4 layouts x 4 shapes x (chain, tail, composed, 2 chains after their conv),
    # 2 x 2 Winograd x (chain, 2 after their conv), deployed (tail, 2 after their conv)
    assert len(res['errors']) == 2 * (4 * 4 * 5 + 2 * 2 * 3 + 3)
    assert res['warnings'] == []
    # this oneDNN has Winograd kernels on AVX-512 only, for its blocked layouts
    wino = res['isa'].startswith('avx512')
    assert set(res['winograd'].values()) == {'winograd' if wino else 'direct'}, res['winograd']
    # ours (ops/winograd.py) from AVX2 up, on widths of 8k channels (both here)
    ours = res['isa'].startswith(('avx2', 'avx512'))
    for paths in res['paths'].values():
        w, f = paths.pop('winograd'), paths.pop('winograd flow')
        assert w.startswith('on' if wino or ours else 'not available'), w
        assert f == 'on' if ours else f.startswith('not available'), f
        assert paths == {'fused chains': 'on', 'fused tail': 'on', 'fused warp': 'on', 'composed tail': 'on'}, paths
