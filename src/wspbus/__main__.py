"""``python -m wspbus`` runs the ``wspbus`` command."""

import sys

from .cli import main

sys.exit(main())
