"""The commands' entry points: sbvsr-infer, sbvsr-train, sbvsr-convert, sbvsr-doctor, and the scripts
inference.py, main.py, tools/convert_torch_weights.py, tools/make_blurdown_dataset.py.

Outside the package on purpose: importing ``jittor_sbvsr`` checks the
installation and raises ``runtime.InstallationError`` (an ImportError) when
Jittor cannot work in it (numpy 2, mpirun without mpicc). A library user
gets that exception; a command must print one line and exit with code 2,
which needs a caller that is not itself inside the package: this module.
Errors after the import are ``jittor_sbvsr.cli.guarded``'s.
"""
import importlib
import sys


def safe_console(streams=None):
    """Make the console streams write what they cannot encode as ``\\uXXXX`` instead of failing.

    A console or pipe in a legacy encoding (GBK on a Chinese Windows, ASCII
    under ``LANG=C``) raises UnicodeEncodeError on a file name it cannot
    encode, and the line is lost, or the command fails. Every command calls
    this first (through :func:`launch`).
    """
    for stream in streams or (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):  # not a replaced stream (pytest's capture, say)
            stream.reconfigure(errors='backslashreplace')


def launch(main, argv=None):
    """``main(argv)``, where an unusable installation found by importing the package is one line, exit 2."""
    safe_console()
    try:
        return main(argv)
    except ImportError as e:
        # the package's import failed, but its runtime module (imported first) is there
        runtime = sys.modules.get('jittor_sbvsr.runtime')
        if runtime is None or not isinstance(e, runtime.InstallationError):
            raise
        return runtime.report(e)


def _command(module):
    """The entry point of the command ``jittor_sbvsr.cli.<module>``; imports it only when called."""
    def main(argv=None):
        return launch(lambda args: importlib.import_module(f'jittor_sbvsr.cli.{module}').main(args), argv)
    main.__name__ = main.__qualname__ = module
    return main


infer = _command('infer')
train = _command('train')
convert = _command('convert')
doctor = _command('doctor')
make_blurdown = _command('make_blurdown')
