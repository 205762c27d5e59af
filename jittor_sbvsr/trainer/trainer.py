"""The training loop: the reference's main.py + Trainer_Flow_Video, in Jittor.

Per epoch e (1-based): lr = base * gamma ** (e // lr_decay) for each of the
8 Adam groups; every batch runs the model in 'train' mode, the loss of
:mod:`jittor_sbvsr.losses` and Adam (PyTorch's formula); then the model is
evaluated on the test set in 'val' mode (PSNR, cycle-PSNR, down-PSNR) and the
epoch is saved. Differences from the reference are listed in README.md;
the one that shows: the reference's loop trains ``epochs - 1`` epochs
(it stops when ``last_epoch + 1 >= epochs``), this one trains ``epochs``.

Under ``mpirun -np N`` (see :mod:`.dist`) every rank runs this loop on its
share of each global batch of ``batch_size x N`` samples; Jittor averages the
gradients, so the update is the one a single process with batch
``batch_size x N`` would make. Evaluation is sharded the same way; only rank
0 logs and writes the log, plots and checkpoints.

Reproducibility: every sample is a function of (seed, epoch, index) (see
:mod:`jittor_sbvsr.data.loader`), Jittor/numpy/python generators are
re-seeded from (seed, epoch) at the start of each epoch, and the saved state
holds the weights, Adam's moments and step count. A run resumed after epoch
e therefore repeats the uninterrupted run bit for bit (same device and
thread count).
"""
import datetime
import json
import math
import os
import sys
import time

import jittor as jt
import numpy as np

from ..data.frames import to_uint8
from ..errors import UserError
from ..io.checkpoint import FLOW_PREFIX, load_into_module, load_state, save_state_atomic
from ..losses import LOSS_NAMES, SelfBlindLoss
from ..metrics.psnr_ssim import calc_psnr
from ..options import DEMO_DATA
from ..utils import Logger, Progress, atomic_write_bytes, ensure_dir, save_png_atomic
from ..utils.files import remove_stale_temps, stale_note
from . import dist
from .optim import make_optimizer, step_lr_factor
from .plots import save_line_plot
from .state import STATE_NAME, load_training_state, save_training_state

__all__ = ['Trainer', 'run', 'kernel_rgb_minmax', 'epoch_seed', 'OOM_HINT']

PSNR_NAMES = ('psnr', 'cycle_psnr', 'down_psnr')
OOM_HINT = ('out of memory{where} (batch_size {bs}, patch_size {ps}): lower --batch_size '
            '(and use --accumulate N to keep the effective batch), or lower --patch_size')
# Options that must not change on --resume if the run is to continue as it was.
_SAME_ON_RESUME = ('n_feat', 'extra_RBS', 'recons_RBS', 'ksize', 'scale', 'n_sequence', 'seed',
                   'patch_size', 'batch_size', 'accumulate', 'data_train', 'test_every',
                   'n_frames_per_video', 'no_augment')
_PWC_NAMES = ('network-default.pkl', 'network-default.pytorch')


