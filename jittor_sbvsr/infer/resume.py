"""``--resume``: the record of what a run has finished, so that a rerun continues it.

A run (one process) keeps ``.progress.jsonl`` in its folder while it runs:
a first line with what the outputs depend on (plan.py: ``Plan.signature``,
the settings of the log's header with the checkpoint's SHA-256 and the
inputs' names and frame counts), then one line per finished output frame
with its log values (PSNR, SSIM, seconds; JSON keeps a float64 exactly).
The host worker appends a frame's line, flushed and fsynced, right after it
wrote the frame's files (atomically; outputs.py), so every frame the record
names is complete and every frame written is named; a line cut by a kill is
ignored. The record is removed when the run completes: a folder with
results and no record holds a finished run.

A resumed run checks the record against its own inputs and flags (one
error line naming what differs), keeps the finished frames, logs their
lines from the record, and runs each video from its first unfinished
window: the engine gives a mid-video start the bits of a whole run
(engine.py, ``_computed``). A video file's output is completed from the
finished frames' lossless parts (outputs.py) and the new frames, which is
the file an uninterrupted run writes. After a kill -9 of the run, the
worker finishes and records the frames it was sent (host.py), so only the
window the network was computing is computed again.

Under ``mpirun`` there is no record and ``--resume`` is refused.
"""
import hashlib
import json
import os

from ..errors import UserError
from ..utils.files import atomic_write_bytes, retry_shared

NAME = '.progress.jsonl'
# in the record, not compared: what the run chose (the default memory budget follows the free
# memory), for a resumed run to choose again (infer/engine.py:run_budget)
CHOSEN = ('budget',)


def file_digest(path):
    """SHA-256 of a file (the checkpoint: another model must not continue this run)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def has_record(out_dir):
    return os.path.isfile(os.path.join(out_dir, NAME))


def finished(out_dir, sig):
    """({(video, window index): (psnr, ssim, seconds)} of the frames the record in ``out_dir`` names,
    the memory budget that run chose); ({}, None) without a record; a record of other inputs or flags
    is one error line. Reads only."""
    path = os.path.join(out_dir, NAME)
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise UserError(f'{path}: cannot read the record of the run to resume ({e.strerror or e})') from None
    recs = []
    for line in text.splitlines(keepends=True):
        try:
            recs.append(json.loads(line))
        except ValueError:
            if line.endswith('\n'):  # only the last line may be cut (by a kill): else a damaged file
                raise UserError(f'{path}: damaged record; the run cannot be resumed') from None
    if not recs or 'signature' not in recs[0]:
        raise UserError(f'{path}: damaged record; the run cannot be resumed')
    old = recs[0]['signature']
    diff = [k for k in sorted(set(old) | set(sig)) if k not in CHOSEN and old.get(k) != sig.get(k)]
    if diff:
        what = '; '.join(_difference(k, old.get(k), sig.get(k)) for k in diff[:3])
        raise UserError(f'{out_dir}: --resume with other inputs or flags than the run it continues ({what}); '
                        'give the same command, or another --infer_flag')
    return {(r['v'], r['k']): tuple(r['row']) for r in recs[1:]}, old.get('budget')


class Progress:
    """The record of one run, started with the frames ``done`` already (a resumed run's); the host
    worker appends to it (``record_frame``)."""

    def __init__(self, out_dir, sig, done):
        self.path = os.path.join(out_dir, NAME)
        lines = [{'signature': sig}] + [{'v': v, 'k': k, 'row': list(row)} for (v, k), row in done.items()]
        # rewritten whole: a line cut by a kill is not left in the middle of the new ones
        atomic_write_bytes(self.path, ''.join(json.dumps(r) + '\n' for r in lines).encode('utf-8'))

    def finish(self):
        """The run completed: no record is left (the folder holds a finished run)."""
        try:
            retry_shared(os.unlink, self.path)
        except OSError:
            pass


def record_frame(f, video, k, row):
    """Frame k of ``video`` is finished (its files written): its line in the record open as ``f``,
    for good."""
    f.write(json.dumps({'v': video, 'k': int(k), 'row': [float(x) for x in row]}) + '\n')
    f.flush()
    os.fsync(f.fileno())


def _difference(key, old, new):
    if key == 'model':
        return 'another checkpoint (--model_path)'
    if key == 'input':
        return 'other input videos or frame counts (--input_path)'
    if key == 'device':
        return f'device {old}, now {new}'
    return f'--{key} {old}, now {new}'


class NoRecord:
    """What a run keeps instead under mpirun (no record, nothing to resume)."""
    path = None

    def finish(self):
        pass
