"""One training step against the reference data's recorded step (tests/reference; docs/porting.md, "Reference data" and traps 10 and 13).

Recipe weights (SEED 1234), the replay batch train_batch.npy, mode 'train',
the reference's loss, one Adam step with the reference's 8 groups. The
tolerances are those that come with the reference data; they are not to
be loosened.
"""
import json
import warnings

import numpy as np
import pytest

import jittor_sbvsr  # noqa: F401  (configures Jittor)
import jittor as jt
from jittor_sbvsr.weights.recipe import recipe_state, state_sha256
from jittor_sbvsr.trainer.losses import LOSS_NAMES, SelfBlindLoss, penalty_mask
from jittor_sbvsr.models import PWC_Recons
from jittor_sbvsr.trainer.optim import GROUP_MODULES, TorchAdam, make_optimizer, step_lr_factor

RECIPE_SHA = '68a1761c3229d171b195b9bb7aac1da7ae547163e321a57c33d797abef0fae7d'

LOSS_TOL = 1e-6
CENTRE_TOL = 1e-3


def _grad_tol(name):
    """The reference data's gradient tolerances: reconstruction branch and out_conv 1e-5,
    kernel net 1e-3, flow net 1e-2."""
    if name.startswith('flow_net.'):
        return 1e-2
    if name.startswith('kernel_net.'):
        return 1e-3
    return 1e-5


def _rel(a, b):
    return abs(a - b) / abs(b)


def _l2(x):
    return float(np.sqrt(np.sum(np.asarray(x, np.float64) ** 2)))


@pytest.fixture(scope='module')
def ref(public_case):
    d = public_case / 'train_step'
    return {'json': json.loads((d / 'upstream_train_step.json').read_text(encoding='utf-8')),
            'tensors': dict(np.load(d / 'upstream_train_step_tensors.npz')),
            'batch': np.load(d / 'train_batch.npy')}


@pytest.fixture(scope='module')
def step(ref):
    """Forward, loss, backward, one Adam step, forward again: everything recorded."""
    model = PWC_Recons()
    names = [k for k, _ in model.named_parameters()]
    state = recipe_state({k: v.shape for k, v in model.state_dict().items()}, seed=1234)
    assert state_sha256(state) == RECIPE_SHA
    model.load_parameters(state)
    model.train()
    loss_fn = SelfBlindLoss(ksize=13)
    x = jt.array(ref['batch'])
    assert ref['json']['batch_shape'] == list(ref['batch'].shape)

    out, _ = model({'x': x, 'mode': 'train'})
    total, terms = loss_fn(out)
    rec = {'losses': {k: v.item() for k, v in terms.items()},
           'tensors': {k: out[k].numpy() for k in ('est_kernel', 'recons_down', 'input_cycle', 'input')}}

    opt = make_optimizer(model, lr=1e-4)
    opt.backward(total)
    grads = {}
    for pg in opt.param_groups:
        for p, g in zip(pg['params'], pg['grads']):
            grads[p.name()] = g.numpy().copy()
    assert sorted(grads) == sorted(names)
    rec['grads'] = grads
    rec['lrs'] = {pg['name']: pg['lr'] for pg in opt.param_groups}
    before = {k: p.numpy().copy() for k, p in model.named_parameters()}
    opt.step()
    after = {k: p.numpy().copy() for k, p in model.named_parameters()}
    rec['param_l2'] = {k: _l2(after[k]) for k in names}
    rec['delta_l2'] = {k: _l2(after[k].astype(np.float64) - before[k]) for k in names}
    rec['steps'] = opt.steps

    out, _ = model({'x': x, 'mode': 'train'})
    _, terms = loss_fn(out)
    rec['losses_after'] = {k: v.item() for k, v in terms.items()}
    return rec


def test_loss_terms(step, ref):
    want = ref['json']['losses']
    assert set(want) == set(LOSS_NAMES)
    for name in LOSS_NAMES:
        tol = CENTRE_TOL if name == 'kernel_center' else LOSS_TOL
        assert _rel(step['losses'][name], want[name]) <= tol, (name, step['losses'][name], want[name])
    # the reference's weights
    assert ref['json']['loss_weights'] == {'recons_down_l1': 1.0, 'cycle_l1': 1.0, 'kernel_boundaries': 0.5,
                                           'kernel_sparse': 0.04, 'kernel_center': 1.0}


def test_train_tensors(step, ref):
    t = ref['tensors']
    got = step['tensors']
    np.testing.assert_array_equal(got['input'], t['input'])
    assert np.abs(got['est_kernel'] - t['est_kernel']).max() <= 1e-8
    assert np.abs(got['recons_down'] - t['recons_down']).max() <= 1e-5
    assert np.abs(got['input_cycle'] - t['input_cycle']).max() <= 1e-5


