"""``python -m lightning_synflow`` runs the LightningCLI."""

from lightning_synflow.cli import main

if __name__ == "__main__":
    main()
