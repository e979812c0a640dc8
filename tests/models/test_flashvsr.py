"""FlashVSR (models/flashvsr): streaming equals one-shot, the FlexAttention block mask equals the dense masked
kernel, the KV cache stays bounded, and a tiny FlashVSR written with the official v1.1 file and key names loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.models.wan_original import invert_keys, official_transformer_keys, to_original
from wanserve.models import wan_transformer
from wanserve.models.flashvsr import (
    FlashVSRRun,
    UpscaleOptions,
    build_random_flashvsr,
    load_flashvsr,
    loading,
    output_frames,
)
from wanserve.models.flashvsr.pipeline import FrameBufferFull, chunk_count, output_size
from wanserve.models.flashvsr.sparse_attention import BlockSparseKernel, draft_block_mask, local_block_mask


def _clip(frames: int = 29, height: int = 32, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def _run(model, frames, **options) -> tuple[np.ndarray, list[int], FlashVSRRun]:
    chunks: list[np.ndarray] = []
    run = FlashVSRRun(model, UpscaleOptions(scale=4, seed=3, **options), torch.device("cpu"), torch.float32)
    run.run(frames, chunks.append)
    return np.concatenate(chunks), [len(c) for c in chunks], run


@pytest.fixture(scope="module")
def tiny_long():
    return build_random_flashvsr("tiny-long")


def test_frame_arithmetic_matches_the_official_pipeline():
    # 8n+1 after padding by 4, minus 4: 21 frames make one chunk of 21 frames, 29 two chunks (21 + 8).
    assert [chunk_count(n) for n in (20, 21, 28, 29, 37)] == [0, 1, 1, 2, 3]
    assert [output_frames(n) for n in (20, 21, 28, 29, 37)] == [0, 21, 21, 29, 37]
    assert output_size(384, 192, 2) == (768, 384, 768, 384)
    assert output_size(350, 200, 2) == (700, 400, 640, 384)  # centre-cropped to multiples of 128
    with pytest.raises(ValueError, match="128"):
        output_size(60, 40, 2)


def test_streaming_output_equals_one_shot_output(tiny_long):
    # tiny-long: frames read lazily through a small buffer, decoded chunk by chunk; tiny: the whole clip at once,
    # decoded once at the end. Same weights (same seed), same output.
    frames = _clip(37)
    streamed, pieces, run = _run(tiny_long, iter(frames), max_buffer_bytes=26 * frames[0].nbytes)
    one_shot, _, _ = _run(build_random_flashvsr("tiny"), list(frames))
    assert pieces == [21, 8, 8]
    assert streamed.shape == one_shot.shape == (37, 128, 256, 3)
    assert np.abs(streamed.astype(int) - one_shot).max() <= 1
    assert run.buffer.peak_bytes <= 26 * frames[0].nbytes
    # Stored slice: the weights, noise and every stage take part in these values.
    assert streamed[30, 64, 100:106, 0].tolist() == pytest.approx(STORED_SLICE, abs=2)


STORED_SLICE = [104, 102, 104, 110, 110, 110]


def test_kv_cache_is_bounded_by_three_windows(tiny_long):
    _, _, short = _run(tiny_long, list(_clip(29)))
    _, _, long = _run(tiny_long, list(_clip(45)))
    assert long.chunks_done == 4 and short.chunks_done == 2
    assert long.peak_cache_bytes == short.peak_cache_bytes > 0


def test_buffer_limit_is_enforced_naming_the_setting(tiny_long):
    frames = _clip(29)
    with pytest.raises(FrameBufferFull, match="FLASHVSR_STREAMING_LQ_MAX_BYTES"):
        _run(tiny_long, iter(frames), max_buffer_bytes=10 * frames[0].nbytes)


def test_too_short_clip_is_refused(tiny_long):
    with pytest.raises(ValueError, match="at least 21"):
        _run(tiny_long, list(_clip(20)))


def test_flex_attention_block_mask_equals_dense_masked_attention():
    torch.manual_seed(0)
    heads, d = 2, 16
    q_blocks, k_blocks = torch.randn(4, 128, heads * d), torch.randn(8, 128, heads * d)
    mask = draft_block_mask(q_blocks, k_blocks, heads, local_block_mask(1, 2, 1), topk=5)
    mask[1, 0] = False  # a query block that reads nothing gives zeros in both kernels
    q, k, v = (torch.randn(1, heads, n * 128, d) for n in (4, 8, 8))
    dense = BlockSparseKernel("dense")(q, k, v, mask)
    flex = BlockSparseKernel("flex", compile_flex=False)(q, k, v, mask)
    assert torch.allclose(dense, flex, atol=1e-5)
    assert dense[0, 1, :128].abs().max() == 0
    assert 0 < mask.sum() < mask.numel()


# -- the official files -----------------------------------------------------------------------------------------
def official_lq_proj_keys(layers: int = 1) -> list[str]:
    # Buffer_LQ4x_Proj: conv1/conv2 (CausalConv3d, bias), norm1/norm2 (RMS_norm: gamma, no bias), linear_layers.N.
    keys = ["conv1.weight", "conv1.bias", "norm1.gamma", "conv2.weight", "conv2.bias", "norm2.gamma"]
    return keys + [f"linear_layers.{i}.{p}" for i in range(layers) for p in ("weight", "bias")]


def official_tcdecoder_keys() -> list[str]:
    # TAEHV decoder with identity deepening: conv (1, bias), IdentityConv2d (3, 24), MemBlocks (conv.0/2/4 with bias;
    # no skip when widths agree), TGrow 1x1 convs (9, 15, 21), convs without bias (10, 16, 22), last conv (26).
    keys = ["decoder.1.weight", "decoder.1.bias", "decoder.3.weight", "decoder.24.weight"]
    keys += ["decoder.26.weight", "decoder.26.bias"]
    for i in (5, 6, 7, 11, 12, 13, 17, 18, 19):
        keys += [f"decoder.{i}.conv.{j}.{p}" for j in (0, 2, 4) for p in ("weight", "bias")]
    keys += [f"decoder.{i}.conv.weight" for i in (9, 15, 21)] + [f"decoder.{i}.weight" for i in (10, 16, 22)]
    return keys


def write_official_directory(model, path) -> None:
    """A tiny FlashVSR v1.1 directory: the official file names, each holding the official key names."""
    sd = model.transformer.state_dict()
    keys = official_transformer_keys("t2v", model.transformer.config.num_layers)
    dit = to_original(sd, invert_keys(wan_transformer.convert_transformer_state_dict, keys, sd))
    save_file({k: v.contiguous() for k, v in dit.items()}, str(path / loading.DIT_FILE))
    lq = model.lq_proj.state_dict()
    assert sorted(lq) == sorted(official_lq_proj_keys())
    torch.save(lq, path / loading.LQ_PROJ_FILE)
    tc = model.tcdecoder.state_dict()
    assert sorted(tc) == sorted(official_tcdecoder_keys())
    torch.save(tc, path / loading.TCDECODER_FILE)
    torch.save(model.context, path / loading.PROMPT_FILE)


def test_tiny_flashvsr_in_the_official_files_loads_and_runs_the_same(tmp_path, tiny_long):
    write_official_directory(tiny_long, tmp_path)
    loaded = load_flashvsr(tmp_path, "tiny-long", dtype=torch.float32)
    assert loaded.transformer.config.num_layers == 2 and loaded.lq_proj.conv1.out_channels == 32
    assert loaded.tcdecoder.channels == tiny_long.tcdecoder.channels
    frames = list(_clip(21))
    assert np.array_equal(_run(loaded, frames)[0], _run(tiny_long, frames)[0])


def test_missing_official_file_is_named(tmp_path):
    with pytest.raises(loading.FlashVSRCheckpointError, match="TCDecoder.ckpt"):
        load_flashvsr(tmp_path, "tiny")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (compiled FlexAttention)")
def test_compiled_flex_attention_equals_dense_on_cuda():
    gen = torch.Generator("cuda").manual_seed(0)
    heads, d = 4, 64
    q = torch.randn(1, heads, 6 * 128, d, device="cuda", generator=gen)
    k, v = (torch.randn(1, heads, 12 * 128, d, device="cuda", generator=gen) for _ in range(2))
    blocks = lambda t: t.transpose(1, 2).reshape(-1, 128, heads * d)  # noqa: E731
    mask = draft_block_mask(blocks(q), blocks(k), heads, local_block_mask(2, 3, 3, device="cuda"), topk=20)
    mask[0, 0] = False
    dense = BlockSparseKernel("dense")(q, k, v, mask)
    flex = BlockSparseKernel("flex")(q, k, v, mask)
    assert torch.allclose(dense, flex, atol=1e-3)
    assert flex[0, 0, :128].abs().max() == 0


def test_weights_status_reads_the_official_directory(tmp_path):
    from wanserve.engine.config import WeightsConfig
    from wanserve.engine.loading import weights_status
    from wanserve.engine.registry import get_spec

    for name in (loading.DIT_FILE, loading.LQ_PROJ_FILE, loading.TCDECODER_FILE, loading.PROMPT_FILE):
        (tmp_path / name).write_bytes(b"")
    weights = WeightsConfig.of(str(tmp_path / "models"), {"flashvsr-v1.1-tiny-long": str(tmp_path)}, None)
    status = weights_status(get_spec("flashvsr-v1.1-tiny-long"), weights)
    assert (status.layout, status.complete, status.missing) == ("flashvsr", True, ())
    full = weights_status(get_spec("flashvsr-v1.1-full"), weights, path=tmp_path)
    assert (full.present, full.complete, full.missing) == (True, False, (loading.VAE_FILE,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the cache moves to the CPU between chunks)")
def test_kv_cache_offload_keeps_the_cache_on_the_cpu_and_the_output():
    model = build_random_flashvsr("tiny-long")
    for module in model.modules().values():
        module.to("cuda")
    model.context = model.context.cuda()
    frames = list(_clip(29))
    outs = []
    for offload in (False, True):
        chunks: list[np.ndarray] = []
        run = FlashVSRRun(model, UpscaleOptions(cache_offload=offload), torch.device("cuda"), torch.float32)
        run.run(frames, chunks.append)
        outs.append(np.concatenate(chunks).astype(int))
        assert run.cache_devices == {"cpu" if offload else "cuda"}
    assert np.abs(outs[0] - outs[1]).max() <= 1


def test_full_variant_loads_the_wan_vae_and_decodes_with_it(tmp_path, tiny_long):
    from tests.models.wan_original import vae_to_original

    full = build_random_flashvsr("full")
    write_official_directory(tiny_long, tmp_path)  # the same DiT and LQ weights (same seed)
    torch.save(vae_to_original(full.vae), tmp_path / loading.VAE_FILE)
    loaded = load_flashvsr(tmp_path, "full", dtype=torch.float32)
    assert loaded.tcdecoder is None
    for (name, ours), theirs in zip(loaded.vae.state_dict().items(), full.vae.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    out, pieces, _ = _run(loaded, list(_clip(21, height=32, width=32)))
    assert out.shape == (21, 128, 128, 3) and sum(pieces) == 21  # the Wan VAE: 4 x 6 latent frames - 3
