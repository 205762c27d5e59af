"""Rebuild the public parity case (tests/reference/public_case) with the original PyTorch code.

Run it with a Python that has torch, numpy, Pillow and scikit-image, pointing
``--upstream`` at an extracted copy of the original repository (its ``code/``
folder, or the folder above it). It is a measuring tool: nothing in the
package imports it, and the tests only read what it wrote. It imports the
original model from that copy at run time and changes three things while it
runs, all of them needed to run that code on a current PyTorch on a CPU:

- the CuPy cost volume becomes a torch op with the same definition
  (``out[(dy+4)*9 + (dx+4)] = sum_c first * shifted second / C``, zero outside);
- ``.cuda()`` and ``Tensor.to('cuda')`` do nothing;
- ``grid_sample`` calls that name no ``align_corners`` get ``True``, what
  PyTorch 0.4.1 (the version the original targets) did.

``case`` writes LR/, HR/, upstream_sr/, upstream_kernel/ and upstream_raw.npz
into ``--out``; ``--check DIR`` then compares them with DIR: the frames value for
value, the outputs within float32 rounding (LIMITS).
``sensitivity`` re-runs the case with one deliberate flow-branch error at a
time and prints how far the PNGs move (the same keys as sensitivity.json).
The frames' geometry (photo, crop origin, per-frame offsets) comes from the
case.json it is given, so the same case is rebuilt without drawing it again.
"""
import argparse
import contextlib
import importlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / 'tests' / 'reference' / 'public_case'
N_SEQ, SCALE = 5, 4


def ours(name):
    """A numpy-only module of this package, imported without the package's start-up checks
    (they expect this project's environment; this tool runs in PyTorch's)."""
    if 'jittor_sbvsr' not in sys.modules:
        root = types.ModuleType('jittor_sbvsr')
        root.__path__ = [str(ROOT / 'jittor_sbvsr')]
        sys.modules['jittor_sbvsr'] = root
    return importlib.import_module(f'jittor_sbvsr.{name}')


# -- running the original on a current PyTorch, on a CPU -----------------------------------

_ALIGN = {'feature': True, 'decoder': True}   # grid_sample's corner rule per warp
_TRANSPOSED = [False]                         # cost-volume channel order swapped (sensitivity)


def _cost_volume(first, second):
    import torch
    c, h, w = first.shape[1:]
    padded = torch.nn.functional.pad(second, (4, 4, 4, 4))
    out = []
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            shifted = padded[:, :, 4 + dy:4 + dy + h, 4 + dx:4 + dx + w]
            out.append((first * shifted).sum(1) / c)
    vol = torch.stack(out, 1)
    if _TRANSPOSED[0]:
        vol = vol.view(-1, 9, 9, h, w).transpose(1, 2).reshape(-1, 81, h, w)
    return vol


def load_original(upstream):
    """The original ``model`` package, importable and runnable on this machine."""
    import torch
    import torch.nn.functional as F
    code = Path(upstream)
    if not (code / 'model' / 'pwc_recons.py').is_file():
        code = code / 'code'
    if not (code / 'model' / 'pwc_recons.py').is_file():
        raise SystemExit(f'no model/pwc_recons.py in {upstream} or its code/ folder')
    corr = types.ModuleType('model.correlation.correlation')
    corr.FunctionCorrelation = lambda tensorFirst, tensorSecond: _cost_volume(tensorFirst, tensorSecond)
    pkg = types.ModuleType('model.correlation')
    pkg.correlation = corr
    sys.modules.update({'model.correlation': pkg, 'model.correlation.correlation': corr})

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    to = torch.Tensor.to

    def to_cpu(self, *args, **kw):
        args = tuple('cpu' if str(a).startswith('cuda') else a for a in args)
        return to(self, *args, **kw)
    torch.Tensor.to = to_cpu

    sample = F.grid_sample

    def grid_sample(*args, align_corners=None, **kw):
        if align_corners is None:   # the feature warp is Flow_PWC.warp; the decoder's is Backward
            caller = sys._getframe(1).f_code.co_name
            align_corners = _ALIGN['feature' if caller == 'warp' else 'decoder']
        return sample(*args, align_corners=align_corners, **kw)
    F.grid_sample = grid_sample
    import warnings
    warnings.filterwarnings('ignore', message='Implicit dimension choice for softmax')
    sys.path.insert(0, str(code))
    return importlib.import_module('model.pwc_recons')


