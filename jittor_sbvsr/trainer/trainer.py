"""The training loop: the reference's main.py + Trainer_Flow_Video, in Jittor.

Per epoch e (1-based): lr = base * gamma ** (e // lr_decay) for each of the
8 Adam groups; every batch runs the model in 'train' mode, the loss of
:mod:`jittor_sbvsr.trainer.losses` and Adam (PyTorch's formula); then the model is
evaluated on the test set in 'val' mode (PSNR, cycle-PSNR, down-PSNR) and the
epoch is saved. Differences from the reference are listed in README.md;
the one that shows: the reference's loop trains ``epochs - 1`` epochs
(it stops when ``last_epoch + 1 >= epochs``), this one trains ``epochs``.

Under ``mpirun -np N`` (see :mod:`jittor_sbvsr.dist`) every rank runs this loop on its
part of each global batch of ``batch_size x N`` samples; Jittor averages the
gradients, so the update is the one a single process with batch
``batch_size x N`` would make. Evaluation deals the test windows to the ranks
round-robin; only rank 0 logs and writes the log, plots and checkpoints.

Layout: :mod:`.start` builds what a run starts from (data sets, demo clips,
initial weights) before any file is written, :mod:`.evaluate` runs the test
set, :mod:`.experiment` owns the experiment folder (log, checkpoints,
curves), :mod:`.state` the resumable state; the loader
(:mod:`jittor_sbvsr.data.loader`) yields each batch with its loss weight.
This module is the loop that ties them together.

Reproducibility: every sample is a function of (seed, epoch, index) (see
:mod:`jittor_sbvsr.data.loader`), Jittor/numpy/python generators are
re-seeded from (seed, epoch) at the start of each epoch, and the saved state
holds the weights, Adam's moments and step count. A run resumed after epoch
e therefore repeats the uninterrupted run bit for bit (same device and
thread count).
"""
import math
import os
import sys
import time

import jittor as jt

from .. import dist, runtime
from ..errors import UserError
from ..utils import Bar
from ..utils.memory import is_out_of_memory as _is_oom
from . import start
from .evaluate import PSNR_NAMES, bicubic_psnr, evaluate
from .experiment import open_experiment, save_epoch
from .losses import LOSS_NAMES, SelfBlindLoss
from .micro import plan_batches, training_budget
from .optim import make_optimizer, step_lr_factor
from .state import STATE_NAME, epoch_seed, load_training_state
from .watchdog import Watchdog

__all__ = ['Trainer', 'run', 'OOM_HINT']

OOM_HINT = ('out of memory{where} (batch_size {bs}, patch_size {ps}): lower --batch_size '
            '(and use --accumulate N to keep the effective batch), or lower --patch_size')
EVAL_OOM_HINT = ('out of memory in the evaluation on the test set (it reconstructs whole frames, or tiles that '
                 'fit --max_memory): give a smaller --max_memory, free memory, or --dir_data_test \'\' to '
                 'train without evaluation')


def _fmt_losses(d):
    return ''.join(f'[{k}: {d[k]:.4f}]' if k != 'kernel_center' else f'[{k}: {d[k]:.3e}]'
                   for k in LOSS_NAMES)


