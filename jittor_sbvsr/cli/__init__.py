"""Command-line entry points; the scripts at the repository root call these."""
import os
import sys

from ..errors import UserError
from ..runtime import RuntimeSetupError, error_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guarded(main):
    """Run ``main()`` (returning an exit code or None); user and set-up
    errors become one line on stderr and exit 2, without a traceback."""
    try:
        rc = main()
        return rc if isinstance(rc, int) else 0
    except (UserError, RuntimeSetupError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
