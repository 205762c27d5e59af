"""The model of an inference run: its checkpoint read and checked (numpy only), then loaded."""
import os

from ..errors import UserError


class Checkpoint:
    """A checkpoint read and checked (``read``); its arrays handed over once (``take``: the model
    holds them then), read again if asked for a second time."""

    def __init__(self, path, n_seq, scale, state, arch):
        self.path, self._flags, self._state, self.arch = path, (n_seq, scale), state, arch

    @classmethod
    def read(cls, path, n_seq=None, scale=None):
        state, arch = read_checkpoint(path, n_seq, scale)
        return cls(os.fspath(path), n_seq, scale, state, arch)

    def take(self):
        state, self._state = self._state, None
        return state if state is not None else read_checkpoint(self.path, *self._flags)[0]

    def model(self):
        """The PWC_Recons of this checkpoint, loaded (Jittor from here on)."""
        return build_model(self.take(), self.arch, self.path)


def read_checkpoint(model_path, n_seq=None, scale=None):
    """(state, architecture) of a checkpoint (weights/checkpoint.py:read_model), with the flags
    given checked against it (numpy only). ``n_seq`` / ``scale`` None take the checkpoint's values."""
    from ..trainer.state import is_training_state
    from ..weights.arch import conflict_error, conflicts
    from ..weights.checkpoint import read_model
    model_path = os.fspath(model_path)
    if os.path.isfile(model_path) and is_training_state(model_path):
        raise UserError(f"{model_path}: is the trainer's state for --resume, not a model; give the "
                        'model/model_latest.pkl or model/model_best.pkl beside it')
    state, arch = read_model(model_path)
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


def build_model(state, arch, model_path):
    """The PWC_Recons ``arch`` describes, with ``state`` loaded strictly (finite values only)."""
    from ..weights.arch import describe
    from ..weights.checkpoint import expected_shapes, load_into_module, validate_state
    from ..models import PWC_Recons
    net = PWC_Recons(**arch)
    validate_state(state, expected_shapes(net), model_path,
                   what=f'the model its own tensors describe ({describe(arch)})')
    load_into_module(net, state, model_path)
    net.eval()
    return net
