"""GradCache: chunked steps give the unchunked step's losses and gradients (temperatures included),
with hard negatives and Matryoshka, in one process and over 2 gloo ranks; dropout masks are
replayed per chunk; bad chunk sizes are config errors naming the key."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmclip import create_model
from mmclip.config import ConfigError
from mmclip.data.transforms import normalize
from mmclip.losses import InfoNCELoss
from mmclip.train import load_train_config
from mmclip.train.families.clip import logit_scale
from mmclip.train.step import ContrastiveStep, embed_stream, stream_loss

from .conftest import REPO, TINY

KINDS = {"image_text": "image_text", "text_triplet": "text_triplet"}
WEIGHTS = {"image_text": 1.0, "text_triplet": 0.7}
CPU = torch.device("cpu")


def make_batches(count=8, negatives=3, length=12, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def texts(*shape):
        ids = torch.randint(5, 1000, (*shape, length), generator=generator)
        mask = torch.ones_like(ids)
        lengths = torch.randint(3, length + 1, shape, generator=generator)
        mask[torch.arange(length).expand_as(ids) >= lengths.unsqueeze(-1)] = 0  # padded texts of every length
        return ids * mask + (1 - mask), mask

    image_ids, image_mask = texts(count)
    query_ids, query_mask = texts(count)
    positive_ids, positive_mask = texts(count)
    negative_ids, negative_mask = texts(count, negatives)
    return {
        "image_text": {
            "keys": [f"img{i}" for i in range(count)],
            "pixel_values": torch.randint(0, 256, (count, 3, 56, 56), dtype=torch.uint8, generator=generator),
            "input_ids": image_ids, "attention_mask": image_mask,
        },
        "text_triplet": {
            "keys": [f"tri{i}" for i in range(count)],
            "query_ids": query_ids, "query_mask": query_mask,
            "positive_ids": positive_ids, "positive_mask": positive_mask,
            "negative_ids": negative_ids, "negative_mask": negative_mask,
        },
    }


def tiny(patch_dropout=0.0, dropout=0.0):
    torch.manual_seed(0)
    model = create_model(TINY, overrides=[f"vision.patch_dropout={patch_dropout}", f"text.hidden_dropout={dropout}",
                                          f"text.attention_dropout={dropout}"])
    with torch.no_grad():  # away from the init value, so the temperatures' gradients differ per task
        model.logit_scale_text_text.fill_(3.0)
    return model.train()


def backward_into_grads(loss, last):
    loss.backward()


def run_step(model, batches, chunks=None, seed=1, fixed_images=False):
    """One step from a fresh RNG seed; its total loss, stream losses and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    step = ContrastiveStep(model, lambda kind: logit_scale(model, kind), KINDS, InfoNCELoss([16, 32, 64], [0.5, 1.0, 2.0]), WEIGHTS, torch.float32, CPU,
                           backward_into_grads, fixed_images)
    total, losses = step.whole(batches) if chunks is None else step.grad_cache(batches, chunks)
    return total, losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: threads only contend (and other tests share the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_step(a, b, rtol=1e-4, atol=1e-4):  # gradients are O(10): float32 sums in another order
    (total_a, losses_a, grads_a), (total_b, losses_b, grads_b) = a, b
    torch.testing.assert_close(total_a, total_b, rtol=rtol, atol=atol)
    for name in losses_a:
        for key in losses_a[name]:  # the total and every Matryoshka term
            torch.testing.assert_close(losses_a[name][key], losses_b[name][key], rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("chunks", [{"image_text": 2, "text_triplet": 4}, {"image_text": 1, "text_triplet": 1},
                                    {"image_text": 8}])
def test_chunked_step_equals_whole_step(chunks):
    model, batches = tiny(), make_batches()
    whole = run_step(model, batches)
    chunked = run_step(model, batches, chunks)
    assert_same_step(chunked, whole)
    grads = whole[2]
    # Both temperatures and both towers are trained by the step.
    assert {"logit_scale_image_text", "logit_scale_text_text"} <= grads.keys()
    assert grads["logit_scale_image_text"].abs() > 0 and grads["logit_scale_text_text"].abs() > 0
    assert any(name.startswith("vision.") for name in grads) and any(name.startswith("text.") for name in grads)


def test_uint8_pixels_are_normalised_once_by_the_step():
    """The loader's uint8 pixels are normalised in the step and nowhere else: the step's loss is the
    model's loss on pixels normalised by hand, and normalising twice (what the removed
    ``pixel_dtype: float32`` did) gives another loss."""
    model, batches = tiny(), make_batches()
    batch = batches["image_text"]
    assert batch["pixel_values"].dtype == torch.uint8
    total, _, _ = run_step(model, {"image_text": batch})
    loss_fn = InfoNCELoss([16, 32, 64], [0.5, 1.0, 2.0])

    def loss_on(pixels):
        with torch.no_grad():
            out = model(pixel_values=pixels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return loss_fn(out.image_embeds.float(), out.text_embeds.float(), model.logit_scale_image_text)["loss"]

    once = loss_on(normalize(batch["pixel_values"]))
    torch.testing.assert_close(total, WEIGHTS["image_text"] * once)
    assert not torch.allclose(loss_on(normalize(normalize(batch["pixel_values"]))), once)


def test_dropout_masks_are_replayed_per_chunk():
    """With patch dropout and dropout on, GradCache equals a step whose chunks are embedded once,
    with gradients, in the same order: the re-forward drew the same masks as the cached one."""
    model, batches = tiny(patch_dropout=0.5, dropout=0.2), make_batches()
    chunks = {"image_text": 2, "text_triplet": 4}
    cached = run_step(model, batches, chunks)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss_fn = InfoNCELoss([16, 32, 64], [0.5, 1.0, 2.0])
    losses = {}
    for name, batch in batches.items():
        size = chunks[name]
        parts = [embed_stream(model, KINDS[name], {k: v[i:i + size] for k, v in batch.items()}, torch.float32)
                 for i in range(0, len(batch["keys"]), size)]
        embeds = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        scale = model.logit_scale_image_text if name == "image_text" else model.logit_scale_text_text
        losses[name] = stream_loss(loss_fn, embeds, scale)
    total = sum(WEIGHTS[name] * out["loss"] for name, out in losses.items())
    total.backward()
    reference = (total.detach(), losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert_same_step(cached, reference)
    # The masks matter: the whole batch in one piece draws different ones.
    assert not torch.allclose(run_step(model, batches)[0], cached[0])


def test_a_frozen_vision_tower_runs_once_per_chunk_with_the_same_gradients():
    """Nothing of the vision side trains (``mmclip finetune``'s jina-clip-v2): step 3 embeds only the
    captions, so each image chunk crosses the vision tower once, and the gradients are those of the
    chunks embedded in order with gradients, patch dropout and text dropout drawn as before."""
    from mmclip.train.families.clip import CLIPFamily

    model, batches = tiny(patch_dropout=0.5, dropout=0.2), make_batches()
    model.vision.requires_grad_(False)
    model.vision_proj.requires_grad_(False)
    assert CLIPFamily.fixed_image_embeddings(None, model)
    chunks = {"image_text": 2, "text_triplet": 4}
    reference = run_step(model, batches, chunks)  # the vision tower embedded again in step 3
    calls = []
    hook = model.vision.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        once = run_step(model, batches, chunks, fixed_images=True)
    finally:
        hook.remove()
    assert calls == [2, 2, 2, 2]  # the 8 images, 2 at a time, once
    assert_same_step(once, reference)
    assert not any(name.startswith(("vision.", "vision_proj.")) for name in once[2])
    assert any(name.startswith("text.") for name in once[2])
    assert_same_step(run_step(tiny(), batches, chunks, fixed_images=False), run_step(tiny(), batches))  # unchanged
    model.vision_proj = torch.nn.Linear(64, 64)  # a projection that trains: the image side is not fixed
    assert not CLIPFamily.fixed_image_embeddings(None, model)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    batches = make_batches()
    rows = slice(rank * 4, (rank + 1) * 4)  # this rank's half of the global batch of 8
    local = {name: {k: v[rows] for k, v in batch.items()} for name, batch in batches.items()}
    total, losses, grads = run_step(tiny(), local, {"image_text": 2, "text_triplet": 1})
    for grad in grads.values():  # data parallelism averages the ranks' gradients
        dist.all_reduce(grad)
        grad /= world
    results[rank] = (total, losses, grads)
    dist.destroy_process_group()


def test_two_ranks_chunked_equal_one_process_whole():
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        # spawn, not fork: the test process may hold a process group already (in-process training tests)
        mp.spawn(_rank_worker, args=(world, _free_port(), results), nprocs=world)
        results = dict(results)
    whole = run_step(tiny(), make_batches())
    mean = lambda values: sum(values) / world  # noqa: E731
    losses = {name: {key: mean([results[r][1][name][key] for r in range(world)]) for key in whole[1][name]}
              for name in whole[1]}
    two_ranks = (mean([results[r][0] for r in range(world)]), losses, results[0][2])
    assert_same_step(two_ranks, whole)
    torch.testing.assert_close(results[1][2]["text.embeddings.word_embeddings.weight"],
                               results[0][2]["text.embeddings.word_embeddings.weight"])


def stage1_with(**overrides):
    """The stage and its model config, with the family's checks (ZeRO-3 and learned temperatures)."""
    return load_train_config(REPO / "configs" / "stage1.yaml", [f"{k}={v}" for k, v in overrides.items()], world_size=8)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"grad_cache_chunk.image_text": 300}, "grad_cache_chunk.image_text"),  # 2048 per rank
        ({"grad_cache_chunk.image_txt": 64}, "grad_cache_chunk.image_txt"),
        ({"grad_cache_chunk.text_pair": 0}, "grad_cache_chunk.text_pair"),
        ({"grad_cache_chunk.text_pair": 64, "zero_stage": 3}, "grad_cache_chunk"),
    ],
)
def test_bad_chunks_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        stage1_with(**overrides)
