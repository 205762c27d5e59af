"""Make an installed Jittor 1.3.8.5 usable with CUDA 13 offline (GPU check only).

Not part of jittor-sbvsr: it edits the *installed copy* of Jittor under --site
(a throw-away --target folder) and builds a CUDA "home" that Jittor's
discovery understands, out of the system nvcc and the pip nvidia-* packages:

  <home>/bin/nvcc      wrapper that execs the real nvcc
  <home>/include/*     links to nvcc's include dir + every site-packages/nvidia/*/include
  <home>/lib64/*       links to nvcc's lib dir + every site-packages/nvidia/*/lib (never libcuda)
                       + unversioned names (libcublas.so...) + cuDNN 8 names for cuDNN 9

Jittor 1.3.8.5 itself needs changes to build against CUDA 13 / cuDNN 9 and run
on sm_90: tools/jittor_cuda_patch.py makes them (the same ones env/setup.sh
makes on a user's machine; each is logged, and is a no-op when already applied).
One more is made here only, for this bare machine:
  P5 compile_extern.py: a CUDA library that fails to load is a warning, not a
     fatal error. The CUDA home built here from pip packages may lack a library
     (then conv_opt=1 below); on a real installation a library that does not
     load is an error worth stopping for, so env/setup.sh does not do this.
Prints shell `export` lines to --env-file.
"""
import argparse
import glob
import os
import re
import shutil
import site
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools'))
import jittor_cuda_patch  # noqa: E402


def log(*a):
    print('[jt_cuda_setup]', *a, flush=True)


def find_nvcc():
    cands = [os.environ.get('NVCC'), shutil.which('nvcc'), '/usr/local/cuda/bin/nvcc',
             '/usr/local/cuda-13.0/bin/nvcc', '/usr/bin/nvcc']
    for sp in site_dirs():
        cands += sorted(glob.glob(os.path.join(sp, 'nvidia', '*', 'bin', 'nvcc')))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def site_dirs():
    out = []
    try:
        out += site.getsitepackages()
    except Exception:
        pass
    try:
        out.append(site.getusersitepackages())
    except Exception:
        pass
    out += [p for p in sys.path if p.endswith('site-packages') or p.endswith('dist-packages')]
    seen, res = set(), []
    for p in out:
        if p and os.path.isdir(p) and p not in seen:
            seen.add(p)
            res.append(p)
    return res


def nvcc_dryrun(nvcc):
    """TOP, include dirs and lib dirs as nvcc itself uses them (follows wrapper scripts)."""
    tmp = '/tmp/_jt_dry'
    os.makedirs(tmp, exist_ok=True)
    src = os.path.join(tmp, 'e.cu')
    with open(src, 'w', encoding='utf-8') as f:
        f.write('__global__ void k(){}\n')
    r = subprocess.run([nvcc, '--dryrun', '-c', src, '-o', os.path.join(tmp, 'e.o')],
                       capture_output=True, text=True, timeout=60, encoding='utf-8')
    text = r.stdout + r.stderr
    top = re.search(r'#\$ TOP=(\S+)', text)
    top = os.path.realpath(top.group(1)) if top else None
    incs, libs = [], []
    m = re.search(r'#\$ INCLUDES=(.*)', text)
    if m:
        incs += [os.path.realpath(x) for x in re.findall(r'-I"?([^"\s]+)', m.group(1))]
    m = re.search(r'#\$ LIBRARIES=(.*)', text)
    if m:
        libs += [os.path.realpath(x) for x in re.findall(r'-L"?([^"\s]+)', m.group(1))]
    if top:
        incs += [os.path.join(top, 'include'), os.path.join(top, 'targets', 'x86_64-linux', 'include')]
        libs += [os.path.join(top, 'lib64'), os.path.join(top, 'lib'),
                 os.path.join(top, 'targets', 'x86_64-linux', 'lib')]
    libs = [d for d in libs if not d.rstrip('/').endswith('stubs')]
    return top, incs, libs


