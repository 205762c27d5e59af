"""``inference.py`` / ``sbvsr-infer``: the reference's flags and this port's (``--help`` lists them all),
parsed into the run's plan (infer/plan.py), which infer/run.py carries out."""
from ..data.video import DEFAULT_CRF
from ..utils.memory import size_arg
from . import ROOT, guarded
from .parser import Parser


def build_parser():
    # Parser: a bad flag is one 'error:' line and exit 2, like every other bad input
    p = Parser(description='Self-Blind-VSR inference (Jittor)')
    p.add_argument('--input_path', default='dataset/input',
                   help='a video file, a folder of video files, or a folder with one sub-folder of frames per video')
    p.add_argument('--gt_path', default=None,
                   help='ground truth, the same kinds (optional: no metrics without it); frames of a video file '
                        'pair by index')
    p.add_argument('--model_path', default='pretrain_models/self_blind_vsr_realistic.pkl',
                   help='weights: .pkl (tools/convert_torch_weights.py) or the original .pt')
    p.add_argument('--result_path', default='infer_results', help='where infer_<flag>/ is written')
    p.add_argument('--infer_flag', default='.',
                   help='name of this run: results go to <result_path>/infer_<flag>/, which must not hold an '
                        "earlier run's results (default: a time stamp)")
    p.add_argument('--resume', action='store_true',
                   help='continue the interrupted run of the same --infer_flag (same command): finished frames '
                        'are kept, the rest is run (one process only, not under mpirun)')
    p.add_argument('--quick_test', default='.', help='Gaussian_REDS4 | Gaussian_Vid4 | Gaussian_SPMCS | '
                   'Realistic_REDS4 (paths under dataset/ and pretrain_models/)')
    p.add_argument('--n_seq', type=int, default=None,
                   help="frames per window (default: the checkpoint's; given, it must match it)")
    p.add_argument('--scale', type=int, default=None,
                   help="upsampling factor (default: the checkpoint's; given, it must match it)")
    p.add_argument('--size_must_mode', type=int, default=1,
                   help='crop LR frames (and the ground truth with them) to a multiple of this')
    p.add_argument('--border', action='store_true', help='also restore the first/last n_seq//2 frames')
    p.add_argument('--save_image', dest='save_image', action='store_true', default=None,
                   help='save SR frames as PNG (default for frame folders; video files give a video)')
    p.add_argument('--no_save_image', dest='save_image', action='store_false', help='do not save SR frames')
    p.add_argument('--crf', type=int, default=DEFAULT_CRF,
                   help=f'H.264 quality of output videos, 0..51, lower is better (default {DEFAULT_CRF}: near-lossless)')
    p.add_argument('--save_kernel', action='store_true', help='save each estimated kernel (.npy and .png)')
    p.add_argument('--start', default=None,
                   help='only a part of each video, from here: seconds (90, 90.5), [HH:]MM:SS[.ms] (00:01:30) '
                        'or a frame number (120f); sound and subtitles are cut to the same part')
    p.add_argument('--duration', default=None,
                   help='only this much of each video (from --start, or from its first frame): seconds, '
                        '[HH:]MM:SS[.ms] or frames (50f)')
    p.add_argument('--compare', action='store_true',
                   help='also write bicubic | result (| ground truth) beside the output: PNGs side by side in '
                        'compare/<video>/ for frame folders, a split-screen <video>_compare.mp4 for video files')
    p.add_argument('--verbose', action='store_true', help="show Jittor's start-up [i ...] lines")
    p.add_argument('--demo', action='store_true',
                   help='super-resolve a synthetic clip made from scikit-image photos into demo_results/')
    p.add_argument('--no_reuse', action='store_true',
                   help='recompute every frame feature per window (slower; for benchmarks)')
    p.add_argument('--no_fused', action='store_true',
                   help="run every convolution through Jittor's own op (no fused oneDNN chains on the CPU)")
    p.add_argument('--no_winograd', action='store_true',
                   help='direct 3x3 convolutions in the fused chains, not Winograd (ours on AVX2 CPUs, or '
                        "oneDNN's on AVX-512 where it is faster; Winograd is faster and rounds slightly differently)")
    p.add_argument('--no_compose', action='store_true',
                   help='run the upsampling and output convolutions layer by layer, not composed into '
                        'one LR convolution (slower; float rounding differs)')
    add_engine_flags(p)
    p.add_argument('--dry_run', action='store_true',
                   help='print the memory plan (device, budgets, tile size, tiles per window, estimated peak '
                        'memory) and exit without running the network; --device cuda --max_memory 3G plans for '
                        'a GPU with 3 GiB free, on any machine')
    add_tf32_flag(p)
    return p


def add_engine_flags(p):
    """The flags that choose where and in what pieces the network runs; bench/infer_speed.py
    takes them from here too."""
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--tile', type=int, default=0,
                   help='reconstruct in tiles of N x N LR pixels to bound memory (0: whole frames); '
                        'the kernel and flows are still estimated on whole frames')
    p.add_argument('--tile_overlap', type=int, default=16,
                   help='overlap of neighbouring tiles in LR pixels (blended linearly)')
    p.add_argument('--max_memory', type=size_arg, default=None,
                   help='memory a window may use beyond the loaded model, e.g. 2G or 512M (on CUDA: the device '
                        "memory the run may take; cuDNN's workspace and the allocator's slack come out of it): "
                        'without --tile, the largest tile that fits is chosen (default: on CUDA 90%% of the free '
                        'device memory, on the CPU 75%% of the available RAM)')


def add_tf32_flag(p):
    """--tf32, for inference and training alike."""
    p.add_argument('--tf32', action='store_true',
                   help='let cuDNN and cuBLAS use TF32 on Ampere and newer GPUs (faster; results move past '
                        'the parity tolerances; default off)')


def main(argv=None):
    def work():
        args = build_parser().parse_args(argv)
        from .. import runtime
        from ..infer.plan import make_plan
        from ..infer.run import run
        runtime.allow_tf32(args.tf32)
        if not args.dry_run or args.demo:  # a dry run starts no Jittor, unless the demo makes its weights
            runtime.quiet_jittor(args.verbose)
        plan = make_plan(vars(args), ROOT)
        if plan.dry_run:
            from ..infer.memory_plan import dry_run
            dry_run(plan)
        else:
            run(plan)

    return guarded(work)
