"""Weights: the loader on every on-disk layout, loud failures, and non-trivial stand-ins."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from grader.weights import CHECKPOINTS, CheckpointMismatch, build_random, load_part, resolve
from grader.weights import resolve as resolve_mod
from grader.weights.resolve import build_standin

CK = CHECKPOINTS["dit"]
BLOCK = "transformer_blocks.0."


def _standin_model():
    import diffusers

    from grader.weights.resolve import reinitialise_

    model = getattr(diffusers, CK.model_class)(**CK.standin_config)
    reinitialise_(model, seed=7)
    return model


def _assert_block_matches(module, model):
    ref = {k[len(BLOCK):]: v for k, v in model.state_dict().items() if k.startswith(BLOCK)}
    got = module.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)


def _write(model, folder, **kw):
    model.save_pretrained(folder, safe_serialization=True, **kw)
    return folder


def test_single_file_explicit_dir(tmp_path, monkeypatch):
    model = _standin_model()
    _write(model, tmp_path / CK.repo_id / CK.subfolder)
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.setenv("COURSE_WEIGHTS_DIR", str(tmp_path))
    source = resolve("dit")
    assert source.kind == "real" and source.origin == "explicit directory" and source.index_path is None
    module, _ = load_part("dit_block", source=source)
    _assert_block_matches(module, model)
    assert "REAL facebook/DiT-XL-2-256" in source.banner()


def test_sharded_with_index(tmp_path, monkeypatch):
    model = _standin_model()
    folder = _write(model, tmp_path / CK.repo_id / CK.subfolder, max_shard_size="10KB")
    assert (folder / CK.index_name).is_file() and len(list(folder.glob("*.safetensors"))) > 1
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    source = resolve("dit", weights_dir=tmp_path)
    assert source.index_path is not None and len(source.weight_files) > 1
    for part in ("dit_block", "dit_patch_embed", "dit_final"):
        load_part(part, source=source)
    _assert_block_matches(load_part("dit_block", source=source)[0], model)


def test_hub_cache_layout_offline(tmp_path, monkeypatch):
    """A snapshot laid out as huggingface_hub caches it, found with HF_HUB_OFFLINE=1."""
    import huggingface_hub.constants as hc

    model = _standin_model()
    repo = tmp_path / "models--facebook--DiT-XL-2-256"
    sha = "0123456789abcdef0123456789abcdef01234567"
    _write(model, repo / "snapshots" / sha / CK.subfolder)
    (repo / "refs" / "refs" / "pr").mkdir(parents=True)
    (repo / "refs" / "refs" / "pr" / "1").write_text(sha)  # CK.revision == "refs/pr/1"
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.delenv("COURSE_WEIGHTS_DIR", raising=False)
    source = resolve("dit")
    assert source.kind == "real" and source.origin == "Hugging Face cache"
    _assert_block_matches(load_part("dit_block", source=source)[0], model)


def test_wrong_revision_in_cache_is_not_used(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    model = _standin_model()
    repo = tmp_path / "models--facebook--DiT-XL-2-256"
    _write(model, repo / "snapshots" / ("f" * 40) / CK.subfolder)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("f" * 40)  # only main is cached, not the pinned ref
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    assert resolve("dit").kind == "stand-in"


def test_shape_mismatch_is_refused_with_the_key_named(tmp_path):
    import diffusers

    bigger = dict(CK.standin_config, attention_head_dim=8)
    model = getattr(diffusers, CK.model_class)(**bigger)
    folder = _write(model, tmp_path / CK.repo_id / CK.subfolder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["attention_head_dim"] = 4  # the config lies about the weights
    (folder / "config.json").write_text(json.dumps(cfg))
    source = resolve("dit", weights_dir=tmp_path, standin_only=False)
    with pytest.raises(CheckpointMismatch, match=r"transformer_blocks\.0\.\S+' has shape"):
        load_part("dit_block", source=source)


def test_missing_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _standin_model()
    folder = _write(model, tmp_path / CK.repo_id / CK.subfolder)
    path = folder / CK.weights_name
    tensors = load_file(path)
    del tensors[BLOCK + "attn1.to_q.weight"]
    save_file(tensors, path)
    with pytest.raises(CheckpointMismatch, match="missing"):
        load_part("dit_block", source=resolve("dit", weights_dir=tmp_path, standin_only=False))


def test_standin_has_no_trivial_parameters():
    for part in ("dit_model",):
        module, source = load_part(part)
        assert source.kind == "stand-in"
        for name, p in module.named_parameters():
            assert p.abs().max() > 0, f"{name} is all zeros"
            assert not torch.all(p == 1), f"{name} is all ones"
            assert p.std() > 0.05, f"{name} is nearly constant"
            if p.ndim == 2 and p.shape[0] == p.shape[1]:
                assert not torch.allclose(p, torch.eye(p.shape[0])), f"{name} is the identity"


def test_standin_round_trips_through_from_pretrained():
    import diffusers

    source = build_standin(CK)
    via_diffusers = getattr(diffusers, CK.model_class).from_pretrained(source.config_path.parent)
    ours, _ = load_part("dit_model", source=source)
    for (k, a), (k2, b) in zip(sorted(via_diffusers.state_dict().items()), sorted(ours.state_dict().items())):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_standin_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "a"))
    a = build_standin(CK)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "b"))
    b = build_standin(CK)
    assert a.weight_files[0].read_bytes() == b.weight_files[0].read_bytes()


def test_random_block_at_real_size_has_real_dimensions():
    block = build_random("dit_block", size="real")
    D = CK.real_config["num_attention_heads"] * CK.real_config["attention_head_dim"]
    assert block.norm1.linear.weight.shape == (6 * D, D) == (6912, 1152)
    assert block.attn1.heads == 16