def test_grad_l2_every_parameter(step, ref):
    want = ref['json']['grad_l2_all_params']
    assert len(want) == 272 and set(want) == set(step['grads'])
    bad = []
    for name, r in want.items():
        assert r > 0, name
        err = _rel(_l2(step['grads'][name]), r)
        if err > _grad_tol(name):
            bad.append((name, err))
    assert not bad, bad
    total = _l2(np.concatenate([g.ravel() for g in step['grads'].values()]))
    assert _rel(total, ref['json']['total_grad_l2']) <= 1e-5


def test_named_gradients(step, ref):
    named = ref['json']['named_params']
    for name, info in named.items():
        g = step['grads'][name]
        assert list(g.shape) == info['shape']
        tol = _grad_tol(name)
        assert _rel(_l2(g), info['grad_l2']) <= tol, name
        assert abs(float(g.astype(np.float64).sum()) - info['grad_sum']) <= tol * info['grad_l2'] * np.sqrt(g.size), name
        assert _rel(float(np.abs(g).max()), info['grad_absmax']) <= 10 * tol, name
    full = [k[len('grad__'):] for k in ref['tensors'] if k.startswith('grad__')]
    assert len(full) >= 8
    for name in full:
        r = ref['tensors']['grad__' + name]
        g = step['grads'][name]
        tol = _grad_tol(name)
        assert _l2(g.astype(np.float64) - r) <= tol * _l2(r), name
        assert np.abs(g - r).max() <= tol * np.abs(r).max(), name


def test_adam_step(step, ref):
    assert step['steps'] == 1
    assert step['lrs'] == {**{n: 1e-4 for n in GROUP_MODULES[:-1]}, 'flow_net': 1e-6}
    named = ref['json']['named_params']
    for name, info in named.items():
        assert _rel(step['param_l2'][name], info['param_l2_after_adam_step']) <= 1e-6, name
        assert _rel(step['delta_l2'][name], info['delta_l2_after_adam_step']) <= _grad_tol(name), name


def test_losses_after_adam_step(step, ref):
    want = ref['json']['losses_after_adam_step']
    for name in LOSS_NAMES:
        tol = CENTRE_TOL if name == 'kernel_center' else LOSS_TOL
        assert _rel(step['losses_after'][name], want[name]) <= tol, (name, step['losses_after'][name], want[name])


# ---------------------------------------------------------------- small, no reference model

def test_penalty_mask():
    m = penalty_mask(13)
    assert m.dtype == np.float32 and m.shape == (13, 13)
    assert np.all(m[2:11, 2:11] == 0) and np.all(m[:2] > 0) and np.all(m[:, :2] > 0)
    # 30 * (1 - g / max g), g the outer product of a sigma-13 Gaussian on -6..6
    z = np.arange(-6, 7)
    g = np.exp(-z ** 2 / (2 * 13.0 ** 2))
    g = np.outer(g, g)
    want = 30 * (1 - g / g.max())
    want[2:11, 2:11] = 0
    np.testing.assert_allclose(m, want, rtol=1e-6, atol=0)


def test_kernel_losses_against_numpy():
    rng = np.random.RandomState(0)
    k = rng.rand(3, 1, 13, 13).astype(np.float32)
    k[0, 0, 0, 0] = 0  # sparsity skips exact zeros
    k /= k.sum(axis=(2, 3), keepdims=True)
    out = {'est_kernel': jt.array(k), 'input': jt.zeros((3, 3, 4, 4)),
           'recons_down': jt.ones((3, 3, 4, 4)) * 0.5, 'input_cycle': jt.ones((3, 3, 4, 4)) * 0.25}
    total, terms = SelfBlindLoss(13)(out)
    k64 = k.astype(np.float64)
    want_b = np.abs(k64 * penalty_mask(13)).mean()
    want_s = np.where(k64 > 0, np.sqrt(np.abs(k64)), 0).mean()
    idx = np.arange(13)
    rows = (k64[:, 0].sum(2) * idx).sum(1) / k64[:, 0].sum((1, 2))
    cols = (k64[:, 0].sum(1) * idx).sum(1) / k64[:, 0].sum((1, 2))
    want_c = (((rows - 6) ** 2 + (cols - 6) ** 2) / 2).mean()
    assert terms['kernel_boundaries'].item() == pytest.approx(want_b, rel=1e-6)
    assert terms['kernel_sparse'].item() == pytest.approx(want_s, rel=1e-6)
    assert terms['kernel_center'].item() == pytest.approx(want_c, rel=1e-6)
    assert terms['recons_down_l1'].item() == 0.5 and terms['cycle_l1'].item() == 0.25
    assert total.item() == pytest.approx(0.75 + 0.5 * want_b + 0.04 * want_s + want_c, rel=1e-6)
    # no NaN gradient where the kernel is exactly 0
    g = jt.grad(terms['kernel_sparse'], out['est_kernel']).numpy()
    assert np.isfinite(g).all() and g[0, 0, 0, 0] == 0


