"""Command-line entry points; jittor_sbvsr_launcher.py (the scripts, the installed commands) calls these."""
import sys

from ..errors import UserError
from ..paths import ROOT  # noqa: F401  (the commands' presets live under it)
from ..runtime import RuntimeSetupError, abandon_compile_pool, interrupted, report

INTERRUPTED = 'interrupted (Ctrl-C): the files written so far are complete, none is half-written'


def guarded(main):
    """Run ``main()`` (returning an exit code or None); user and set-up
    errors become one line on stderr and exit 2, Ctrl-C one line and exit
    130 (also when it made a call fail some other way first, e.g. by
    killing a compiler Jittor had started), without a traceback."""
    try:
        rc = main()
        return rc if isinstance(rc, int) else 0
    except (UserError, RuntimeSetupError) as e:
        if interrupted():
            return _interrupted()
        return report(e)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        if interrupted():
            return _interrupted()
        raise


def _interrupted():
    print(INTERRUPTED, file=sys.stderr)
    abandon_compile_pool()  # else the exit can hang on a compiler worker the Ctrl-C killed
    return 130
