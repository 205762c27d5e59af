"""Command-line entry points; the scripts at the repository root call these."""
import os
import sys

from ..errors import UserError
from ..runtime import RuntimeSetupError, abandon_compile_pool, error_line, interrupted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
        print(error_line(e), file=sys.stderr)
        return 2
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
