import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _reference_dir():
    env = os.environ.get('SBVSR_REFERENCE')
    return Path(env) if env else ROOT.parent / 'shared' / 'reference'


REFERENCE = _reference_dir()
PUBLIC_CASE = REFERENCE / 'public_case'


@pytest.fixture(scope='session')
def reference_dir():
    assert REFERENCE.is_dir(), f'reference data missing: {REFERENCE} (set SBVSR_REFERENCE)'
    return REFERENCE


@pytest.fixture(scope='session')
def public_case(reference_dir):
    return PUBLIC_CASE
