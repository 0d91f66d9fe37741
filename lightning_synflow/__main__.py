"""``python -m lightning_synflow`` runs the LightningCLI."""

import sys

from lightning_synflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
