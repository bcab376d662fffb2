"""Losses against the paper's equations, Matryoshka terms, and 2-rank gloo equal to 1 process."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmclip.losses import InfoNCELoss


def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def equation_1(q, p, tau):
    """L_nce = L(q->p) + L(p->q), each the batch mean of -log softmax, written term by term."""
    n = len(q)
    forward = sum(
        -math.log(math.exp(cos(q[i], p[i]) / tau) / sum(math.exp(cos(q[i], p[j]) / tau) for j in range(n)))
        for i in range(n)
    ) / n
    backward = sum(
        -math.log(math.exp(cos(p[i], q[i]) / tau) / sum(math.exp(cos(p[i], q[j]) / tau) for j in range(n)))
        for i in range(n)
    ) / n
    return forward + backward


def equation_2(q, p, negatives, tau):
    """As equation 1, but q->p's denominator also sums over every query's hard negatives."""
    n, k = negatives.shape[:2]
    forward = 0.0
    for i in range(n):
        denominator = sum(math.exp(cos(q[i], p[j]) / tau) for j in range(n))
        denominator += sum(math.exp(cos(q[i], negatives[j, m]) / tau) for j in range(n) for m in range(k))
        forward += -math.log(math.exp(cos(q[i], p[i]) / tau) / denominator)
    backward = sum(
        -math.log(math.exp(cos(p[i], q[i]) / tau) / sum(math.exp(cos(p[i], q[j]) / tau) for j in range(n)))
        for i in range(n)
    )
    return forward / n + backward / n


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(6, 32, dtype=torch.float64), torch.randn(6, 32, dtype=torch.float64), torch.randn(6, 7, 32, dtype=torch.float64)


def test_infonce_is_equation_1(batch):
    q, p, _ = batch
    tau = 0.05
    out = InfoNCELoss([32])(q, p, torch.tensor(math.log(1 / tau), dtype=torch.float64))
    assert out["loss"].item() == pytest.approx(equation_1(q, p, tau), rel=1e-9)


def test_infonce_with_hard_negatives_is_equation_2(batch):
    q, p, negatives = batch
    tau = 0.02
    out = InfoNCELoss([32])(q, p, torch.tensor(math.log(1 / tau), dtype=torch.float64), negatives)
    assert out["loss"].item() == pytest.approx(equation_2(q, p, negatives, tau), rel=1e-9)
    assert out["loss"] > InfoNCELoss([32])(q, p, torch.tensor(math.log(1 / tau), dtype=torch.float64))["loss"]


def test_matryoshka_sums_renormalised_prefix_losses(batch):
    q, p, _ = batch
    scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    dims, weights = [8, 16, 32], [0.5, 1.0, 2.0]
    out = InfoNCELoss(dims, weights)(q, p, scale)
    terms = {d: equation_1(q[:, :d], p[:, :d], 0.05) for d in dims}
    for d in dims:
        assert out[f"loss@{d}"].item() == pytest.approx(terms[d], rel=1e-9)
    assert out["loss"].item() == pytest.approx(sum(w * terms[d] for d, w in zip(dims, weights)), rel=1e-9)
    # Each prefix term is its own loss, not the full-dimension one computed again.
    assert len({round(terms[d], 6) for d in dims}) == 3


def test_matryoshka_dims_must_include_the_full_width(batch):
    q, p, _ = batch
    with pytest.raises(ValueError, match="embedding width 32"):
        InfoNCELoss([8, 16])(q, p, torch.tensor(3.0))
    with pytest.raises(ValueError, match="increasing"):
        InfoNCELoss([16, 8, 32])
    with pytest.raises(ValueError, match="weights"):
        InfoNCELoss([16, 32], [1.0])


def test_temperature_gets_a_gradient(batch):
    q, p, negatives = batch
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    InfoNCELoss([16, 32])(q, p, scale, negatives)["loss"].backward()
    assert scale.grad is not None and scale.grad != 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, port, tensors, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    q, p, negatives = (t.chunk(world)[rank].clone().requires_grad_(True) for t in tensors)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    out = InfoNCELoss([16, 32])(q, p, scale, negatives)
    out["loss"].backward()
    results[rank] = (out["loss"].detach(), q.grad, p.grad, negatives.grad, scale.grad)
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_global_batch(batch):
    world = 2
    tensors = batch
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_worker, args=(world, _free_port(), tensors, results), nprocs=world)
        results = dict(results)

    q, p, negatives = (t.clone().requires_grad_(True) for t in tensors)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    expected = InfoNCELoss([16, 32])(q, p, scale, negatives)["loss"]
    expected.backward()

    # Mean of the ranks' local losses is the global loss ...
    assert torch.stack([results[r][0] for r in range(world)]).mean().item() == pytest.approx(expected.item(), rel=1e-9)
    # ... and the gradients, averaged over ranks as data parallelism does, are the global ones.
    for index, full in enumerate((q.grad, p.grad, negatives.grad), start=1):
        local = torch.cat([results[r][index] for r in range(world)]) / world
        torch.testing.assert_close(local, full, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sum(results[r][4] for r in range(world)) / world, scale.grad)
