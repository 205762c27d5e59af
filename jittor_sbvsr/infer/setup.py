"""What an inference run needs before it starts: preset or demo paths, the model, the output folder.

Everything here reads or checks; only ``prepare_demo``
writes (the demo's synthetic clip and weights), and nothing here imports
Jittor before the checkpoint has been checked (numpy only).
"""
import os

from ..errors import UserError
from ..utils.files import is_temp_name, remove_stale_temps, stale_note

# preset -> (dataset folder under dataset/, checkpoint stem under pretrain_models/)
PRESETS = {
    'Gaussian_REDS4': ('REDS4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_Vid4': ('Vid4_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Gaussian_SPMCS': ('SPMCS_BlurDown_Gaussian', 'self_blind_vsr_gaussian'),
    'Realistic_REDS4': ('REDS4_BlurDown_Realistic', 'self_blind_vsr_realistic'),
}


def apply_preset(args, root):
    """Fill the paths of a --quick_test preset; fail listing what is missing."""
    if args.quick_test not in PRESETS:
        raise UserError(f"unknown --quick_test '{args.quick_test}' (known: {', '.join(PRESETS)})")
    data, stem = PRESETS[args.quick_test]
    args.input_path = os.path.join(root, 'dataset', data, 'LR_blurdown_x4')
    args.gt_path = os.path.join(root, 'dataset', data, 'HR')
    models = [os.path.join(root, 'pretrain_models', stem + ext) for ext in ('.pkl', '.pt')]
    args.model_path = next((m for m in models if os.path.isfile(m)), models[0])
    if args.infer_flag in ('.', '', None):
        args.infer_flag = args.quick_test
    missing = [p for p in (args.input_path, args.gt_path) if not os.path.isdir(p)]
    if not any(os.path.isfile(m) for m in models):
        missing.append(f'{models[0]} (or {os.path.basename(models[1])}, converted on the fly)')
    if missing:
        raise UserError(
            f"--quick_test {args.quick_test} needs: {'; '.join(missing)}. The test sets and checkpoints "
            'are those of the Self-Blind-VSR paper (download links in the README of github.com/csbhr/'
            'Self-Blind-VSR); put the test set under dataset/ and the model under pretrain_models/, '
            'or make a test set with tools/make_blurdown_dataset.py')


def prepare_demo(args, root):
    """--demo: a synthetic clip from scikit-image photos, end to end, no downloads.

    Uses the paper's checkpoint when it is in pretrain_models/, otherwise the
    deterministic recipe weights of the parity tests (not a trained model:
    the pipeline runs, the pictures are not better than bilinear). Returns
    the lines to log.
    """
    from ..data.synthetic import make_demo_videos
    demo = os.path.join(root, 'demo_results')
    data = os.path.join(demo, 'input')
    if not os.path.isdir(os.path.join(data, 'LR_blurdown_x4')):
        make_demo_videos(data, n_videos=2, n_frames=7, hr_size=(128, 192), seed=0)
    args.input_path = os.path.join(data, 'LR_blurdown_x4')
    args.gt_path = os.path.join(data, 'HR')
    args.result_path = demo
    if args.infer_flag in ('.', '', None):
        args.infer_flag = 'demo'
    args.border = args.save_kernel = True
    stem = os.path.join(root, 'pretrain_models', 'self_blind_vsr_realistic')
    found = [p for p in (stem + '.pkl', stem + '.pt') if os.path.isfile(p)]
    if found:
        args.model_path = found[0]
        return []
    from ..weights.checkpoint import save_state_atomic
    from ..weights.recipe import recipe_state
    from ..models import PWC_Recons
    args.model_path = os.path.join(demo, 'recipe_weights_seed1234.pkl')
    stale = stale_note(remove_stale_temps(demo, of=os.path.basename(args.model_path)))  # a killed first demo's
    if not os.path.isfile(args.model_path):
        shapes = {k: v.shape for k, v in PWC_Recons().state_dict().items()}
        save_state_atomic(recipe_state(shapes, seed=1234), args.model_path)
    return [line for line in (stale, 'demo: no checkpoint in pretrain_models/, using deterministic untrained '
                              'recipe weights (put self_blind_vsr_realistic.pkl there for real results)') if line]


def read_checkpoint(model_path, n_seq=None, scale=None):
    """(state, architecture) of a checkpoint, with the flags given checked against it.

    numpy only: a wrong file or flag is reported before Jittor starts.
    ``n_seq`` / ``scale`` None take the checkpoint's values.
    """
    from ..weights.arch import conflict_error, conflicts, derive_arch
    from ..weights.checkpoint import check_finite, load_state
    model_path = os.fspath(model_path)
    if os.path.isdir(model_path):
        raise UserError(f'{model_path}: is a folder; --model_path takes a weights file (.pkl or .pt)')
    if not os.path.isfile(model_path):
        raise UserError(f'{model_path}: model file not found (--model_path)')
    if _is_training_state(model_path):
        raise UserError(f"{model_path}: is the trainer's state for --resume, not a model; give the "
                        'model/model_latest.pkl or model/model_best.pkl beside it')
    state = load_state(model_path)
    arch = derive_arch(state, model_path)
    check_finite(state, model_path)
    if scale is not None and (scale < 1 or scale & (scale - 1)):
        raise UserError(f"--scale {scale}: must be a power of two (the model upsamples in x2 steps), and "
                        f"the checkpoint {model_path} is x{arch['scale']}; leave --scale out to use that")
    if n_seq is not None and (n_seq < 1 or n_seq % 2 == 0):
        raise UserError(f'--n_seq {n_seq}: must be a positive odd number (the centre frame and as many '
                        f"neighbours on each side), and the checkpoint {model_path} takes "
                        f"{arch['n_sequence']}-frame windows; leave --n_seq out to use that")
    found = conflicts(arch, {'scale': ('--scale', scale), 'n_sequence': ('--n_seq', n_seq)})
    if found:
        raise conflict_error(model_path, found, "leave the flag out to use the checkpoint's value, or give a "
                             'checkpoint made for it')
    return state, arch


def _is_training_state(path):
    """True for the trainer's training_state.npz (trainer/state.py): a zip with a meta entry."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return 'meta.npy' in z.namelist() and any(n.startswith('model/') for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def build_model(state, arch, model_path):
    """The PWC_Recons ``arch`` describes, with ``state`` loaded strictly (finite values only)."""
    import jittor_sbvsr  # noqa: F401
    from ..weights.arch import describe
    from ..weights.checkpoint import expected_shapes, load_into_module, validate_state
    from ..models import PWC_Recons
    net = PWC_Recons(**arch)
    validate_state(state, expected_shapes(net), model_path,
                   what=f'the model its own tensors describe ({describe(arch)})')
    load_into_module(net, state, model_path)
    net.eval()
    return net


def _holds_results(folder):
    """True when ``folder`` has any file but the leftovers of interrupted writes."""
    if not os.path.isdir(folder):
        return False
    return any(not is_temp_name(f) for _, _, files in os.walk(folder) for f in files)


def choose_output_dir(result_path, flag, named, resume=False):
    """(folder, note) of this run's results: never a folder with an earlier run's results.

    A flag the user ``named`` that is taken is an error (they may mean to
    replace it: that is theirs to do); the automatic names (time stamp,
    --demo, --quick_test) move on to ``infer_<flag>_2``, ``_3``, ... With
    ``resume`` the folder is ``infer_<flag>`` itself: an interrupted run's
    (it holds the record of resume.py), or a new one. Writes nothing.
    """
    from .resume import has_record
    if os.path.exists(result_path) and not os.path.isdir(result_path):
        raise UserError(f'{result_path}: --result_path exists and is not a folder')
    base = os.path.join(result_path, f'infer_{flag}')
    if os.path.exists(base) and not os.path.isdir(base):
        raise UserError(f'{base}: exists and is not a folder; choose another --infer_flag')
    if resume:
        if _holds_results(base) and not has_record(base):
            raise UserError(f'{base}: holds a finished run (or one of an older version, with no record of its '
                            'frames): nothing to resume')
        return base, (None if _holds_results(base) else f'note: --resume: {base} holds no earlier run; '
                      'this run starts from the first frame')
    if not _holds_results(base):
        return base, None
    if named:
        hint = (' (an interrupted run: rerun the same command with --resume to continue it)'
                if has_record(base) else '')
        raise UserError(f"{base}: already holds the results of an earlier run{hint}; runs are never mixed: choose "
                        'another --infer_flag, or move that folder away')
    k = 2
    while _holds_results(f'{base}_{k}'):
        k += 1
    return f'{base}_{k}', f'note: {base} holds an earlier run; this run writes to {base}_{k}'
