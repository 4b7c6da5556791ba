"""``python -m wspbus`` runs the ``wspbus`` command."""

import sys

from .deploy.cli import main

sys.exit(main())
