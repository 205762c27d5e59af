"""Training configurations (``--template``) and the training sets ``--data_train`` names.

Paths are relative to :data:`jittor_sbvsr.paths.ROOT`; cli/train_options.py
resolves them.
"""
import os

from ..paths import ROOT

__all__ = ['DEMO_DATA', 'PATH_OPTIONS', 'TEMPLATES', 'TRAIN_SETS']

# The demo template's clips: written there on first use (and only there).
DEMO_DATA = os.path.join(ROOT, 'dataset', 'demo')

# The paper configuration shared by the reference's two templates.
_PAPER = dict(
    task='FlowVideoSR', model='PWC_Recons', HR_in=False, scale=4, patch_size=160, n_sequence=5,
    n_frames_per_video=50, n_feat=128, extra_RBS=3, recons_RBS=20, ksize=13, loss='1*L1',
    lr=1e-4, lr_decay=100, save_middle_models=True, save_images=False, epochs=500, batch_size=8,
    data_test='REDS_HRLR',
)

TEMPLATES = {
    'Self_Blind_VSR_Gaussian': dict(
        _PAPER, save='Self_Blind_VSR_Gaussian', data_train='REDS_BLURDOWN_GAUSSIAN',
        dir_data='dataset/REDS/train', dir_data_test='dataset/REDS4_BlurDown_Gaussian'),
    'Self_Blind_VSR_Realistic': dict(
        _PAPER, save='Self_Blind_VSR_Realistic', data_train='REDS_BLURDOWN_REALISTIC',
        dir_data='dataset/REDS/train', dir_data_test='dataset/REDS4_BlurDown_Realistic'),
    # Self-supervised fine-tuning of a trained model on LR footage alone
    # (no HR, no evaluation unless --dir_data_test names a paired test set).
    'Self_Blind_VSR_Finetune': dict(
        _PAPER, save='Self_Blind_VSR_Finetune', data_train='LR_ONLY', data_test='TEST',
        dir_data='dataset/LR_videos', dir_data_test='',
        pre_train='pretrain_models/self_blind_vsr_realistic.pt', lr=1e-5, epochs=20,
        save_middle_models=False, n_frames_per_video=0),
    # A few minutes on a CPU: tiny network, tiny patches, synthetic clips made
    # from scikit-image photos (written to dir_data when it does not exist).
    'Self_Blind_VSR_Demo': dict(
        _PAPER, save='Self_Blind_VSR_Demo', data_train='DEMO', data_test='DEMO',
        dir_data=DEMO_DATA, dir_data_test=DEMO_DATA, n_feat=16, extra_RBS=1, recons_RBS=2,
        patch_size=24, batch_size=2, epochs=3, test_every=4, n_frames_per_video=7, n_threads=0,
        save_middle_models=False, save_images=True, print_every=2),
}

# Options whose default is a path relative to the repository root.
PATH_OPTIONS = ('dir_data', 'dir_data_test', 'pre_train', 'experiment_dir', 'pretrain_models_dir')

# data_train -> kind of training set
TRAIN_SETS = {
    'REDS_BLURDOWN_GAUSSIAN': 'gaussian',
    'REDS_BLURDOWN_REALISTIC': 'realistic',
    'DEMO': 'gaussian',
    'LR_ONLY': 'lr_only',
}