def test_adam_matches_pytorch():
    """PyTorch's Adam (eps after the bias correction of sqrt(v)); Jittor's own Adam differs."""
    torch = pytest.importorskip('torch')
    rng = np.random.RandomState(3)
    shapes = [(5, 4), (7,), (3, 3)]
    init = [rng.randn(*s).astype(np.float32) for s in shapes]
    # gradients spanning 1e-10 .. 1: the small ones are where eps placement shows
    grads = [[(rng.randn(*s) * 10.0 ** rng.randint(-10, 1, size=s)).astype(np.float32) for s in shapes]
             for _ in range(4)]
    lrs = [1e-3, 1e-6, 1e-3]

    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.Adam([{'params': [tp[0]]}, {'params': [tp[1]], 'lr': lrs[1]}, {'params': [tp[2]]}],
                            lr=1e-3)
    jp = [jt.array(a.copy()) for a in init]
    jopt = TorchAdam([{'params': [jp[0]]}, {'params': [jp[1]], 'lr': lrs[1]}, {'params': [jp[2]]}], lr=1e-3)
    jt_own = [jt.array(a.copy()) for a in init]
    own = jt.optim.Adam(jt_own, lr=1e-3)
    for gs in grads:
        for p, g in zip(tp, gs):
            p.grad = torch.tensor(g)
        topt.step()
        # the gradients arrive through Jittor's own backward: loss = sum(p * g)
        jopt.step(sum((p * jt.array(g)).sum() for p, g in zip(jp, gs)))
        own.step(sum((p * jt.array(g)).sum() for p, g in zip(jt_own, gs)))
    for a, b, lr in zip(jp, tp, lrs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=0, atol=1e-6 * lr)
    assert jopt.steps == 4
    moved = [np.abs(a.numpy() - i).max() for a, i in zip(jt_own, init)]
    diff = max(np.abs(a.numpy() - b.detach().numpy()).max() / lr
               for a, b, lr in zip(jt_own, tp, lrs))
    assert max(moved) > 0 and diff > 0.1  # jt.optim.Adam is not PyTorch's Adam


def test_adam_accumulation_counts_steps():
    p = jt.array(np.ones(3, np.float32))
    opt = TorchAdam([p], lr=0.1)
    opt.backward((p * 2).sum())
    opt.backward((p * 4).sum())
    opt.step()
    assert opt.steps == 1
    np.testing.assert_allclose(p.numpy(), 0.9, rtol=1e-6)  # first Adam step: lr * sign(g)


def test_step_lr_schedule_matches_reference_loop():
    """The reference steps StepLR before each epoch: epoch e gets gamma ** (e // step)."""
    torch = pytest.importorskip('torch')
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([{'params': [w]}, {'params': [torch.zeros(1)], 'lr': 1e-6}], lr=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for epoch in range(1, 351):
            sched.step()
            assert sched.last_epoch == epoch
            f = step_lr_factor(epoch, 100, 0.5)
            assert opt.param_groups[0]['lr'] == pytest.approx(1e-4 * f, rel=1e-12)
            assert opt.param_groups[1]['lr'] == pytest.approx(1e-6 * f, rel=1e-12)
    assert step_lr_factor(99, 100, 0.5) == 1 and step_lr_factor(100, 100, 0.5) == 0.5
    assert step_lr_factor(299, 100, 0.5) == 0.25


def test_adam_tiny_gradients_stay_finite():
    """Gradients ~1e-18 make v denormal; Jittor's -Ofast sqrt would turn it into NaN."""
    torch = pytest.importorskip('torch')
    g = np.array([3.1035287e-18, 1e-20, -2e-19, 0.0, 1e-3, -5e-9] * 11, np.float32)
    init = np.linspace(-1, 1, g.size).astype(np.float32)
    p = jt.array(init.copy())
    opt = TorchAdam([p], lr=1e-6)
    tp = torch.tensor(init.copy(), requires_grad=True)
    topt = torch.optim.Adam([tp], lr=1e-6)
    for _ in range(3):
        opt.step((p * jt.array(g)).sum())
        tp.grad = torch.tensor(g)
        topt.step()
    assert np.isfinite(p.numpy()).all()
    np.testing.assert_array_equal(p.numpy(), tp.detach().numpy())
