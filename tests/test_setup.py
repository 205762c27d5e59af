"""env/setup.py (the installer) and tools/install_onednn.py, per platform, on this machine.

The platform is faked (Windows or Linux, root or not, the commands on PATH,
the environment): the tests check the steps the plan holds (paths, commands,
what they write) without running them; :func:`run` is checked with small
python commands standing in for pip and the compile. No network, no pip.
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

from conftest import ROOT, load_tool

spec = importlib.util.spec_from_file_location('_env_setup', ROOT / 'env' / 'setup.py')
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)
onednn = load_tool('install_onednn')


def fake(windows=False, root=False, found=(), env=None, version=(3, 11)):
    paths = {c: (f'C:\\bin\\{c}.exe' if windows else f'/usr/bin/{c}') for c in found}
    return setup.Platform(windows=windows, root=root, which=paths.get, env=dict(env or {}),
                          version=version, python='base-python')


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


@pytest.mark.parametrize('windows,hint', [(False, 'PYTHON=python3.11 env/setup.sh'),
                                          (True, 'py -3.11 env\\setup.py')])
@pytest.mark.parametrize('version', [(3, 10), (3, 13)])
def test_a_python_without_wheels_for_the_pins_is_refused(tmp_path, windows, hint, version):
    with pytest.raises(setup.SetupError) as e:
        setup.plan(str(tmp_path / 'v'), False, fake(windows=windows, version=version))
    assert f'Python {version[0]}.{version[1]} cannot install the pins' in str(e.value)
    assert hint in str(e.value)
    assert not (tmp_path / 'v').exists()


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
    r = subprocess.run([str(ROOT / 'env' / 'setup.sh'), '--help'], capture_output=True, text=True,
                       encoding='utf-8', timeout=60)
    assert r.returncode == 0 and r.stdout.startswith('usage: setup.py [-h] [--test] [--venv VENV]'), r.stderr
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