def kernel_rgb_minmax(kernel):
    """A kernel [k,k] as a uint8 RGB image (k x k, not enlarged) stretched from its own
    min to max, for the training-time result images (all-equal -> black, NaN -> 0).

    Not the kernel picture of inference and the tools (data/kernels.py:kernel_image,
    scaled to the peak and enlarged)."""
    k = np.nan_to_num(np.asarray(kernel, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(k.min()), float(k.max())
    k = (k - lo) / (hi - lo) if hi > lo else np.zeros_like(k)
    k = np.clip(np.round(k * 255), 0, 255).astype(np.uint8)
    return np.repeat(k[:, :, None], 3, axis=2)


def epoch_seed(seed, epoch):
    """The 31-bit seed of Jittor/numpy/python generators in ``epoch``: from (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x7EED]).generate_state(1)[0] & 0x7FFFFFFF)


def _same_path(a, b):
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _is_oom(e):
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(s in text for s in ('out of memory', 'Out of memory', 'OutOfMemory', 'cudaErrorMemoryAllocation',
                                   'CUDA_ERROR_OUT_OF_MEMORY', 'std::bad_alloc', 'MemoryError'))


class _OOM(Exception):
    pass


class Trainer:
    """Builds everything from ``args`` (see :mod:`jittor_sbvsr.options`), checks the
    inputs before writing anything, then ``train()`` runs the remaining epochs."""

    def __init__(self, args, device='cpu', stream=None):
        from ..models import PWC_Recons
        self.args = args
        self.device = device
        self.stream = sys.stdout if stream is None else stream
        self.dir = os.path.join(args.experiment_dir, args.save)
        self.messages = []  # lines to log once the log file is open
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        self.watchdog = dist.Watchdog(args.dist_timeout, self.rank, self.world)

        # 1. everything that can fail on bad input, before any file is written
        resume = None
        if args.resume:
            resume = load_training_state(os.path.join(self.dir, STATE_NAME))
            self._check_resume_config(resume[0]['config'])
        self._write_demo_data()
        self.train_set = None if args.test_only else self._make_train_set()
        self.test_set = self._make_test_set()

        jt.set_global_seed(int(args.seed), different_seed_for_mpi=False)
        self.model = PWC_Recons(n_colors=args.n_colors, n_sequence=args.n_sequence, extra_RBS=args.extra_RBS,
                                recons_RBS=args.recons_RBS, n_feat=args.n_feat, scale=args.scale,
                                ksize=args.ksize)
        # Jittor draws the random initial weights when they are first
        # computed, from the generator's state at that moment: compute them
        # now, so that they depend on --seed alone (not on what ran before
        # the first step, which differs e.g. between one process and MPI ranks).
        jt.sync(list(self.model.parameters()))
        self._load_initial_weights(resume)
        self.loss_fn = SelfBlindLoss(ksize=args.ksize)
        self.optimizer = make_optimizer(self.model, args.lr, betas=(args.beta1, args.beta2),
                                        eps=args.epsilon, weight_decay=args.weight_decay)
        self.start_epoch = 1
        self.history = {'epoch': [], 'lr': [], **{k: [] for k in LOSS_NAMES}, **{k: [] for k in PSNR_NAMES}}
        self.best = None  # (psnr, epoch)
        if resume is not None:
            meta, _, opt_state = resume
            try:
                self.optimizer.load(opt_state)
            except (ValueError, KeyError) as e:
                raise UserError(f'{os.path.join(self.dir, STATE_NAME)}: optimizer state does not fit '
                                f'the model ({e})') from None
            self.start_epoch = int(meta['epoch']) + 1
            self.history = {k: list(v) for k, v in meta['history'].items()}
            self.best = tuple(meta['best']) if meta.get('best') else None
        self.loader = None
        if self.train_set is not None:
            from ..data.loader import Loader
            self.loader = Loader(self.train_set, batch_size=args.batch_size, shuffle=True,
                                 num_workers=args.n_threads, seed=int(args.seed), drop_last=False,
                                 rank=self.rank, world=self.world)
        self.logger = None

    # ------------------------------------------------------------ building
    def _check_resume_config(self, saved):
        changed = [f'{k} {saved.get(k)!r} -> {getattr(self.args, k)!r}' for k in _SAME_ON_RESUME
                   if k in saved and saved.get(k) != getattr(self.args, k)]
        if saved.get('mpi_ranks', 1) != self.world:
            changed.append(f"MPI ranks {saved.get('mpi_ranks', 1)} -> {self.world}")
        if changed:
            self.messages.append('warning: resuming with options that differ from the saved run ('
                                 + ', '.join(changed) + '): the continued run will not repeat an '
                                 'uninterrupted one')

    def _write_demo_data(self):
        """The demo clips, written once (by rank 0) when the demo folder is missing."""
        a = self.args
        wanted = [(a.data_train, a.dir_data)] if not a.test_only else []
        wanted.append((a.data_test, a.dir_data_test))
        for name, folder in wanted:
            if name == 'DEMO' and folder and _same_path(folder, DEMO_DATA) and not os.path.exists(folder) \
                    and self.main:
                from ..data.synthetic import make_demo_videos
                self.messages.append(f'Writing the demo clips to {folder}')
                make_demo_videos(folder)
        dist.barrier()

    def _make_train_set(self):
        from ..data import datasets
        a = self.args
        kind = {'REDS_BLURDOWN_GAUSSIAN': 'gaussian', 'REDS_BLURDOWN_REALISTIC': 'realistic',
                'DEMO': 'gaussian', 'LR_ONLY': 'lr_only'}[a.data_train]
        if kind == 'lr_only':
            def make(repeat):
                return datasets.LROnlyTrainSet(a.dir_data, n_seq=a.n_sequence, patch_size=a.patch_size,
                                               n_frames_per_video=a.n_frames_per_video, repeat=repeat,
                                               augment=not a.no_augment)
        else:
            def make(repeat):
                return datasets.OnlineBlurDownTrainSet(a.dir_data, kind=kind, n_seq=a.n_sequence,
                                                       patch_size=a.patch_size,
                                                       n_frames_per_video=a.n_frames_per_video,
                                                       scale=a.scale, repeat=repeat, ksize=a.ksize,
                                                       augment=not a.no_augment, with_hr=False)
        try:
            ds = make(1)
            # the reference's epoch length, counted in updates (effective batches)
            repeat = datasets.reference_repeat(ds.n_windows, self.effective_batch(), a.test_every)
            if repeat != 1:
                ds = make(repeat)
        except ValueError as e:
            raise UserError(f'training data: {e}') from None
        if len(ds) == 0:
            raise UserError(f'{a.dir_data}: no training windows found')
        return ds

    def _make_test_set(self):
        from ..data import datasets
        a = self.args
        if a.dir_data_test in ('', '.', None):
            if a.test_only:
                raise UserError('--test_only needs a test set (--dir_data_test)')
            return None
        ts = datasets.PairedTestSet(a.dir_data_test, n_seq=a.n_sequence, scale=a.scale)
        if len(ts) == 0:
            raise UserError(f'{a.dir_data_test}: no test windows found')
        self.messages.extend(ts.warnings)
        return ts

    def _load_initial_weights(self, resume):
        a = self.args
        if resume is not None:
            load_into_module(self.model, resume[1], os.path.join(self.dir, STATE_NAME))
            self.messages.append(f'Resuming from {os.path.join(self.dir, STATE_NAME)} '
                                 f'(epoch {resume[0]["epoch"]} completed)')
            return
        if a.pre_train not in ('', '.', None):
            self._load_full_model(a.pre_train)
            return
        if a.test_only:
            self._load_full_model(os.path.join(self.dir, 'model', 'model_best.pkl'))
            return
        for name in _PWC_NAMES:
            path = os.path.join(a.pretrain_models_dir, name)
            if os.path.isfile(path):
                state = load_state(path)
                if state and all(k.startswith(FLOW_PREFIX) for k in state):
                    state = {k[len(FLOW_PREFIX):]: v for k, v in state.items()}
                load_into_module(self.model.flow_net.moduleNetwork, state, path)
                self.messages.append(f'Loaded the PWC-Net weights from {path}')
                return
        self.messages.append(f'warning: no PWC-Net weights ({" or ".join(_PWC_NAMES)}) in '
                             f'{a.pretrain_models_dir}: the flow net starts from random weights')

    def _load_full_model(self, path):
        """Load a whole PWC_Recons checkpoint; one that was made with other options says which."""
        from ..io.arch import conflict_error, conflicts, derive_arch
        a = self.args
        state = load_state(path)
        found = conflicts(derive_arch(state, path), {
            'n_feat': ('--n_feat', a.n_feat), 'extra_RBS': ('--extra_RBS', a.extra_RBS),
            'recons_RBS': ('--recons_RBS', a.recons_RBS), 'ksize': ('--ksize', a.ksize),
            'scale': ('--scale', a.scale), 'n_sequence': ('--n_sequence', a.n_sequence),
            'n_colors': ('--n_colors', a.n_colors), 'kernel_size': ("the trainer's kernel_size", 3)})
        if found:
            fix = ' '.join(f'{flag} {ckpt}' for _, ckpt, flag, _ in found if flag.startswith('--'))
            raise conflict_error(path, found, f'pass {fix} to train from it' if fix else
                                 'the trainer cannot build this architecture')
        load_into_module(self.model, state, path)
        self.messages.append(f'Loaded the model from {path}')

    def effective_batch(self):
        """Samples per update: batch per rank x ranks x accumulated batches."""
        return self.args.batch_size * self.world * self.args.accumulate

    # ------------------------------------------------------------ files
    def _open_experiment(self):
        """Create (or archive and recreate) the experiment folder and open the log (rank 0);
        the other ranks wait for it."""
        if self.main:
            self._open_experiment_main()
        self.messages = []
        dist.barrier()

    def _open_experiment_main(self):
        a = self.args
        if not a.resume and not a.test_only and os.path.isdir(self.dir) and os.listdir(self.dir):
            stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
            archived = f'{self.dir}_archived_{stamp}'
            try:
                os.rename(self.dir, archived)
            except OSError as e:
                raise UserError(f'{self.dir}: exists and cannot be archived ({e.strerror or e})') from None
            self.messages.insert(0, f'Moved the previous experiment {self.dir} to {archived}')
        ensure_dir(os.path.join(self.dir, 'model'))
        note = stale_note(remove_stale_temps(self.dir, recursive=True))
        if note:
            self.messages.append(note)
        self.logger = Logger(os.path.join(self.dir, 'log.txt'), stream=self.stream)
        if not a.test_only:
            # appended per run, as the reference does (a resumed run adds its options)
            try:
                with open(os.path.join(self.dir, 'config.txt'), 'a', encoding='utf-8') as f:
                    f.write(f'From epoch {self.start_epoch - 1}...\n\n'
                            + ''.join(f'{k}: {v}\n' for k, v in sorted(vars(a).items())) + '\n')
            except OSError as e:
                raise UserError(f'{self.dir}/config.txt: cannot write ({e.strerror or e})') from None
        for m in self.messages:
            self.log(m)
        self.messages = []

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

    # ------------------------------------------------------------ training
    def _batch_weights(self):
        """Loss weight of each batch of this rank, so that the update (accumulated,
        and averaged over the ranks by Jittor) equals the one of a single big batch.

        Batch j of an accumulation group of ``S`` samples (all ranks) with
        ``s`` of them on this rank gets ``s * world / S``: the ranks' mean of
        the weighted batch means is then the mean over all ``S`` samples. A
        rank with no sample in the batch (the last one) gets weight 0.
        """
        sizes = self.loader.shard_sizes()
        acc = self.args.accumulate
        weights, last = [], []
        for j, (_, s) in enumerate(sizes):
            g0 = (j // acc) * acc
            group = sizes[g0:g0 + acc]
            weights.append(s * self.world / sum(g for g, _ in group))
            last.append(j == g0 + len(group) - 1)
        return weights, last, sizes

    def _global_losses(self, values, mine, total):
        """The batch's losses over all ranks: sum of (rank's mean x its samples) / samples."""
        if self.world == 1:
            return values
        summed = dist.all_sum([values[k] * mine for k in LOSS_NAMES]) / total
        return {k: float(v) for k, v in zip(LOSS_NAMES, summed)}

    def train_epoch(self, epoch):
        a = self.args
        factor = step_lr_factor(epoch, a.lr_decay, a.gamma)
        self.optimizer.set_lr_factor(factor)
        lr = self.optimizer.param_groups[0]['lr']
        self.log(f'[Epoch {epoch}] lr {lr:.2e} (flow net {self.optimizer.param_groups[-1]["lr"]:.2e})')
        jt.set_global_seed(epoch_seed(a.seed, epoch), different_seed_for_mpi=False)
        self.watchdog.phase(f'the start of epoch {epoch}')
        self._settle()
        self.loader.set_epoch(epoch)
        weights, last, sizes = self._batch_weights()
        sums = {k: 0.0 for k in LOSS_NAMES}
        n_batches = len(self.loader)
        progress = Progress(n_batches, desc=f'epoch {epoch}', stream=sys.stderr, enabled=self.main)
        self.watchdog.phase(f'training epoch {epoch}')
        try:
            for j, batch in enumerate(self.loader):
                x = jt.array(batch['lr'])
                out, _ = self.model({'x': x, 'mode': 'train'})
                total, terms = self.loss_fn(out)
                # read the losses before the update: a lazy Var evaluated after
                # p.update() would see the new weights
                jt.sync(list(terms.values()))
                values = self._global_losses({k: float(v.item()) for k, v in terms.items()},
                                             sizes[j][1], sizes[j][0])
                w = weights[j]
                self.optimizer.backward(total if w == 1 else total * w)
                if last[j]:
                    self.optimizer.step()
                self.watchdog.beat()
                if not all(math.isfinite(v) for v in values.values()):
                    raise UserError(f'epoch {epoch}, batch {j + 1}: the loss is not finite '
                                    f'({", ".join(f"{k} {v:.4g}" for k, v in values.items())}); '
                                    'lower --lr')
                for k in LOSS_NAMES:
                    sums[k] += values[k]
                progress.update(1, loss=sums['total'] / (j + 1))
                if (j + 1) % a.print_every == 0:
                    self.log(f'[{min((j + 1) * a.batch_size * self.world, len(self.train_set))}/'
                             f'{len(self.train_set)}] ' + self._fmt_losses(
                        {k: v / (j + 1) for k, v in sums.items()}))
        finally:
            progress.close()
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

    @staticmethod
    def _fmt_losses(d):
        return ''.join(f'[{k}: {d[k]:.4f}]' if k != 'kernel_center' else f'[{k}: {d[k]:.3e}]'
                       for k in LOSS_NAMES)

    def evaluate(self, epoch=None):
        """PSNR (recons vs HR), cycle-PSNR (input_cycle vs input), down-PSNR (recons_down vs input)."""
        a = self.args
        # No model.eval()/train() here: PWC_Recons behaves the same in both (the
        # mode is part of its input), and Jittor's train() re-enables gradients
        # by turning every parameter into a lazy copy, which changes how the
        # next step's kernels are fused and so its rounding: a resumed run
        # would no longer repeat the uninterrupted one bit for bit.
        c = a.n_sequence // 2
        sums = {k: 0.0 for k in PSNR_NAMES}
        n = len(self.test_set)
        mine = range(self.rank, n, self.world)  # this rank's share of the windows
        progress = Progress(len(mine), desc='evaluation', stream=sys.stderr, enabled=self.main)
        self.watchdog.phase('evaluation')
        try:
            with jt.no_grad():
                for done, i in enumerate(mine):
                    item = self.test_set.get(i)
                    out, _ = self.model({'x': jt.array(item['lr'][None]), 'mode': 'val'})
                    res = {k: out[k].numpy() for k in ('input', 'input_down', 'input_cycle', 'recons',
                                                       'recons_down', 'est_kernel')}
                    gt = item['hr'][None, c]
                    sums['psnr'] += calc_psnr(gt, res['recons'])
                    sums['cycle_psnr'] += calc_psnr(res['input'], res['input_cycle'])
                    sums['down_psnr'] += calc_psnr(res['input'], res['recons_down'])
                    if a.save_images and epoch is not None:
                        self._save_images(item, gt, res)
                    progress.update(1, psnr=sums['psnr'] / (done + 1))
                    self.watchdog.beat()
        finally:
            progress.close()
        total = dist.all_sum([sums[k] for k in PSNR_NAMES])
        return {k: float(v) / n for k, v in zip(PSNR_NAMES, total)}

    def _save_images(self, item, gt, res):
        video, frame = item['name'].split('/', 1)
        base = os.path.join(self.dir, 'result', str(self.args.data_test), video, frame)
        imgs = {'gt': to_uint8(gt[0]), 'lr': to_uint8(res['input'][0]), 'sr': to_uint8(res['recons'][0]),
                'lr_cycle': to_uint8(res['input_cycle'][0]), 'lr_down': to_uint8(res['input_down'][0]),
                'sr_down': to_uint8(res['recons_down'][0]), 'est_kernel': kernel_rgb_minmax(res['est_kernel'][0, 0])}
        if item.get('kernel') is not None:
            imgs['gt_kernel'] = kernel_rgb_minmax(item['kernel'])
        for post, img in imgs.items():
            save_png_atomic(f'{base}_{post}.png', img)

    # ------------------------------------------------------------ saving
    def save(self, epoch, is_best):
        """Model files first, the training state (the commit point) last; rank 0 only."""
        if not self.main:
            return
        self.watchdog.phase(f'saving epoch {epoch}')
        mdir = os.path.join(self.dir, 'model')
        weights = {k: v.numpy() for k, v in self.model.state_dict().items()}
        if self.args.save_middle_models:
            save_state_atomic(weights, os.path.join(mdir, f'model_{epoch}.pkl'))
        if is_best:
            save_state_atomic(weights, os.path.join(mdir, 'model_best.pkl'))
        save_state_atomic(weights, os.path.join(mdir, 'model_latest.pkl'))
        atomic_write_bytes(os.path.join(self.dir, 'history.json'),
                           json.dumps(self.history, indent=1).encode('utf-8'))
        self._plot()
        meta = {'epoch': int(epoch), 'history': self.history, 'best': list(self.best) if self.best else None,
                'config': dict({k: v for k, v in vars(self.args).items()
                                if isinstance(v, (str, int, float, bool, type(None)))}, mpi_ranks=self.world),
                'rng': {'seed': int(self.args.seed), 'next_epoch_seed': epoch_seed(self.args.seed, epoch + 1)},
                'saved_at': datetime.datetime.now().isoformat(timespec='seconds')}
        save_training_state(os.path.join(self.dir, STATE_NAME), meta, weights, self.optimizer.state())

    def _plot(self):
        h = self.history
        x = h['epoch']
        for k in LOSS_NAMES:
            save_line_plot(os.path.join(self.dir, f'loss_{k}.png'), {k: h[k]}, x=x, title=f'training loss: {k}',
                           ylabel='loss')
        if any(v is not None for v in h['psnr']):
            clean = {k: [np.nan if v is None else v for v in h[k]] for k in PSNR_NAMES}
            for k in PSNR_NAMES:
                save_line_plot(os.path.join(self.dir, f'{k}.png'), {k: clean[k]}, x=x, title=f'test {k}',
                               ylabel='dB')

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
                 f'{self.effective_batch()} = {a.batch_size} per rank x {self.world} rank(s) x '
                 f'{a.accumulate} accumulated'
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
            self.history['epoch'].append(epoch)
            self.history['lr'].append(lr)
            for k in LOSS_NAMES:
                self.history[k].append(losses[k])
            is_best = False
            for k in PSNR_NAMES:
                self.history[k].append(None if psnr is None else psnr[k])
            if psnr is not None and (self.best is None or psnr['psnr'] > self.best[0]):
                self.best = (psnr['psnr'], epoch)
                is_best = True
            jt.sync_all(True)  # the epoch's time includes every queued kernel
            self.log(f'Epoch {epoch} loss ' + self._fmt_losses(losses) + f' ({time.time() - t0:.1f}s)')
            if psnr is not None:
                self.log(f'[{a.data_test}] average Cycle-PSNR: {psnr["cycle_psnr"]:.3f} Down-PSNR: '
                         f'{psnr["down_psnr"]:.3f} PSNR: {psnr["psnr"]:.3f} '
                         f'(Best: {self.best[0]:.3f} @epoch {self.best[1]})')
            self.save(epoch, is_best)
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