class Trainer:
    """Builds everything from ``args`` (see :mod:`jittor_sbvsr.cli.train_options`), checks the
    inputs before writing anything, then ``train()`` runs the remaining epochs."""

    def __init__(self, args, device='cpu', stream=None):
        from ..data.loader import Loader
        from ..models import PWC_Recons
        self.args = a = args
        self.device = device
        self.stream = sys.stdout if stream is None else stream
        self.dir = os.path.join(a.experiment_dir, a.save)
        self.messages = [f'runtime: {runtime.describe()}']  # lines to log once the log file is open (GPU, TF32)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        self.watchdog = Watchdog(a.dist_timeout, self.rank, self.world)
        self.logger = self.loader = None
        self.eval_budget = False  # not decided yet (training_budget, at the first evaluation)

        # everything that can fail on bad input, before any file is written
        resume = load_training_state(os.path.join(self.dir, STATE_NAME)) if a.resume else None
        if resume is not None:
            start.check_resume_config(resume[0]['config'], a, self.world, self.messages)
        start.write_demo_data(a, self.messages)
        # loader batch and accumulation (--accumulate auto: micro-batches that fit --max_memory)
        self.micro, self.n_acc = plan_batches(a, device, self.messages)
        self.train_set = None if a.test_only else start.make_train_set(a, self.effective_batch())
        self.test_set = start.make_test_set(a, self.messages)
        self.bicubic = None if self.test_set is None else bicubic_psnr(self.test_set, a.scale)
        if self.bicubic is not None:
            self.messages.append(f'bicubic on the test set: PSNR {self.bicubic:.3f} (the reference line of psnr.png)')

        jt.set_global_seed(int(a.seed), different_seed_for_mpi=False)
        self.model = PWC_Recons(n_colors=a.n_colors, n_sequence=a.n_sequence, extra_RBS=a.extra_RBS,
                                recons_RBS=a.recons_RBS, n_feat=a.n_feat, scale=a.scale, ksize=a.ksize)
        # Jittor draws the random initial weights when they are first
        # computed, from the generator's state at that moment: compute them
        # now, so that they depend on --seed alone (not on what ran before
        # the first step, which differs e.g. between one process and MPI ranks).
        jt.sync(list(self.model.parameters()))
        start.load_initial_weights(self.model, a, self.dir, resume, self.messages)
        self.loss_fn = SelfBlindLoss(ksize=a.ksize)
        self.optimizer = make_optimizer(self.model, a.lr, betas=(a.beta1, a.beta2), eps=a.epsilon,
                                        weight_decay=a.weight_decay)
        self.start_epoch = 1
        self.history = {'epoch': [], 'lr': [], **{k: [] for k in LOSS_NAMES}, **{k: [] for k in PSNR_NAMES}}
        self.best = None  # (psnr, epoch)
        if resume is not None:
            self._resume_from(resume)
        if self.train_set is not None:
            self.loader = Loader(self.train_set, batch_size=self.micro, shuffle=True,
                                 num_workers=a.n_threads, seed=int(a.seed), drop_last=False,
                                 rank=self.rank, world=self.world, accumulate=self.n_acc)

    def _resume_from(self, resume):
        meta, _, opt_state = resume
        try:
            self.optimizer.load(opt_state)
        except (ValueError, KeyError) as e:
            raise UserError(f'{os.path.join(self.dir, STATE_NAME)}: optimizer state does not fit '
                            f'the model ({e})') from None
        self.start_epoch = int(meta['epoch']) + 1
        self.history = {k: list(v) for k, v in meta['history'].items()}
        self.best = tuple(meta['best']) if meta.get('best') else None

    def effective_batch(self):
        """Samples per update: batch per rank x ranks x accumulated batches."""
        return self.micro * self.world * self.n_acc

    # ------------------------------------------------------------ log
    def _open_experiment(self):
        """The experiment folder and its log (rank 0); the other ranks wait for it."""
        if self.main:
            self.logger = open_experiment(self.dir, self.args, self.start_epoch, self.stream, self.messages)
        self.messages = []
        dist.barrier()

    def log(self, msg):
        if not self.main:
            return
        if self.logger is None:
            self.messages.append(msg)
        else:
            self.logger.log(msg)

    def close(self):
        self.watchdog.close()
        if self.loader is not None:
            self.loader.close()
        if self.logger is not None:
            self.logger.close()

    # ------------------------------------------------------------ one epoch
    def train_epoch(self, epoch):
        a = self.args
        self.optimizer.set_lr_factor(step_lr_factor(epoch, a.lr_decay, a.gamma))
        lr = self.optimizer.param_groups[0]['lr']
        self.log(f'[Epoch {epoch}] lr {lr:.2e} (flow net {self.optimizer.param_groups[-1]["lr"]:.2e})')
        jt.set_global_seed(epoch_seed(a.seed, epoch), different_seed_for_mpi=False)
        self.watchdog.phase(f'the start of epoch {epoch}')
        self._settle()
        self.loader.set_epoch(epoch)
        sums = {k: 0.0 for k in LOSS_NAMES}
        n_batches = len(self.loader)
        self.watchdog.phase(f'training epoch {epoch}')
        with Bar(n_batches, desc=f'epoch {epoch}', unit='batch', enabled=self.main) as bar:
            for j, (batch, part) in enumerate(self.loader.weighted()):
                out, _ = self.model({'x': jt.array(batch['lr']), 'mode': 'train'})
                total, terms = self.loss_fn(out)
                # read the losses before the update: a lazy Var evaluated after
                # p.update() would see the new weights
                jt.sync(list(terms.values()))
                values = dist.weighted_mean({k: float(v.item()) for k, v in terms.items()},
                                            part.samples, part.total)
                self.optimizer.backward(total if part.weight == 1 else total * part.weight)
                if part.step:
                    self.optimizer.step()
                self.watchdog.beat()
                if not all(math.isfinite(v) for v in values.values()):
                    raise UserError(f'epoch {epoch}, batch {j + 1}: the loss is not finite '
                                    f'({", ".join(f"{k} {v:.4g}" for k, v in values.items())}); '
                                    'lower --lr')
                for k in LOSS_NAMES:
                    sums[k] += values[k]
                bar.update(1, f'loss={sums["total"] / (j + 1):.4f}')
                if (j + 1) % a.print_every == 0:
                    self.log(f'[{min((j + 1) * self.micro * self.world, len(self.train_set))}/'
                             f'{len(self.train_set)}] ' + _fmt_losses({k: v / (j + 1) for k, v in sums.items()}))
        return {k: v / n_batches for k, v in sums.items()}, lr

    def _settle(self):
        """Start the epoch from weights and Adam moments re-read from plain arrays.

        A resumed run starts from arrays read from disk; Jittor fuses (and so
        rounds) the first step differently when a Var is the output of an
        earlier computation. Re-reading them here makes a continued run and a
        resumed run compute the same epoch bit for bit. Under MPI every rank
        first takes rank 0's values, so the ranks cannot drift apart.
        """
        vs = list(self.model.parameters())
        for pg in self.optimizer.param_groups:
            vs += pg['m'] + pg['v']
        dist.broadcast_vars(vs)
        for v in vs:
            v.update(jt.array(v.numpy()))
        jt.sync(vs)

    def evaluate(self, epoch=None):
        """The three PSNRs on the test set; with ``epoch`` and --save_images, the result images too."""
        a = self.args
        images = os.path.join(self.dir, 'result', str(a.data_test)) if a.save_images and epoch is not None \
            else None
        first = self.eval_budget is False
        if first:  # once, after the model: rank 0's free memory for every rank
            self.eval_budget = training_budget(a.max_memory, self.device)
        try:  # the tiles' note in the log once
            return evaluate(self.model, self.test_set, self.watchdog, images, self.eval_budget,
                            self.log if first else None)
        except Exception as e:
            if _is_oom(e):
                raise UserError(EVAL_OOM_HINT) from None
            raise

    def _record(self, epoch, lr, losses, psnr):
        """Append the epoch to the history; True when its PSNR is the best so far."""
        self.history['epoch'].append(epoch)
        self.history['lr'].append(lr)
        for k in LOSS_NAMES:
            self.history[k].append(losses[k])
        for k in PSNR_NAMES:
            self.history[k].append(None if psnr is None else psnr[k])
        if psnr is not None and (self.best is None or psnr['psnr'] > self.best[0]):
            self.best = (psnr['psnr'], epoch)
            return True
        return False

    # ------------------------------------------------------------ main loop
    def train(self):
        a = self.args
        self._open_experiment()
        last = 10 ** 8 if a.epochs == 0 else a.epochs
        if a.test_only:
            r = self.evaluate()
            self.log(f'[{a.data_test}] PSNR: {r["psnr"]:.3f} Cycle-PSNR: {r["cycle_psnr"]:.3f} '
                     f'Down-PSNR: {r["down_psnr"]:.3f}')
            return r
        if self.start_epoch > last:
            self.log(f'Nothing to do: {self.start_epoch - 1} epochs are done and --epochs is {a.epochs}')
            return None
        self.log(f'Training epochs {self.start_epoch}..{a.epochs if a.epochs else "inf"} on {self.device}'
                 + (f' x {self.world} MPI ranks' if self.world > 1 else '')
                 + f': {len(self.train_set)} samples per epoch, {len(self.loader)} batches; effective batch '
                 f'{self.effective_batch()} = {self.micro} per rank x {self.world} rank(s) x '
                 f'{self.n_acc} accumulated'
                 + (f'; {len(self.test_set)} test windows' if self.test_set is not None else '; no test set'))
        for epoch in range(self.start_epoch, last + 1):
            t0 = time.time()
            try:
                losses, lr = self.train_epoch(epoch)
                psnr = self.evaluate(epoch) if self.test_set is not None else None
            except Exception as e:
                if _is_oom(e):
                    raise UserError(OOM_HINT.format(where=f' in epoch {epoch}', bs=a.batch_size,
                                                    ps=a.patch_size)) from None
                raise
            is_best = self._record(epoch, lr, losses, psnr)
            jt.sync_all(True)  # the epoch's time includes every queued kernel
            self.log(f'Epoch {epoch} loss ' + _fmt_losses(losses) + f' ({time.time() - t0:.1f}s)')
            if psnr is not None:
                self.log(f'[{a.data_test}] average Cycle-PSNR: {psnr["cycle_psnr"]:.3f} Down-PSNR: '
                         f'{psnr["down_psnr"]:.3f} PSNR: {psnr["psnr"]:.3f} '
                         f'(Best: {self.best[0]:.3f} @epoch {self.best[1]})')
            if self.main:
                self.watchdog.phase(f'saving epoch {epoch}')
                save_epoch(self.dir, epoch, is_best, self)
        return self.history


def run(args, device='cpu', stream=None):
    """Train (or evaluate with --test_only) as ``args`` say; returns the history."""
    from ..runtime import python_sigint
    python_sigint()
    trainer = Trainer(args, device=device, stream=stream)
    try:
        return trainer.train()
    except KeyboardInterrupt:
        done = trainer.history['epoch'][-1] if trainer.history['epoch'] else trainer.start_epoch - 1
        trainer.log(f'Interrupted. Epochs up to {done} are saved in {trainer.dir}; '
                    'continue with --resume' if done else 'Interrupted before the first epoch was saved.')
        raise
    finally:
        trainer.close()
