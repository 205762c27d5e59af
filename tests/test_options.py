"""Training options (cli/train_options.py, trainer/templates.py, paths.py): templates, paths, overrides, checks."""
from pathlib import Path

import pytest

from jittor_sbvsr.errors import UserError
from jittor_sbvsr.cli.train_options import parse_args
from jittor_sbvsr.paths import ROOT as OPT_ROOT
from jittor_sbvsr.trainer.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]


def test_templates_resolve_paths_and_flags_override_them():
    assert Path(OPT_ROOT) == ROOT
    a = parse_args(['--template', 'Self_Blind_VSR_Gaussian'])
    want = dict(lr=1e-4, lr_decay=100, gamma=0.5, epochs=500, batch_size=8, patch_size=160, n_sequence=5,
                n_frames_per_video=50, n_feat=128, extra_RBS=3, recons_RBS=20, ksize=13, test_every=1000,
                print_every=100, rgb_range=1, weight_decay=0.0, scale=4, beta1=0.9, beta2=0.999,
                epsilon=1e-8, seed=1, accumulate=1, save='Self_Blind_VSR_Gaussian', save_middle_models=True,
                save_images=False, data_train='REDS_BLURDOWN_GAUSSIAN', resume=False, cpu=False)
    assert {k: getattr(a, k) for k in want} == want
    assert a.dir_data == str(ROOT / 'dataset' / 'REDS' / 'train')
    assert a.dir_data_test == str(ROOT / 'dataset' / 'REDS4_BlurDown_Gaussian')
    assert a.experiment_dir == str(ROOT / 'experiment')
    assert a.pretrain_models_dir == str(ROOT / 'pretrain_models')
    r = parse_args(['--template', 'Self_Blind_VSR_Realistic'])
    assert r.data_train == 'REDS_BLURDOWN_REALISTIC' and r.dir_data_test.endswith('REDS4_BlurDown_Realistic')
    # flags override the template; command-line paths stay as typed
    o = parse_args(['--template', 'Self_Blind_VSR_Gaussian', '--batch_size', '2', '--patch_size', '64',
                    '--epochs', '3', '--dir_data', 'my/data', '--cpu', '--accumulate', '4'])
    assert (o.batch_size, o.patch_size, o.epochs, o.dir_data, o.cpu, o.accumulate) == (2, 64, 3, 'my/data', True, 4)
    assert o.n_feat == 128 and o.lr_decay == 100
    f = parse_args(['--template', 'Self_Blind_VSR_Finetune', '--dir_data', 'my/LR_videos',
                    '--pre_train', 'm.pt'])
    assert f.data_train == 'LR_ONLY' and f.dir_data == 'my/LR_videos' and f.pre_train == 'm.pt'
    assert f.dir_data_test == '' and f.n_frames_per_video is None
    d = parse_args(['--template', 'Self_Blind_VSR_Demo'])
    assert d.n_feat == 16 and d.dir_data == str(ROOT / 'dataset' / 'demo')
    l = parse_args(['--template', 'Self_Blind_VSR_Demo', '--load', 'x'])
    assert l.save == 'x' and l.resume
    assert set(TEMPLATES) == {'Self_Blind_VSR_Gaussian', 'Self_Blind_VSR_Realistic', 'Self_Blind_VSR_Finetune',
                              'Self_Blind_VSR_Demo'}
    with pytest.raises(UserError, match='Self_Blind_VSR_Demo'):
        parse_args(['--template', 'Nope'])
    with pytest.raises(UserError, match='patch_size'):
        parse_args(['--patch_size', '0'])


@pytest.mark.parametrize('flag, value, match', [('--n_GPUs', '2', 'mpirun'), ('--process', None, 'on demand'),
                                                 ('--size_must_mode', '4', 'crops no frame'),
                                                 ('--mid_loss_weight', '0.5', 'no middle term')])
def test_flags_without_an_effect_are_refused(flag, value, match):
    with pytest.raises(UserError, match=match):
        parse_args([flag] + ([value] if value else []))
    if value is not None:  # the default is accepted
        parse_args([flag, {'--mid_loss_weight': '1.0'}.get(flag, '1')])
