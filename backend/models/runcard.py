"""``tunedeck_run.json`` beside an adapter: what a loader needs to know beyond PEFT's ``adapter_config.json``.

The run that made it, the base model as TuneDeck names it (``smollm2-135m``) and the Hub id its weights come from,
and the number format it was trained in, so chat, compare, scoring and demos load the base the same way. The worker
writes it when it saves the adapter; exports copy it. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE = "tunedeck_run.json"


def write(
    adapter_dir: str | Path,
    *,
    run: str,
    base_model: str,
    upstream: str,
    dtype: str,
    dataset: str,
    config: dict[str, Any],
) -> None:
    card = {
        "run": run,
        "base_model": base_model,
        "base_model_upstream": upstream,
        "dtype": dtype,
        "dataset": dataset,
        "config": config,
    }
    tmp = Path(adapter_dir) / (FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(Path(adapter_dir) / FILE)


def read(adapter_dir: str | Path | None) -> dict[str, Any]:
    """The card, or {} for an adapter without one (made before TuneDeck wrote them)."""
    try:
        return json.loads((Path(adapter_dir) / FILE).read_text()) if adapter_dir else {}
    except (OSError, ValueError):
        return {}
