"""Find a checkpoint's files: explicit directory, then the Hugging Face cache, then a stand-in.

Nothing here touches the network unless the caller asks for a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .registry import CHECKPOINTS, Checkpoint

ENV_WEIGHTS_DIR = "COURSE_WEIGHTS_DIR"
ENV_CACHE = "COURSE_CACHE"
ENV_STANDIN_ONLY = "COURSE_STANDIN_ONLY"
#: ``Checkpoint.model_class`` of a raw state-dict file with no config.json beside it (an
#: IP-Adapter's ``ip-adapter_sd15.safetensors``). ``Source.config`` is then the registry's
#: real or stand-in config, and the stand-in's tensors come from the function that
#: ``standin_config["builder"]`` names ("module:function", called with the stand-in config).
STATE_DICT = "state_dict"


@dataclass(frozen=True)
class Source:
    """Where a checkpoint's files were found."""

    kind: str                    # "real" or "stand-in"
    checkpoint: Checkpoint
    config_path: Path
    weight_files: tuple[Path, ...]
    index_path: Path | None      # set for sharded checkpoints
    origin: str                  # "explicit directory", "Hugging Face cache", "built locally"

    @property
    def config(self) -> dict:
        if self.checkpoint.model_class == STATE_DICT:  # config_path is the weights file itself
            return dict(self.checkpoint.real_config if self.kind == "real" else self.checkpoint.standin_config)
        return json.loads(self.config_path.read_text())

    def banner(self) -> str:
        ck = self.checkpoint
        if self.kind == "real":
            return (f"weights: REAL {ck.repo_id}@{ck.revision} ({ck.subfolder}) from the {self.origin}: "
                    f"{self.config_path.parent}")
        return (f"weights: STAND-IN tiny {ck.model_class} (seeded random, not pretrained; "
                f"real {ck.repo_id} not found locally)")


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "series7-course")


def _from_dir(ck: Checkpoint, folder: Path, origin: str) -> Source | None:
    config = folder / "config.json"
    single = folder / ck.weights_name
    index = folder / ck.index_name
    if ck.model_class == STATE_DICT:
        return Source("real", ck, single, (single,), None, origin) if single.is_file() else None
    if not config.is_file():
        return None
    if single.is_file():
        return Source("real", ck, config, (single,), None, origin)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = tuple(folder / s for s in shards)
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not there: {missing}")
        return Source("real", ck, config, files, index, origin)
    return None


def _from_explicit_dir(ck: Checkpoint, weights_dir: str | os.PathLike | None) -> Source | None:
    root = weights_dir or os.environ.get(ENV_WEIGHTS_DIR)
    if not root:
        return None
    # Layout of `hf download REPO --local-dir ROOT/REPO`: ROOT/<org>/<name>/<subfolder>/...
    return _from_dir(ck, Path(root) / ck.repo_id / ck.subfolder, "explicit directory")


def _repo_path(ck: Checkpoint, filename: str) -> str:
    """A file's path in the repo: ``subfolder/filename``, or ``filename`` for a repo-root model."""
    return f"{ck.subfolder}/{filename}" if ck.subfolder else filename


def _from_hf_cache(ck: Checkpoint) -> Source | None:
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> Path | None:
        hit = try_to_load_from_cache(ck.repo_id, _repo_path(ck, filename), revision=ck.revision)
        return Path(hit) if isinstance(hit, str) else None

    if ck.model_class == STATE_DICT:
        single = cached(ck.weights_name)
        return None if single is None else Source("real", ck, single, (single,), None, "Hugging Face cache")
    config = cached("config.json")
    if config is None:
        return None
    single = cached(ck.weights_name)
    if single is not None:
        return Source("real", ck, config, (single,), None, "Hugging Face cache")
    index = cached(ck.index_name)
    if index is None:
        return None
    files = []
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        path = cached(shard)
        if path is None:
            return None  # partly downloaded: fall back rather than fail mid-grading
        files.append(path)
    return Source("real", ck, config, tuple(files), index, "Hugging Face cache")


