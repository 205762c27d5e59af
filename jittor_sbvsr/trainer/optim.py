"""Adam with PyTorch's update formula, and the reference's step schedule.

Jittor's own ``jt.optim.Adam`` differs from PyTorch's (>= 1.x) Adam in two
ways that matter here:

- where eps goes: Jittor computes ``lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)``
  (the PyTorch 0.4.1 form), PyTorch ``lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``;
  the two differ by a factor sqrt(bc2) on eps (31.6 at the first step), which
  changes the update of every parameter whose gradients are near eps, such as
  the deep PWC-Net layers;
- its step counter counts ``backward`` calls, so gradient accumulation would
  get the wrong bias correction.

``TorchAdam`` keeps Jittor's gradient machinery (``backward`` accumulates,
``step(loss)`` works as usual) and applies PyTorch's formula with its own
step count. The reference training step (tests/reference/public_case/train_step;
docs/porting.md, trap 13) was made with PyTorch 2.x Adam,
which this reproduces.
"""
import math

import numpy as np

import jittor as jt

__all__ = ['TorchAdam', 'step_lr_factor', 'GROUP_MODULES', 'reference_param_groups', 'make_optimizer']

# The reference's 8 Adam parameter groups, in its order; the flow net's lr is fixed apart.
GROUP_MODULES = ('in_conv', 'extra_feat', 'fusion_conv', 'recons_net', 'upsample_layers', 'out_conv',
                 'kernel_net', 'flow_net')
FLOW_LR = 1e-6
_FLT_MIN = 1.1754943508222875e-38  # float32 tiny (np.finfo warns once Jittor set FTZ)


def _flush(x):
    """x with every |value| < FLT_MIN (denormals) set to 0."""
    return jt.where(x.abs() < _FLT_MIN, jt.zeros_like(x), x)


