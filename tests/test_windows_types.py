"""The code read as Windows: mypy with ``--platform win32`` over the package, env/, tools/ and tests/.

A name that exists only on POSIX (signal.SIGKILL, os.killpg, os.sysconf, os.sched_*, os.getuid,
fcntl, resource...) fails on Windows when the line runs; it must sit in a branch mypy understands:
``if sys.platform != 'win32':`` (or ``== 'win32': ... else:``; not ``os.name``); a test marked
``posix_only`` (tests/conftest.py) starts with ``if sys.platform == 'win32': return`` (mypy does not
read an ``assert sys.platform ...`` in a function as a branch). Read as Linux,
the same holds for Windows-only names (ctypes.windll, msvcrt, winreg).

An error counts when mypy reports it on one platform only: the type errors that both readings
report are the code's others, which this check leaves alone.
"""
import subprocess
import sys

from conftest import ROOT

PATHS = ['jittor_sbvsr', 'env', 'tools', 'tests', 'jittor_sbvsr_launcher.py', 'inference.py', 'main.py']
PLATFORMS = ('win32', 'linux')


def _errors(runs):
    """{platform: the set of mypy's 'file:line: error: ...' lines}, the platforms read side by side."""
    out = {}
    for platform, (proc, cache) in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode in (0, 1), f'mypy --platform {platform} failed to run:\n{stdout}{stderr}'
        out[platform] = {ln for ln in stdout.splitlines() if ': error: ' in ln}
    return out


def test_no_posix_only_name_outside_a_platform_branch(tmp_path):
    try:
        import mypy  # noqa: F401
    except ImportError:
        raise AssertionError('mypy is not installed here: pip install -r env/test-requirements.txt') from None
    runs = {}
    for platform in PLATFORMS:
        cache = tmp_path / platform
        cmd = [sys.executable, '-m', 'mypy', '--config-file', str(ROOT / 'pyproject.toml'), '--platform', platform,
               '--cache-dir', str(cache), '--no-error-summary', '--hide-error-context', '--no-pretty', *PATHS]
        runs[platform] = (subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           encoding='utf-8', errors='replace'), cache)
    errors = _errors(runs)
    found = []
    for platform, other in (('win32', 'linux'), ('linux', 'win32')):
        only = sorted(errors[platform] - errors[other])
        if only:
            what = 'Windows' if platform == 'win32' else 'Linux'
            found.append(f'read as {what} (mypy --platform {platform}), {len(only)} name(s) that do not exist '
                         f'there, outside a platform branch mypy understands:\n  ' + '\n  '.join(only))
    assert not found, ('\n'.join(found) + "\nput each in `if sys.platform != 'win32':` (or `== 'win32'`); a test: "
                       "@posix_only(reason), its body starting with `if sys.platform == 'win32': return`")
