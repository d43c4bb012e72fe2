"""SI is not EWC: on a toy problem where two weights have the same squared gradients but different paths,
EWC's Fisher weighs them equally and SI's Ω does not."""

from types import SimpleNamespace

import pytest
import torch

from retain.mitigations.penalties import diagonal_fisher, synaptic_importance


class TwoWeights(torch.nn.Module):
    """loss = c·a + s·b, (c, s) given by the batch: a's gradient is c, b's is s."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.zeros(())), torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, labels=None):
        c, s = input_ids[0].float()
        return SimpleNamespace(loss=c * self.a + s * self.b)


# a's gradient is +1 at every step (it moves steadily); b's alternates +1, -1 (it moves back and forth, ends where
# it started): the same squared gradient, different paths
BATCHES = [{"input_ids": torch.tensor([[1, (-1) ** t]]), "attention_mask": None, "labels": None} for t in range(4)]


def importances(lr: float, relative_damping: float = 0.1):
    model = TwoWeights()
    params = dict(model.named_parameters())
    fisher = diagonal_fisher(model, BATCHES, params)
    omega = synaptic_importance(model, BATCHES, params, lr, relative_damping)
    assert model.a.item() == 0 and model.b.item() == 0  # weights restored after the path
    return fisher, omega


def test_ewc_weighs_the_two_weights_alike_and_si_by_their_paths_by_hand():
    fisher, omega = importances(lr=0.1)
    assert (fisher["a"].item(), fisher["b"].item()) == (1.0, 1.0)
    # a moved -0.4, b 0; each path integral Σ lr·g² = 0.4; ξ = 0.1 · mean(0.4², 0²) = 0.008
    assert omega["a"].item() == pytest.approx(0.4 / (0.16 + 0.008))
    assert omega["b"].item() == pytest.approx(0.4 / 0.008)


@pytest.mark.parametrize("lr", [1e-1, 1e-3, 1e-6])
def test_si_differs_from_ewc_whatever_the_step_size(lr):
    # a fixed ξ of 1e-3 with steps of 1e-6 made Ω = Σ lr·g² / ξ: the Fisher up to a constant, i.e. EWC
    _, omega = importances(lr)
    assert omega["b"].item() / omega["a"].item() == pytest.approx((1 + 0.05) / 0.05, rel=1e-4)


def test_a_damping_far_above_the_squared_moves_makes_si_the_fisher():
    fisher, omega = importances(lr=0.1, relative_damping=1e6)
    ratio = omega["b"].item() / omega["a"].item()
    assert ratio == pytest.approx(fisher["b"].item() / fisher["a"].item(), rel=1e-5)