def reinitialise_(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter a non-trivial value: 1-D weights 1 + 0.2 N(0,1), all else 0.2 N(0,1).

    Default init leaves zero-convs at 0, norms at (1, 0) and adaLN-Zero's modulation at 0,
    which would let a wrong answer (no gate, no shift) match the reference.
    """
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.2
            is_scale = p.ndim == 1 and not name.endswith("bias")
            p.copy_((1.0 + noise) if is_scale else noise)


def _standin_dir(ck: Checkpoint) -> Path:
    key = json.dumps([ck.model_class, ck.standin_config], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "standins" / f"{ck.name}-{digest}"


def _build_state_dict_standin(ck: Checkpoint) -> Source:
    """A raw state-dict stand-in, written once as a single safetensors file."""
    import importlib

    from safetensors.torch import save_file

    folder = _standin_dir(ck)
    if not (folder / ck.weights_name).is_file():
        module, _, fn = ck.standin_config["builder"].partition(":")
        tensors = getattr(importlib.import_module(module), fn)(dict(ck.standin_config))
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / ck.weights_name))
        try:
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    single = folder / ck.weights_name
    return Source("stand-in", ck, single, (single,), None, "built locally")


def _build_class(model_class: str, config: dict) -> torch.nn.Module:
    """A diffusers class by name (``"UNet2DConditionModel"``), or any other by class path
    (``"transformers:CLIPTextModel"``: built from its ``config_class``, saved as model.safetensors)."""
    import importlib

    if ":" not in model_class:
        import diffusers

        return getattr(diffusers, model_class)(**config)
    module, _, name = model_class.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(cls.config_class(**config))


def build_standin(ck: Checkpoint) -> Source:
    """Build (once) and save the stand-in, so it loads through the same code as a real one."""
    if ck.model_class == STATE_DICT:
        return _build_state_dict_standin(ck)
    folder = _standin_dir(ck)
    if not (folder / "config.json").is_file():
        model = _build_class(ck.model_class, ck.standin_config)
        reinitialise_(model)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
        model.save_pretrained(tmp)
        saved = tmp / ("model.safetensors" if ":" in ck.model_class else "diffusion_pytorch_model.safetensors")
        if ck.weights_name != saved.name and saved.is_file():  # e.g. a real checkpoint read as *.fp16.safetensors
            saved.rename(tmp / ck.weights_name)
        try:
            os.replace(tmp, folder)  # atomic: parallel graders never see half a checkpoint
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    source = _from_dir(ck, folder, "built locally")
    assert source is not None, f"stand-in at {folder} is incomplete"
    return Source("stand-in", ck, source.config_path, source.weight_files, source.index_path, source.origin)


def resolve(name: str, weights_dir: str | os.PathLike | None = None, *, standin_only: bool | None = None) -> Source:
    """Explicit directory → Hugging Face cache (offline) → stand-in, for checkpoint ``name``."""
    ck = CHECKPOINTS[name]
    if standin_only is None:
        standin_only = os.environ.get(ENV_STANDIN_ONLY, "") not in ("", "0")
    if not standin_only:
        for found in (_from_explicit_dir(ck, weights_dir), _from_hf_cache(ck)):
            if found is not None:
                return found
    return build_standin(ck)


def prepare_all() -> None:
    """Resolve every checkpoint now, building missing stand-ins.

    The sandbox's filesystem is read-only: a stand-in that does not exist yet cannot be
    built by the student's kernel or the recording process, so the grader builds them first.
    """
    for name in CHECKPOINTS:
        resolve(name)
    readable(cache_root())


def readable(folder: Path) -> None:
    """Let every user read ``folder`` (stand-ins, generated check files): grading kernels run as
    ``nobody`` (grader.sandbox), and temporary folders are created 0700."""
    if not folder.is_dir():
        return
    for here, dirs, files in os.walk(folder):
        os.chmod(here, os.stat(here).st_mode | 0o755)
        for f in files:
            path = os.path.join(here, f)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o644)


def download(name: str) -> Source:
    """Fetch a checkpoint's config and weights into the Hugging Face cache (needs the network)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    ck = CHECKPOINTS[name]
    get = lambda f: hf_hub_download(ck.repo_id, _repo_path(ck, f), revision=ck.revision)  # noqa: E731
    if ck.model_class != STATE_DICT:
        get("config.json")
    try:
        get(ck.weights_name)
    except EntryNotFoundError:
        index = Path(get(ck.index_name))
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            get(shard)
    found = _from_hf_cache(ck)
    assert found is not None, "download finished but the cache lookup failed"
    return found
