"""Logging set-up shared by the worker and the CLI: one format with the job id, and no progress-bar noise."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_hf() -> None:
    """Silence progress bars and known-harmless library chatter (they would flood worker.log and the CLI)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.getLogger("absl").setLevel(
        logging.WARNING
    )  # rouge-score logs "Using default tokenizer." per call
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    # "Token indices sequence length is longer than the specified maximum sequence length": TuneDeck measures every
    # example without cutting on purpose (to report and cut them itself), so the tokenizer's alarm is noise.
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    # bitsandbytes on CPU: an optional fast kernel package is missing; harmless (see docs/environment notes).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*gemm_4bit_forward.*")
    # transformers calls its own deprecated alias inside Trainer; nothing for us to change.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def setup_worker_logging(job_id: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{job_id}] %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)
    quiet_hf()
