"""Parallel plans on CPU with gloo: each plan's output equals the single-process output (cond and uncond forwards),
also at sequence lengths the degree does not divide and for the VACE and Animate transformers; FSDP holds about
half the weights per rank on 2 ranks; the split VAE decode equals the single-process tiled decode.

One process group per test runs every case in turn (starting processes is most of the cost).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.engine import parallel_cases as cases
from wanserve.engine.config import ConfigError
from wanserve.engine.parallel import ParallelConfig
from wanserve.worker.group import free_port

TOLERANCE = 1e-4


PRELOAD = [
    "tests.engine.parallel_cases",
    "wanserve.engine.parallel",
    "diffusers.hooks.context_parallel",
    "diffusers.models.transformers.transformer_wan",
    "diffusers.models.transformers.transformer_wan_vace",
    "diffusers.models.transformers.transformer_wan_animate",
    "diffusers.models.autoencoders.autoencoder_kl_wan",
    "torch.distributed.fsdp",
    "wanserve.engine.engine",
]


def run_group(world_size: int, todo) -> dict:
    # A fork server imports torch and diffusers once; the ranks start as forks of it (a fresh interpreter per rank
    # would import them again, which is most of the time on a small machine).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    queue = ctx.Queue()
    port = free_port()
    processes = [
        ctx.Process(target=cases.rank_main, args=(rank, world_size, port, todo, queue), daemon=True)
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    try:
        expected = len(todo) + 1 + 3 * (world_size == 2)
        results = dict(queue.get(timeout=240) for _ in range(expected))
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    return results


def check(results: dict, todo) -> None:
    for name, kind, frames, size, _plan in todo:
        result = results[name]
        assert not isinstance(result, str), f"{name}: {result}"
        for got, want in zip(result[:2], cases.reference(kind, frames, size), strict=True):
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() <= TOLERANCE, name
    with torch.inference_mode():
        single = cases.tiny_vae().decode(cases.vae_latents(), return_dict=False)[0].numpy()
    assert results["vae"].shape == single.shape
    assert np.abs(results["vae"] - single).max() <= TOLERANCE


def test_plans_on_2_ranks_equal_one_process():
    results = run_group(2, cases.CASES_2)
    check(results, cases.CASES_2)
    # FSDP: each of 2 ranks holds about half the transformer's weights.
    assert 0.45 < results["fsdp_ulysses"][2] < 0.55
    # A whole generation through the engine with CFG parallel: the frames of one process (uint8 rounding aside).
    single = cases.engine_frames()
    assert results["engine"].shape == single.shape
    assert np.abs(results["engine"].astype(int) - single.astype(int)).max() <= 1
    # FirstBlockCache decides once for the group (its change summed over the shards): the one process's outputs,
    # including the skipped forward.
    for got, want in zip(results["first_block_cache"], cases.first_block_cache_outputs(), strict=True):
        assert np.abs(got - want).max() <= TOLERANCE
    # T5 FSDP: the encoder's output of one process, with about half its weights on each rank.
    encoded, share = results["t5_fsdp"]
    assert np.abs(encoded - cases.text_encoder_outputs()[0]).max() <= TOLERANCE
    assert 0.4 < share < 0.6


def test_plans_on_4_ranks_equal_one_process():
    results = run_group(4, cases.CASES_4)
    check(results, cases.CASES_4)


def test_hybrid_refuses_uneven_sequence_by_name():
    from wanserve.engine.parallel import _EvenSequenceCheck
    from wanserve.errors import InvalidRequestError

    config = ParallelConfig(world_size=4, ulysses_degree=2, ring_degree=2)
    hook = _EvenSequenceCheck(config, cases.t2v_transformer())
    hook(None, (), {"hidden_states": torch.zeros(1, 4, 2, 4, 4)})  # 8 tokens: fine
    with pytest.raises(InvalidRequestError, match="9 tokens"):
        hook(None, (), {"hidden_states": torch.zeros(1, 4, 1, 6, 6)})


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        (dict(world_size=4, ulysses_degree=2, cfg_degree=1), "ulysses_degree", "`ulysses_degree` 2 x `ring_degree` 1"),
        (dict(world_size=2, ulysses_degree=1, cfg_degree=3), "cfg_degree", "got 3"),
        (dict(world_size=1, dit_fsdp=True), "dit_fsdp", "`world_size` 1"),
        (dict(world_size=0), "world_size", "got 0"),
    ],
)
def test_parallel_config_names_both_values(kwargs, field, words):
    with pytest.raises(ConfigError) as caught:
        ParallelConfig(**kwargs)
    assert caught.value.field == field and words in str(caught.value)


def test_parallel_config_for_group_gives_ulysses_the_rest():
    assert ParallelConfig.for_group(8, ring_degree=2, cfg_degree=2).ulysses_degree == 2
