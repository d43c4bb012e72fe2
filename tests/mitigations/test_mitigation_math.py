"""Analytic checks of each mitigation's pure function."""

import pytest
import torch

from retain.mitigations.distill import kl_divergence, positions, top_k_kl
from retain.mitigations.freezing import trainable_blocks_at
from retain.model.weights import interpolate, task_arithmetic, ties_merge
from retain.mitigations.penalties import diagonal_fisher, weighted_l2
from retain.mitigations.replay import mix_replay, replay_count


def test_weighted_l2_is_zero_at_the_anchor_and_matches_hand_value():
    anchor = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    assert weighted_l2(anchor, anchor) == 0
    moved = {"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([1.5])}
    assert weighted_l2(moved, anchor) == pytest.approx(2.0)
    importance = {"w": torch.tensor([3.0, 100.0]), "b": torch.tensor([0.5])}
    assert weighted_l2(moved, anchor, importance) == pytest.approx(3.0 + 0.5)


def test_kl_of_a_model_with_itself_is_zero_and_hand_value():
    logits = torch.randn(2, 5, 11)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert kl_divergence(logits, logits, mask).abs() < 1e-6
    assert kl_divergence(logits, logits, mask, direction="reverse").abs() < 1e-6
    top = torch.log_softmax(logits, -1).topk(4, dim=-1)
    assert top_k_kl(logits, top.indices, top.values, mask).abs() < 1e-6
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    student, teacher = q.log()[None, None], p.log()[None, None]
    one = torch.ones(1, 1, dtype=torch.bool)
    forward = (p * (p / q).log()).sum()
    assert kl_divergence(student, teacher, one) == pytest.approx(forward.item(), rel=1e-5)
    reverse = (q * (q / p).log()).sum()
    assert kl_divergence(student, teacher, one, direction="reverse") == pytest.approx(reverse.item(), rel=1e-5)


def test_kl_positions_follow_labels_and_replay_flags():
    batch = {"labels": torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]]), "replay": torch.tensor([False, True])}
    assert positions(batch, "all").tolist() == [[True, True, False, False], [False, True, True, False]]
    assert positions(batch, "task").tolist() == [[True, True, False, False], [False, False, False, False]]
    assert positions(batch, "replay").tolist() == [[False] * 4, [False, True, True, False]]


@pytest.mark.parametrize("n_task, ratio", [(100, 0.15), (561, 0.2), (7, 0.5), (3, 0.1)])
def test_replay_ratio_is_exact(n_task, ratio):
    mixed = mix_replay([("task", i) for i in range(n_task)], [("general", i) for i in range(50)], ratio, seed=0)
    n_replay = sum(1 for kind, _ in mixed if kind == "general")
    assert n_replay == replay_count(n_task, ratio) == round(ratio * n_task / (1 - ratio))
    assert abs(n_replay / len(mixed) - ratio) <= 1 / len(mixed)
    assert mixed == mix_replay([("task", i) for i in range(n_task)], [("general", i) for i in range(50)], ratio, 0)


def test_interpolation_endpoints_and_midpoint():
    base, tuned = {"w": torch.zeros(3)}, {"w": torch.tensor([2.0, 4.0, -2.0])}
    assert torch.equal(interpolate(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(interpolate(base, tuned, 1.0)["w"], tuned["w"])
    assert interpolate(base, tuned, 0.25)["w"].tolist() == [0.5, 1.0, -0.5]


def test_task_arithmetic_and_ties_by_hand():
    base = {"w": torch.zeros(4)}
    a, b = {"w": torch.tensor([1.0, -2.0, 0.1, 3.0])}, {"w": torch.tensor([1.0, 2.0, 0.0, -1.0])}
    assert task_arithmetic(base, [a, b])["w"].tolist() == pytest.approx([2.0, 0.0, 0.1, 2.0])
    # density 0.5 keeps the 2 largest |delta| of each: a -> [0,-2,0,3], b -> [0,2,0,-1] (ties at 1.0: both kept)
    # signs: sum = [0, 0, 0, 2] -> elected sign of index 3 is +, only a's 3 agrees -> 3
    merged = ties_merge(base, [a, b], density=0.5)["w"]
    assert merged[3].item() == pytest.approx(3.0)
    assert merged[2].item() == 0.0


def test_progressive_unfreezing_schedule():
    assert trainable_blocks_at(0, 4, start_blocks=1, every=10) == {3}
    assert trainable_blocks_at(19, 4, start_blocks=1, every=10) == {2, 3}
    assert trainable_blocks_at(1000, 4, start_blocks=1, every=10) == {0, 1, 2, 3}


def test_fisher_is_the_mean_squared_gradient():
    model = torch.nn.Linear(3, 1, bias=False)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, input_ids, attention_mask, labels):
            return type("O", (), {"loss": (self.lin(input_ids).squeeze(-1) - labels).pow(2).mean()})()

    wrapped = Wrapped()
    batches = [{"input_ids": torch.tensor([[1.0, 0.0, 2.0]]), "attention_mask": None, "labels": torch.tensor([0.0])}] * 2
    params = {"w": model.weight}
    fisher = diagonal_fisher(wrapped, batches, params)["w"]
    x = batches[0]["input_ids"]
    grad = 2 * (model(x).squeeze(-1) - 0.0) * x
    assert torch.allclose(fisher, grad.detach().pow(2))
