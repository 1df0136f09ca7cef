"""TuneDeck's backend: datasets, run configs, the job store and manager, and the training worker.

Nothing here that the web UI imports pulls in torch; the torch-side modules (`train`, `generate`, `tinymodel`,
`hf`, `worker`, `modelserver`) are only imported inside worker processes and the CLI commands that need them.
"""

__version__ = "0.1.0"