def uniq_dirs(ds):
    seen, out = set(), []
    for d in ds:
        if d and os.path.isdir(d):
            r = os.path.realpath(d)
            if r not in seen:
                seen.add(r)
                out.append(d)
    return out


def link_entries(src_dirs, dst, pred=lambda name: True):
    os.makedirs(dst, exist_ok=True)
    n = 0
    for d in src_dirs:
        for name in sorted(os.listdir(d)):
            if not pred(name):
                continue
            p = os.path.join(dst, name)
            if os.path.lexists(p):
                continue
            os.symlink(os.path.join(d, name), p)
            n += 1
    return n


def ver_key(name):
    return [int(x) for x in re.findall(r'\d+', name.split('.so', 1)[1])] if '.so' in name else []


def ensure_unversioned(lib64, base):
    """lib64/lib<base>.so -> the highest lib<base>.so.N* there; returns the target or None."""
    plain = os.path.join(lib64, f'lib{base}.so')
    cands = [n for n in os.listdir(lib64) if n.startswith(f'lib{base}.so.')]
    if os.path.exists(plain):
        return os.path.realpath(plain)
    if not cands:
        return None
    best = max(cands, key=ver_key)
    os.symlink(os.path.realpath(os.path.join(lib64, best)), plain)
    return os.path.realpath(plain)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--site', required=True, help='folder where jittor is installed (pip --target)')
    ap.add_argument('--home', default='/tmp/jtcuda', help='synthetic CUDA home to create')
    ap.add_argument('--env-file', required=True)
    ap.add_argument('--no-patch', action='store_true', help='only build the CUDA home')
    a = ap.parse_args()
    env = {}

    nvcc = find_nvcc()
    if not nvcc:
        log('FATAL: no nvcc found (PATH, /usr/local/cuda/bin, site-packages/nvidia/*/bin)')
        return 2
    v = subprocess.run([nvcc, '--version'], capture_output=True, text=True, encoding='utf-8').stdout.strip().splitlines()
    log('nvcc:', nvcc, '|', v[-1] if v else '?')
    try:
        cuda_version = jittor_cuda_patch.parse_cuda_version('\n'.join(v))
    except jittor_cuda_patch.PatchError as e:
        log('FATAL:', e)
        return 2
    top, incs, libs = nvcc_dryrun(nvcc)
    log('nvcc TOP:', top)
    sp_incs, sp_libs = [], []
    for sp in site_dirs():
        sp_incs += sorted(glob.glob(os.path.join(sp, 'nvidia', '*', 'include')))
        sp_libs += sorted(glob.glob(os.path.join(sp, 'nvidia', '*', 'lib')))
        sp_libs += sorted(glob.glob(os.path.join(sp, 'nvidia', '*', 'lib64')))
    incs, libs = uniq_dirs(incs + sp_incs), uniq_dirs(libs + sp_libs)
    log('include dirs (first wins):', incs)
    log('lib dirs (first wins):', libs)

    home = a.home
    if os.path.isdir(home):
        shutil.rmtree(home)
    os.makedirs(os.path.join(home, 'bin'))
    wrapper = os.path.join(home, 'bin', 'nvcc')
    with open(wrapper, 'w', encoding='utf-8') as f:
        real = os.path.join(top, 'bin', 'nvcc') if top and os.path.isfile(os.path.join(top, 'bin', 'nvcc')) \
            else os.path.realpath(nvcc)
        f.write(f'#!/bin/sh\nexec "{real}" "$@"\n')
    os.chmod(wrapper, 0o755)
    n_inc = link_entries(incs, os.path.join(home, 'include'))
    lib64 = os.path.join(home, 'lib64')
    n_lib = link_entries(libs, lib64, lambda n: n.startswith('lib') and '.so' in n
                         and not n.startswith('libcuda.so') and not n.startswith('libnvidia-'))
    log(f'linked {n_inc} include entries, {n_lib} libraries into {home}')

    found = {}
    for base in ('cudart', 'cublas', 'cublasLt', 'curand', 'cufft', 'cudnn'):
        found[base] = ensure_unversioned(lib64, base)
        hdr = {'cudart': 'cuda_runtime.h', 'cublas': 'cublas.h', 'cublasLt': 'cublasLt.h',
               'curand': 'curand.h', 'cufft': 'cufft.h', 'cudnn': 'cudnn.h'}[base]
        h = os.path.join(home, 'include', hdr)
        log(f'  lib{base}.so -> {found[base]} ; {hdr}: {"yes" if os.path.exists(h) else "MISSING"}')
    cudnn_major = None
    vh = os.path.join(home, 'include', 'cudnn_version.h')
    if os.path.exists(vh):
        m = re.search(r'#define CUDNN_MAJOR\s+(\d+)', open(vh, encoding='utf-8').read())
        cudnn_major = int(m.group(1)) if m else None
        mi = re.search(r'#define CUDNN_MINOR\s+(\d+)', open(vh, encoding='utf-8').read())
        log(f'  cuDNN header version {cudnn_major}.{mi.group(1) if mi else "?"}')
    if cudnn_major and cudnn_major >= 9:
        for old, new in (('ops_infer', 'ops'), ('ops_train', 'ops'), ('cnn_infer', 'cnn'), ('cnn_train', 'cnn')):
            p = os.path.join(lib64, f'libcudnn_{old}.so')
            cands = [n for n in os.listdir(lib64) if n.startswith(f'libcudnn_{new}.so')]
            if not os.path.lexists(p) and cands:
                os.symlink(os.path.realpath(os.path.join(lib64, max(cands, key=ver_key))), p)
        log('  cuDNN 9: linked libcudnn_{ops,cnn}_{infer,train}.so (cuDNN 8 names Jittor preloads)')
    if not found['cudart']:
        log('FATAL: libcudart not found')
        return 2

    env['nvcc_path'] = wrapper
    env['LD_LIBRARY_PATH'] = lib64 + (':' + os.environ['LD_LIBRARY_PATH'] if os.environ.get('LD_LIBRARY_PATH') else '')
    env['use_cutt'] = '0'         # else Jittor downloads cutt
    env['use_nccl'] = '0'         # else Jittor downloads nccl when mpicc exists
    env['mpicc_path'] = ''        # no MPI ops (not needed here)
    env['FIX_TORCH_ERROR'] = '0'  # Jittor would import torch into the process
    if not (found['cudnn'] and found['cufft']):
        env['conv_opt'] = '1'     # Jittor then sets up only cublas + curand
        log('  cudnn or cufft missing: conv_opt=1 (Jittor skips cudnn and cufft)')

    if not a.no_patch:
        jt = os.path.join(a.site, 'jittor')
        if not os.path.isdir(jt):
            log('FATAL: no jittor in', a.site)
            return 2
        for change, status in jittor_cuda_patch.patch_jittor(jt, cuda_version, cudnn_major):
            log(f'{change}: {status}')
        hdrs = ''.join(open(p, errors='replace', encoding='utf-8').read()
                       for p in glob.glob(os.path.join(home, 'include', 'cudnn*.h')))
        for sym in ('cudnnSetRNNDescriptor_v6', 'cudnnFindConvolutionForwardAlgorithmEx',
                    'cudnnGetConvolutionForwardAlgorithm_v7', 'cudnnFindConvolutionBackwardDataAlgorithmEx',
                    'cudnnSetConvolutionMathType') if hdrs else ():
            log(f'  cudnn header has {sym}: {sym in hdrs}')
        # P5 (this machine only, see above)
        ce = os.path.join(jt, 'compile_extern.py')
        st = jittor_cuda_patch.edit_text(ce, '            LOG.f(msg)\n', '            LOG.w(msg)  # gpu-check patch P5\n')
        log(f'P5 compile_extern.py LOG.f -> LOG.w: {st}')

    with open(a.env_file, 'w', encoding='utf-8') as f:
        for k, v in env.items():
            f.write(f"export {k}='{v}'\n")
    log('env:', env)
    return 0


if __name__ == '__main__':
    sys.exit(main())
