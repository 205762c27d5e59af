"""Command-line entry points; the scripts at the repository root call these."""
import os
import sys

from ..errors import UserError
from ..runtime import RuntimeSetupError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def guarded(main):
    """Run ``main()``; user and set-up errors become one line and exit 2."""
    try:
        return main() or 0
    except (UserError, RuntimeSetupError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
