"""Model directory resolution, layout detection, weights status and the diffusers-layout loader."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.models.wan_original import write_tiny_checkpoints
from wanserve.engine.config import WeightsConfig
from wanserve.engine.layouts import MODEL_INDEX, ORIGINAL_T5, TRANSFORMER_INDEX
from wanserve.engine.loading import (
    build_scheduler,
    detect_layout,
    load_components,
    resolve_model_dir,
    weights_status,
)
from wanserve.engine.registry import get_spec
from wanserve.errors import CheckpointError, WeightsNotFoundError


@pytest.fixture(scope="module")
def t2v_dirs(tmp_path_factory):
    return write_tiny_checkpoints(get_spec("tiny-t2v"), tmp_path_factory.mktemp("tiny-t2v"))


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def _seed_dir(path, model_type="t2v"):
    """A directory that looks like an original single-expert Wan model of `model_type`."""
    _mkdir(path)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def test_resolve_model_dir_returns_explicit_path_even_if_missing(tmp_path):
    spec = get_spec("wan2.1-t2v-14b")
    weights = WeightsConfig(str(tmp_path), model_paths={spec.name: str(tmp_path / "nowhere")})
    assert resolve_model_dir(spec, weights) == tmp_path / "nowhere"


def test_resolve_model_dir_follows_documented_order(tmp_path):
    spec = get_spec("wan2.1-t2v-14b")
    ours = _mkdir(tmp_path / "models" / spec.name)
    by_repo = _mkdir(tmp_path / "models" / "Wan2.1-T2V-14B")
    checkpoint_dir = _seed_dir(tmp_path / "ckpt")
    weights = WeightsConfig(str(tmp_path / "models"), checkpoint_dir=str(checkpoint_dir))

    assert resolve_model_dir(spec, weights) == ours
    shutil.rmtree(ours)
    assert resolve_model_dir(spec, weights) == by_repo
    shutil.rmtree(by_repo)
    assert resolve_model_dir(spec, weights) == checkpoint_dir
    assert resolve_model_dir(spec, WeightsConfig(str(tmp_path / "models"))) is None


def test_resolve_model_dir_skips_checkpoint_dir_holding_another_model_kind(tmp_path):
    weights = WeightsConfig(str(tmp_path / "empty"), checkpoint_dir=str(_seed_dir(tmp_path / "i2v", "i2v")))
    assert resolve_model_dir(get_spec("wan2.1-t2v-14b"), weights) is None
    assert resolve_model_dir(get_spec("wan2.1-i2v-14b-480p"), weights) == tmp_path / "i2v"


def test_resolve_model_dir_ignores_checkpoint_dir_for_tiny_models(tmp_path):
    weights = WeightsConfig(str(tmp_path / "models"), checkpoint_dir=str(_seed_dir(tmp_path / "t2v")))
    assert resolve_model_dir(get_spec("tiny-t2v"), weights) is None
    ours = _mkdir(tmp_path / "models" / "tiny-t2v")
    assert resolve_model_dir(get_spec("tiny-t2v"), weights) == ours


def test_detect_layout_recognises_both_layouts(t2v_dirs):
    _, diffusers_dir, original_dir = t2v_dirs
    assert detect_layout(diffusers_dir) == "diffusers"
    assert detect_layout(original_dir) == "original"


def test_detect_layout_names_directory_without_model_files(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(CheckpointError, match=str(tmp_path)) as info:
        detect_layout(tmp_path)
    assert MODEL_INDEX in str(info.value) and ORIGINAL_T5 in str(info.value)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "missing")


def test_weights_status_complete_for_both_layouts(t2v_dirs):
    spec = get_spec("tiny-t2v")
    _, diffusers_dir, original_dir = t2v_dirs
    for layout, path in (("diffusers", diffusers_dir), ("original", original_dir)):
        status = weights_status(spec, WeightsConfig(), path)
        assert (status.layout, status.present, status.complete, status.missing) == (layout, True, True, ())
        assert status.path == str(path)


def test_weights_status_reports_missing_shard(t2v_dirs, tmp_path):
    spec = get_spec("tiny-t2v")
    original = shutil.copytree(t2v_dirs[2], tmp_path / "original")
    shard = json.loads((original / TRANSFORMER_INDEX).read_text())["weight_map"]["patch_embedding.weight"]
    (original / shard).unlink()
    status = weights_status(spec, WeightsConfig(), original)
    assert status.present and not status.complete
    assert status.missing == (shard,)


def test_weights_status_reports_missing_diffusers_component(t2v_dirs, tmp_path):
    spec = get_spec("tiny-t2v")
    diffusers_dir = shutil.copytree(t2v_dirs[1], tmp_path / "diffusers")
    (diffusers_dir / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    status = weights_status(spec, WeightsConfig(), diffusers_dir)
    assert not status.complete
    assert status.missing == (
        "vae/diffusion_pytorch_model.safetensors (or diffusion_pytorch_model.safetensors.index.json and its shards)",
    )


def test_weights_status_without_directory(tmp_path):
    empty = WeightsConfig(str(tmp_path / "empty"))
    tiny = weights_status(get_spec("tiny-t2v"), empty)
    assert (tiny.present, tiny.complete, tiny.path) == (True, True, None)
    real = weights_status(get_spec("wan2.2-t2v-a14b"), empty)
    assert (real.present, real.complete, real.path) == (False, False, None)
    assert "transformer_2/config.json" in real.missing and MODEL_INDEX in real.missing


def test_weights_status_resolves_directory_from_models_root(t2v_dirs, tmp_path):
    spec = get_spec("wan2.1-t2v-1.3b")
    shutil.copytree(t2v_dirs[2], tmp_path / "models" / spec.name)
    status = weights_status(spec, WeightsConfig(str(tmp_path / "models")))
    assert status.path == str(tmp_path / "models" / spec.name) and status.layout == "original"


def test_load_components_diffusers_layout_matches_tiny_components(t2v_dirs):
    spec = get_spec("tiny-t2v")
    components, diffusers_dir, _ = t2v_dirs
    loaded = load_components(spec, diffusers_dir, dtype=torch.float32)
    assert set(loaded) == {"tokenizer", "text_encoder", "vae", "transformer", "scheduler"}
    assert loaded["vae"].dtype == torch.float32
    for name in ("text_encoder", "vae", "transformer"):
        for key, value in components[name].state_dict().items():
            assert torch.equal(loaded[name].state_dict()[key], value), (name, key)
    assert loaded["scheduler"].config.flow_shift == spec.flow_shift


def test_load_components_diffusers_layout_uses_requested_dtypes(t2v_dirs):
    loaded = load_components(get_spec("tiny-t2v"), t2v_dirs[1], text_encoder_dtype=torch.float32)
    assert loaded["transformer"].dtype == torch.bfloat16
    assert loaded["text_encoder"].dtype == torch.float32
    assert loaded["vae"].dtype == torch.float32


def test_load_components_rejects_other_pipeline(t2v_dirs):
    with pytest.raises(CheckpointError, match="WanImageToVideoPipeline"):
        load_components(get_spec("tiny-i2v"), t2v_dirs[1])


def test_load_components_names_missing_files(t2v_dirs, tmp_path):
    original = shutil.copytree(t2v_dirs[2], tmp_path / "original")
    (original / ORIGINAL_T5).unlink()
    with pytest.raises(CheckpointError, match=f"{original}.*{ORIGINAL_T5}"):
        load_components(get_spec("tiny-t2v"), original)


def test_build_scheduler_uses_spec_shift_and_solver():
    spec = get_spec("wan2.2-t2v-a14b")
    scheduler = build_scheduler(spec)
    assert type(scheduler).__name__ == "UniPCMultistepScheduler"
    assert (scheduler.config.flow_shift, scheduler.config.prediction_type) == (12.0, "flow_prediction")
    euler = build_scheduler(get_spec("wan2.2-vace-fun-a14b"))  # VideoX-Fun's 'Flow' sampler
    assert (type(euler).__name__, euler.config.shift) == ("FlowMatchEulerDiscreteScheduler", 12.0)


def test_load_components_dtype_per_component(t2v_dirs):
    """Each component loads in its own dtype (the engine passes MemoryConfig's choices through)."""
    for directory in t2v_dirs[1:]:
        loaded = load_components(
            get_spec("tiny-t2v"), directory, dtype=torch.bfloat16, text_encoder_dtype=torch.float16,
            vae_dtype=torch.bfloat16,
        )  # fmt: skip
        assert loaded["transformer"].patch_embedding.weight.dtype == torch.bfloat16
        assert loaded["text_encoder"].shared.weight.dtype == torch.float16
        assert loaded["vae"].encoder.conv_in.weight.dtype == torch.bfloat16
