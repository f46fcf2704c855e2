"""``python -m node ...`` is the ``cardionode`` command."""
import sys

from .cli import main

sys.exit(main())
