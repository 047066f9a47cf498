"""``python -m velora_ens`` runs the ``velora-ens`` command line."""

import sys

from velora_ens.cli import main

sys.exit(main())
