"""An inference run decided before it starts: :func:`make_plan` turns the flags into a frozen
:class:`Plan`, which run.py executes.

Everything a run depends on is resolved and checked here, once, before
anything is written: the flags, a --quick_test preset or the --demo, the
checkpoint (and the window length and scale it was made for), every input
frame (inputs.py), what video files change in the defaults, the output
folder, the device and the memory budget, and, with --resume, the frames an
interrupted run finished. The same :data:`SETTINGS` make the log's header
and the record a resumed run is checked against (resume.py). Only the demo
writes here (its synthetic clip and weights); nothing imports Jittor before
the checkpoint and the inputs have been checked.
"""
import dataclasses
import os
import time
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple

from .. import dist, runtime
from ..errors import UserError
from ..utils import lock
from ..utils.files import is_temp_name, remove_stale_temps, stale_note

# preset -> (dataset folder under dataset/, checkpoint stem under pretrain_models/)
PRESETS = {
    'Gaussian_REDS4': ('REDS4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_Vid4': ('Vid4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_SPMCS': ('SPMCS_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Realistic_REDS4': ('REDS4_BlurDown_Realistic', 'self_blind_vsr_realistic'),
}

# what the outputs depend on, in the order the log's header lists them; the record of a resumed
# run holds the same (resume.py), the paths replaced by what they hold
SETTINGS = ('input_path', 'gt_path', 'model_path', 'n_seq', 'scale', 'size_must_mode', 'border', 'save_image',
            'save_kernel', 'crf', 'no_reuse', 'no_fused', 'no_winograd', 'no_compose', 'tile', 'tile_overlap',
            'max_memory', 'device', 'tf32', 'start', 'duration', 'compare')


def given(value):
    """A flag's value, None where it was left unset ('.' and '' are the reference's "unset")."""
    return None if value in ('.', '', None) else value


@dataclasses.dataclass(frozen=True)
class Plan:
    """One inference run, every choice made (make_plan); ``run(plan)`` only carries it out."""
    input_path: str
    gt_path: Optional[str]
    model_path: str
    n_seq: int
    scale: int
    size_must_mode: int
    border: bool
    save_image: bool
    save_kernel: bool
    crf: int
    no_reuse: bool
    no_fused: bool
    no_winograd: bool
    no_compose: bool
    tile: int
    tile_overlap: int
    max_memory: Optional[int]           # as given (--max_memory); ``budget``: what the run uses
    device: str                         # 'cpu' or 'cuda', as chosen
    tf32: bool                          # --tf32: cuDNN and cuBLAS may use TF32 (runtime.allow_tf32)
    out_dir: str
    resume: bool
    videos: Tuple[Any, ...]             # inputs.Video, checked
    arch: Mapping[str, Any]             # the checkpoint's architecture (weights/arch.py)
    budget: Optional[int] = None        # bytes a window may use (None: no limit)
    done: Mapping = dataclasses.field(default_factory=lambda: MappingProxyType({}))  # {(video, window): (PSNR,
    #   SSIM, seconds)} of the frames an interrupted run finished (--resume)
    earlier_budget: Optional[int] = None  # the budget of the run --resume continues
    notes: Tuple[str, ...] = ()         # lines for the log
    weights: Any = dataclasses.field(default=None, repr=False, compare=False)  # model.Checkpoint
    dry_run: bool = False               # --dry_run: the memory plan is printed, nothing run (memory_plan.py)
    start: Optional[str] = None         # --start, as given: the part of each video restored (inputs.py:_part)
    duration: Optional[str] = None      # --duration, as given
    compare: bool = False               # --compare: bicubic | result (| ground truth) written beside (compare.py)
    demo: bool = False                  # --demo: the log says whether its model beats bicubic (baseline.py)

    @property
    def world(self):
        return dist.world_size()

    def header(self):
        """The log's first lines: every setting, then where the results go."""
        return ([f'{k}: {getattr(self, k)}' for k in SETTINGS]
                + [f'resume: {self.resume}', f'result_path: {self.out_dir}'])

    def signature(self):
        """What the outputs depend on (SETTINGS, the checkpoint by its SHA-256, the inputs by their
        names and frame counts), as the record of a run keeps it; None under mpirun (no record)."""
        import json
        from .resume import file_digest
        if self.world > 1:
            return None
        sig = {k: getattr(self, k) for k in SETTINGS if k not in ('input_path', 'model_path')}
        sig['model'] = file_digest(self.model_path)
        sig['input'] = [[v.name, v.n] for v in self.videos]
        sig['gt_path'] = os.path.abspath(self.gt_path) if self.gt_path else None
        sig['budget'] = self.budget
        return json.loads(json.dumps(sig))  # the types the record reads back

    @property
    def scored(self):
        """True when some video gets PSNR/SSIM."""
        return any(v.gt is not None and v.no_metric is None for v in self.videos)


def check_flags(o):
    """The flags that are wrong whatever the data and checkpoint (--scale and --n_seq are checked
    with the checkpoint, model.read_checkpoint); before anything is read."""
    from .engine import check_tiles
    if o['size_must_mode'] < 1:
        raise UserError(f"--size_must_mode {o['size_must_mode']}: must be >= 1 (1: no crop)")
    check_tiles(o['tile'], o['tile_overlap'])
    if not 0 <= o['crf'] <= 51:
        raise UserError(f"--crf {o['crf']}: must be 0..51 (x264; lower is better)")
    flag = o['infer_flag']
    if flag not in ('.', None) and (flag in ('', '..') or os.sep in flag or (os.altsep and os.altsep in flag)):
        raise UserError(f"--infer_flag '{flag}': must be a plain name (it becomes the folder infer_<flag>)")
    flag = given(flag)
    if o['resume'] and runtime.mpi_env() is not None:
        raise UserError('--resume does not work under mpirun (a run there keeps no record of its frames); '
                        'resume it in one process, or rerun it with another --infer_flag')
    if o['resume'] and flag is None and not o['demo'] and o['quick_test'] is None:
        raise UserError('--resume needs the --infer_flag of the run it continues')
    span(o)


def span(o):
    """--start / --duration as data/video.py:parse_position reads them (None where not given); bad
    text is one line."""
    from ..data.video import parse_position
    out = []
    for name in ('start', 'duration'):
        text = o.get(name)
        try:
            out.append(None if text is None else parse_position(text))
        except ValueError as e:
            raise UserError(f'--{name} {e}') from None
    if out[1] is not None and out[1][1] <= 0:
        raise UserError(f"--duration {o['duration']}: must be more than 0")
    return tuple(out)


def make_plan(options, root):
    """The Plan of the run ``options`` ({flag: value}, as cli/infer.py parses them) describe; the
    relative defaults (dataset/, pretrain_models/, demo_results/) under ``root``."""
    from .inputs import check_videos, is_video, list_inputs
    from .model import Checkpoint
    from .memory_plan import run_budget
    from .resume import finished
    o = dict(options)
    o.update(quick_test=given(o['quick_test']), gt_path=given(o['gt_path']))
    notes = []
    check_flags(o)  # 1. the flags alone
    o['infer_flag'] = given(o['infer_flag'])
    named = o['infer_flag'] is not None
    if o['demo']:   # 2. the paths a preset or the demo stand for
        notes.extend(_demo(o, root))
    elif o['quick_test'] is not None:
        o.update(preset(o['quick_test'], root))
    flag = o['infer_flag'] or time.strftime('%Y%m%d-%H%M%S')
    out_dir, note = choose_output_dir(o['result_path'], flag, named, resume=o['resume'])
    notes.extend([note] if note else [])
    weights = Checkpoint.read(o['model_path'], o['n_seq'], o['scale'])  # 3. the model
    arch = weights.arch
    inputs = list_inputs(o['input_path'], 'input folder (--input_path)')  # 4. the inputs
    has_video = any(is_video(src) for _, src in inputs)
    # video files keep every frame (border windows: the output keeps its length and audio sync) and
    # write PNG frames only when --save_image is given; frame folders write PNGs by default
    save_image = (not has_video) if o['save_image'] is None else o['save_image']
    border = o['border']
    if has_video and not border:
        border = True
        notes.append('note: video files are restored with --border (every frame gets an output)')
    videos = check_videos(inputs, o['gt_path'], arch['n_sequence'], arch['scale'], o['size_must_mode'],
                          border, notes, span(o))
    dry = bool(o.get('dry_run'))  # 5. where it runs, into which folder, in what memory
    if dry:  # the device the run would take, known without starting Jittor or CUDA
        device = o['device'] if o['device'] != 'auto' else ('cuda' if runtime.cuda_possible() else 'cpu')
    else:
        device = runtime.select_device(o['device'])
        out_dir = dist.broadcast_text(out_dir)  # rank 0's: a time stamp may differ by a second
    plan = Plan(input_path=o['input_path'], gt_path=o['gt_path'], model_path=os.fspath(o['model_path']),
                n_seq=arch['n_sequence'], scale=arch['scale'], size_must_mode=o['size_must_mode'], border=border,
                save_image=save_image, save_kernel=o['save_kernel'], crf=o['crf'], no_reuse=o['no_reuse'],
                no_fused=o['no_fused'], no_winograd=o['no_winograd'], no_compose=o['no_compose'],
                tile=o['tile'], tile_overlap=o['tile_overlap'], max_memory=o['max_memory'], device=device,
                tf32=bool(o.get('tf32')), out_dir=out_dir, resume=o['resume'], videos=tuple(videos),
                arch=MappingProxyType(dict(arch)), notes=tuple(notes), weights=weights, dry_run=dry,
                start=o.get('start'), duration=o.get('duration'), compare=bool(o.get('compare')),
                demo=bool(o.get('demo')))
    if dry:
        return plan
    done, earlier = finished(out_dir, plan.signature()) if o['resume'] else ({}, None)
    return dataclasses.replace(plan, budget=run_budget(o['max_memory'], o['tile'], earlier, device),
                               done=MappingProxyType(done), earlier_budget=earlier)


def preset(name, root):
    """The paths of a --quick_test preset (and its name as the run's flag); fails listing what is
    missing."""
    if name not in PRESETS:
        raise UserError(f"unknown --quick_test '{name}' (known: {', '.join(PRESETS)})")
    from ..data.testsets import layout
    data, stem = PRESETS[name]
    folders = layout(os.path.join(root, 'dataset', data))
    paths = {'input_path': folders['lr'], 'gt_path': folders['hr']}
    models = [os.path.join(root, 'pretrain_models', stem + ext) for ext in ('.pkl', '.pt')]
    missing = [p for p in paths.values() if not os.path.isdir(p)]
    if not any(os.path.isfile(m) for m in models):
        missing.append(f'{models[0]} (or {os.path.basename(models[1])}, converted on the fly)')
    if missing:
        raise UserError(
            f"--quick_test {name} needs: {'; '.join(missing)}. The test sets and checkpoints "
            'are those of the Self-Blind-VSR paper (download links in the README of github.com/csbhr/'
            'Self-Blind-VSR); put the test set under dataset/ and the model under pretrain_models/, '
            'or make a test set with tools/make_blurdown_dataset.py')
    return dict(paths, model_path=next(m for m in models if os.path.isfile(m)), infer_flag=name)


def _demo(o, root):
    """--demo into ``o``; under mpirun rank 0 makes the demo's files first, then the others find them."""
    if runtime.mpi_env() is None:
        return prepare_demo(o, root)
    runtime.select_device(o['device'])  # Jittor, and with it MPI
    if dist.rank() == 0:
        notes = prepare_demo(o, root)
        dist.barrier()
        return notes
    dist.barrier()
    return prepare_demo(o, root)


def prepare_demo(o, root):
    """--demo: a synthetic clip from scikit-image photos, end to end, no downloads; its paths and
    flags set in ``o`` (the plan's working copy of the flags).

    Uses the paper's checkpoint when it is in pretrain_models/, otherwise the
    demo's model (weights/demo.py: trained by the Self_Blind_VSR_Demo template on
    these clips, its PWC-Net rebuilt from the recipe's seed), written once into
    demo_results/. Returns the lines to log.
    """
    from ..data.synthetic import make_demo_videos
    from ..data.testsets import layout
    demo = os.path.join(root, 'demo_results')
    data = layout(os.path.join(demo, 'input'))
    if not os.path.isdir(data['lr']):
        make_demo_videos(data['root'], n_videos=2, n_frames=7, hr_size=(128, 192), seed=0)
    o.update(input_path=data['lr'], gt_path=data['hr'], result_path=demo,
             infer_flag=o['infer_flag'] or 'demo', border=True, save_kernel=True)
    stem = os.path.join(root, 'pretrain_models', 'self_blind_vsr_realistic')
    found = [p for p in (stem + '.pkl', stem + '.pt') if os.path.isfile(p)]
    if found:
        o['model_path'] = found[0]
        return []
    import hashlib
    from ..weights.checkpoint import save_state_atomic
    from ..weights.demo import DEMO_MODEL, demo_state
    from ..weights.recipe import recipe_state
    from ..trainer.templates import TEMPLATES
    from ..models import PWC_Recons
    trained = os.path.isfile(DEMO_MODEL)  # else (a copy without it) the untrained recipe, and the log says so
    if trained:
        with open(DEMO_MODEL, 'rb') as f:
            tag = hashlib.sha256(f.read()).hexdigest()[:12]
        o['model_path'] = os.path.join(demo, f'demo_model_{tag}.pkl')  # another packed model, another file
    else:
        o['model_path'] = os.path.join(demo, RECIPE_NAME)
    stale = stale_note(remove_stale_temps(demo, of=os.path.basename(o['model_path'])))  # a killed first demo's
    if not os.path.isfile(o['model_path']):
        t = TEMPLATES['Self_Blind_VSR_Demo']
        net = PWC_Recons(n_feat=t['n_feat'], extra_RBS=t['extra_RBS'], recons_RBS=t['recons_RBS'], ksize=t['ksize']) \
            if trained else PWC_Recons()
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        save_state_atomic(demo_state(shapes) if trained else recipe_state(shapes, seed=1234), o['model_path'])
    what = ('the demo model trained on these clips by main.py --template Self_Blind_VSR_Demo' if trained else
            f'untrained recipe weights ({DEMO_MODEL} is missing)')
    return [line for line in (stale, f'demo: no checkpoint in pretrain_models/, using {what} (put '
                              'self_blind_vsr_realistic.pkl there for the paper\'s model)') if line]


RECIPE_NAME = 'recipe_weights_seed1234.pkl'  # the demo's model when its trained one is missing: untrained


def demo_untrained(model_path):
    """Whether the demo runs on the untrained recipe weights."""
    return os.path.basename(model_path) == RECIPE_NAME


def _holds_results(folder):
    """True when ``folder`` has any file but the leftovers of interrupted writes (and a run's lock)."""
    if not os.path.isdir(folder):
        return False
    return any(not is_temp_name(f) and f != lock.NAME for _, _, files in os.walk(folder) for f in files)


def _running(folder):
    """A run is writing into ``folder`` now: one line naming it (utils/lock.py)."""
    who = lock.holder(folder)
    if who is not None:
        raise UserError(f'{folder}: another run is writing there now, {who}; wait for it to end, or choose '
                        'another --infer_flag')


def choose_output_dir(result_path, flag, named, resume=False):
    """(folder, note) of this run's results: never a folder with an earlier run's results.

    A flag the user ``named`` that is taken is an error (they may mean to
    replace it: that is theirs to do); the automatic names (time stamp,
    --demo, --quick_test) move on to ``infer_<flag>_2``, ``_3``, ... With
    ``resume`` the folder is ``infer_<flag>`` itself: an interrupted run's
    (it holds the record of resume.py), or a new one. A folder a running
    run holds (utils/lock.py) is taken too: refused by name, moved on from
    otherwise. Writes nothing; run.py takes the folder's lock.
    """
    from .resume import has_record
    if os.path.exists(result_path) and not os.path.isdir(result_path):
        raise UserError(f'{result_path}: --result_path exists and is not a folder')
    base = os.path.join(result_path, f'infer_{flag}')
    if os.path.exists(base) and not os.path.isdir(base):
        raise UserError(f'{base}: exists and is not a folder; choose another --infer_flag')
    if resume or named:
        _running(base)
    if resume:
        if _holds_results(base) and not has_record(base):
            raise UserError(f'{base}: holds a finished run (or one of an older version, with no record of its '
                            'frames): nothing to resume')
        return base, (None if _holds_results(base) else f'note: --resume: {base} holds no earlier run; '
                      'this run starts from the first frame')
    if not _holds_results(base) and lock.holder(base) is None:
        return base, None
    if named:
        hint = (' (an interrupted run: rerun the same command with --resume to continue it)'
                if has_record(base) else '')
        raise UserError(f"{base}: already holds the results of an earlier run{hint}; runs are never mixed: choose "
                        'another --infer_flag, or move that folder away')
    k = 2
    while _holds_results(f'{base}_{k}') or lock.holder(f'{base}_{k}') is not None:
        k += 1
    return f'{base}_{k}', f'note: {base} holds an earlier run; this run writes to {base}_{k}'