def build_model(original, seed):
    """The paper's configuration with the reference's numpy recipe weights."""
    import torch
    with contextlib.redirect_stdout(open(os.devnull, 'w', encoding='utf-8')):
        net = original.PWC_Recons(n_colors=3, n_sequence=N_SEQ, extra_RBS=3, recons_RBS=20, n_feat=128,
                                  scale=SCALE, ksize=13, HR_in=False, flow_pretrain_fn='.', device='cpu')
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    listed = [line.split('\t')[0] for line in
              (CASE.parent / 'upstream_state_dict_keys.txt').read_text(encoding='utf-8').splitlines()]
    if list(shapes) != listed:
        raise SystemExit('the original model\'s state_dict keys differ from upstream_state_dict_keys.txt')
    state = ours('weights.recipe').recipe_state(shapes, seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net.eval()


# -- the case's frames -----------------------------------------------------------------------

def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def write_frames(case, out):
    """HR crops of the recorded pan and their x4 blur-down (13x13 Gaussian, sigma 1.2, replicate
    padding, float32 conv, every 4th pixel, rounded to uint8), as the case describes them."""
    import skimage.data
    import torch
    kernel = ours('data.kernels').gaussian_kernel(13, 1.2)
    weight = torch.from_numpy(kernel.astype(np.float32)).view(1, 1, 13, 13).repeat(3, 1, 1, 1)
    for video, meta in sorted(case['video_meta'].items()):
        photo = np.asarray(getattr(skimage.data, meta['source_image'].split('.')[-1])())[:, :, :3]
        assert meta['source_upscale_bicubic'] == 1.0 and list(photo.shape) == meta['source_shape_used']
        (y0, x0), (h, w) = meta['crop_origin_yx'], meta['hr_size']
        for t, (dy, dx) in enumerate(meta['hr_offsets_yx']):
            hr = np.ascontiguousarray(photo[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w])
            x = torch.from_numpy(hr.astype(np.float32).transpose(2, 0, 1))[None]
            x = torch.nn.functional.pad(x, (6, 6, 6, 6), mode='replicate')
            lr = torch.nn.functional.conv2d(x, weight, groups=3)[:, :, ::SCALE, ::SCALE]
            lr = lr.clamp(0, 255).round()[0].numpy().transpose(1, 2, 0).astype(np.uint8)
            _png(out / 'HR' / video / f'{t:08d}.png', hr)
            _png(out / 'LR' / video / f'{t:08d}.png', lr)


def windows(n):
    """Border mode: the first and last two frames repeated in order, one window per frame."""
    half = N_SEQ // 2
    padded = list(range(half)) + list(range(n)) + list(range(n - half, n))
    return [padded[k:k + N_SEQ] for k in range(n)]


def run_case(net, out, flows=None):
    """Every window of every video through the original in ``infer`` mode: {(video, t): (sr, kernel,
    recons, x)}; ``flows`` (a list) collects the flow net's outputs of each video's first window."""
    import torch
    results = {}
    for video in sorted(os.listdir(out / 'LR')):
        names = sorted(os.listdir(out / 'LR' / video))
        frames = [np.asarray(Image.open(out / 'LR' / video / n)) for n in names]
        for t, win in enumerate(windows(len(frames))):
            # float32(pixel) * float32(1/255), channels first, as the original's numpy2tensor
            x = torch.stack([torch.from_numpy(frames[i].astype(np.float64).transpose(2, 0, 1)).float()
                             .mul_(1 / 255) for i in win])[None]
            caught = []
            hook = net.flow_net.register_forward_hook(lambda m, i, o: caught.append(o.clone()))
            with torch.no_grad():
                od, _ = net({'x': x, 'mode': 'infer'})
            hook.remove()
            recons, kernel = od['recons'], od['est_kernel']
            sr = recons.mul(255).clamp(0, 255).round()[0].numpy().transpose(1, 2, 0).astype(np.uint8)
            results[video, names[t]] = (sr, kernel, recons, x)
            if flows is not None and t == 0:
                flows.append((video, caught))
    return results


def cmd_case(args):
    import torch
    torch.set_num_threads(args.threads)
    case = json.loads(Path(args.case_json).read_text(encoding='utf-8'))
    out = Path(args.out)
    net = build_model(load_original(args.upstream), case['weights']['seed'])
    write_frames(case, out)
    flows = []
    raw = {}
    for (video, name), (sr, kernel, recons, x) in run_case(net, out, flows).items():
        stem = name.rsplit('.', 1)[0]
        _png(out / 'upstream_sr' / video / name, sr)
        (out / 'upstream_kernel' / video).mkdir(parents=True, exist_ok=True)
        np.save(out / 'upstream_kernel' / video / f'{stem}.npy', kernel[0, 0].numpy().astype(np.float32))
        if f'{video}__input' not in raw:
            raw.update({f'{video}__input': x.numpy(), f'{video}__recons': recons.numpy(),
                        f'{video}__est_kernel': kernel.numpy()})
    for video, caught in flows:
        for pos, flow in zip((0, 1, 3, 4), caught):
            raw[f'{video}__flow_c_to_{pos}'] = flow.numpy()
    np.savez(out / 'upstream_raw.npz', **raw)
    print(f'wrote {out}')
    if args.check:
        sys.exit(compare(out, Path(args.check)))


# how far a rebuild may land from the stored case: the float32-vs-float64 spread of the original
# itself (tests/reference/README.md); the summation order differs between machines and thread counts
LIMITS = {'png_values_off': 1e-3, 'png_max_off': 1, 'recons': 1e-5, 'flow': 1e-4, 'est_kernel': 1e-8, 'input': 0.0}


def compare(new, old):
    """0 when the files ``case`` wrote match ``old``: frames equal, outputs within LIMITS."""
    def png(path):
        return np.asarray(Image.open(path)).astype(np.int16)
    worst, problems = {}, []
    for sub in ('LR', 'HR'):
        for path in sorted((new / sub).rglob('*.png')):
            if not np.array_equal(png(path), png(old / path.relative_to(new))):
                problems.append(f'{path.relative_to(new)} differs')
    off = [np.abs(png(p) - png(old / p.relative_to(new))) for p in sorted((new / 'upstream_sr').rglob('*.png'))]
    worst['png_values_off'] = float(np.mean(np.concatenate([d.ravel() for d in off]) > 0))
    worst['png_max_off'] = int(max(d.max() for d in off))
    worst['est_kernel'] = max(float(np.abs(np.load(p) - np.load(old / p.relative_to(new))).max())
                              for p in (new / 'upstream_kernel').rglob('*.npy'))
    a, b = np.load(new / 'upstream_raw.npz'), np.load(old / 'upstream_raw.npz')
    if sorted(a.files) != sorted(b.files):
        problems.append('upstream_raw.npz holds other arrays')
    for key in set(a.files) & set(b.files):
        kind = key.split('__')[1].split('_c_to_')[0]
        worst[kind] = max(worst.get(kind, 0.0), float(np.abs(a[key] - b[key]).max()))
    for kind, value in sorted(worst.items()):
        ok = value <= LIMITS[kind]
        print(f'{kind}: {value:.3g} (limit {LIMITS[kind]:g}){"" if ok else "  TOO FAR"}')
        if not ok:
            problems.append(kind)
    print('\n'.join(problems) if problems else 'matches the stored case')
    return 1 if problems else 0


def cmd_sensitivity(args):
    """How much each deliberate error moves the SR PNGs of the case in ``--case``."""
    import torch
    torch.set_num_threads(args.threads)
    case_dir = Path(args.case)
    case = json.loads((case_dir / 'case.json').read_text(encoding='utf-8'))
    net = build_model(load_original(args.upstream), case['weights']['seed'])
    right = run_case(net, case_dir)
    variants = {'warp_align_corners_false': ({'feature': False}, False),
                'pwc_backward_align_corners_false': ({'decoder': False}, False),
                'all_grid_sample_align_corners_false': ({'feature': False, 'decoder': False}, False),
                'corr_transposed': ({}, True)}
    report = {}
    for name, (align, transposed) in variants.items():
        _ALIGN.update({'feature': True, 'decoder': True}, **align)
        _TRANSPOSED[0] = transposed
        wrong = run_case(net, case_dir)
        d = np.concatenate([np.abs(wrong[k][0].astype(np.int16) - right[k][0]).ravel() for k in right])
        report[name] = {'u8_frac_values_diff_ge1': float((d >= 1).mean()),
                        'u8_frac_values_diff_ge2': float((d >= 2).mean()), 'u8_max_abs_diff': int(d.max())}
    _ALIGN.update(feature=True, decoder=True)
    _TRANSPOSED[0] = False
    print(json.dumps(report, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    sub = p.add_subparsers(dest='command', required=True)
    for name, func in (('case', cmd_case), ('sensitivity', cmd_sensitivity)):
        s = sub.add_parser(name)
        s.add_argument('--upstream', required=True, help='an extracted copy of the original repository')
        s.add_argument('--threads', type=int, default=2)
        s.set_defaults(func=func)
        if name == 'case':
            s.add_argument('--out', required=True)
            s.add_argument('--case_json', default=str(CASE / 'case.json'))
            s.add_argument('--check', default=None, help='compare what was written with this folder')
        else:
            s.add_argument('--case', default=str(CASE))
    args = p.parse_args(argv)
    args.func(args)


if __name__ == '__main__':
    main()