class TorchAdam(jt.optim.Optimizer):
    """``TorchAdam(param_groups, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)``.

    ``param_groups``: a list of parameters or of ``{'params': [...], 'lr': ...}``
    dicts (the group lr defaults to ``lr``). Each group remembers its
    ``initial_lr`` for the scheduler.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        for pg in self.param_groups:
            pg.setdefault('lr', float(lr))
            pg['lr'] = float(pg['lr'])
            pg.setdefault('initial_lr', pg['lr'])
            pg['m'] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in pg['params']]
            pg['v'] = [jt.zeros(p.shape, p.dtype).stop_grad() for p in pg['params']]

    def step(self, loss=None, retain_graph=False):
        """One update with the gradients accumulated by ``backward`` (plus ``loss``'s)."""
        self.pre_step(loss, retain_graph)
        self.steps += 1
        b1, b2 = self.betas
        bc1 = 1 - b1 ** self.steps
        bc2_sqrt = math.sqrt(1 - b2 ** self.steps)
        updated = []
        for pg in self.param_groups:
            step_size = pg['lr'] / bc1
            for p, g, m, v in zip(pg['params'], pg['grads'], pg['m'], pg['v']):
                if p.is_stop_grad():
                    continue
                if self.weight_decay:
                    g = g + p * self.weight_decay
                # torch: exp_avg.lerp_(grad, 1-b1); exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2).
                # Moments below FLT_MIN are stored as 0: whether a kernel flushes
                # denormals depends on the thread's FPU mode (Jittor's -Ofast),
                # so keeping them would make saved states differ run to run; no
                # update changes (a sub-FLT_MIN m moves a weight by < 1e-33, and
                # v enters only through the clamp below).
                m.update(_flush(m + (g - m) * (1 - b1)))
                v.update(_flush(v * b2 + g * g * (1 - b2)))
                # Jittor compiles with -Ofast: sqrt of a denormal v (tiny
                # gradients, e.g. 3e-18, give v ~ 1e-38) comes out NaN in a
                # fused kernel. Below FLT_MIN, sqrt(v)/sqrt(bc2) < 4e-18 is far
                # under half an ulp of eps, so the clamp gives PyTorch's denom
                # bit for bit.
                denom = jt.sqrt(jt.maximum(v, _FLT_MIN)) / bc2_sqrt + self.eps
                p.update(p - (m / denom) * step_size)
                updated += [p, m, v]
        self.post_step()
        jt.sync(updated)

    # -- state -------------------------------------------------------------
    def state(self):
        """Everything needed to continue: per-group lr and moments, step count."""
        return {
            'steps': int(self.steps),
            'betas': list(self.betas), 'eps': self.eps, 'weight_decay': self.weight_decay,
            'groups': [{'lr': float(pg['lr']), 'initial_lr': float(pg['initial_lr']),
                        'm': [x.numpy().copy() for x in pg['m']],
                        'v': [x.numpy().copy() for x in pg['v']]}
                       for pg in self.param_groups],
        }

    def load(self, state):
        """Inverse of :meth:`state`; raises ValueError when it does not fit."""
        groups = state['groups']
        if len(groups) != len(self.param_groups):
            raise ValueError(f'{len(groups)} parameter groups saved, {len(self.param_groups)} expected')
        for i, (pg, sg) in enumerate(zip(self.param_groups, groups)):
            if len(sg['m']) != len(pg['params']) or len(sg['v']) != len(pg['params']):
                raise ValueError(f'group {i}: {len(sg["m"])} moments saved, {len(pg["params"])} expected')
            for p, m, v in zip(pg['params'], sg['m'], sg['v']):
                if tuple(np.shape(m)) != tuple(p.shape) or tuple(np.shape(v)) != tuple(p.shape):
                    raise ValueError(f'group {i}: moment shape {tuple(np.shape(m))} does not match '
                                     f'parameter {tuple(p.shape)}')
        for pg, sg in zip(self.param_groups, groups):
            pg['lr'] = float(sg['lr'])
            pg['initial_lr'] = float(sg['initial_lr'])
            for x, a in zip(pg['m'], sg['m']):
                x.update(jt.array(np.asarray(a, np.float32)))
            for x, a in zip(pg['v'], sg['v']):
                x.update(jt.array(np.asarray(a, np.float32)))
        self.steps = int(state['steps'])
        self.betas = tuple(float(b) for b in state['betas'])
        self.eps = float(state['eps'])
        self.weight_decay = float(state['weight_decay'])
        jt.sync([x for pg in self.param_groups for x in pg['m'] + pg['v']])

    def set_lr_factor(self, factor):
        for pg in self.param_groups:
            pg['lr'] = pg['initial_lr'] * factor


def step_lr_factor(epoch, step_size, gamma):
    """The reference's StepLR factor for training epoch ``epoch`` (1-based).

    The reference steps its scheduler once before each epoch, starting from
    last_epoch 0, so epoch e trains with ``gamma ** (e // step_size)``: with
    step 100 the first 99 epochs use the full lr, then 100 per level.
    """
    return float(gamma) ** (int(epoch) // int(step_size))


def reference_param_groups(model, lr, flow_lr=FLOW_LR):
    """The 8 groups of the reference (one per sub-network; flow net at ``flow_lr``).

    Every parameter of ``model`` must be in exactly one group.
    """
    groups = []
    for name in GROUP_MODULES:
        g = {'name': name, 'params': list(getattr(model, name).parameters()), 'lr': float(lr)}
        if name == 'flow_net':
            g['lr'] = float(flow_lr)
        groups.append(g)
    ids = [id(p) for g in groups for p in g['params']]
    every = [id(p) for p in model.parameters()]
    if len(ids) != len(set(ids)) or set(ids) != set(every):
        raise ValueError('the parameter groups do not cover the model exactly once')
    return groups


def make_optimizer(model, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, flow_lr=FLOW_LR):
    """Adam over the reference's 8 groups (PyTorch's update formula)."""
    return TorchAdam(reference_param_groups(model, lr, flow_lr), lr, betas=betas, eps=eps,
                     weight_decay=weight_decay)
