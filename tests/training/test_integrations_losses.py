"""Every loss-side option of retain's mitigations table, through a transformers Trainer with RetainLossMixin: the
loss of a step equals retain's loop step on the same batch and weights, or the option is refused by name."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from retain.core.errors import ConfigError
from retain.training.integrations.losses import DEFAULT_MAX_LENGTH, LOSS_TERMS, ROLES_FILE, parse_loss_terms
from retain.mitigations import MITIGATIONS, build_mitigations, parse_mitigations
from retain.mitigations.roles import LossTerm, Setup, TokenWeights, WritesFiles, playing
from test_integrations import ROWS, load, make_trainer

GENERAL = "lab:general.jsonl"
BASE = {"ewc": {"file": GENERAL, "batches": 2, "batch_size": 2}, "si": {"file": GENERAL, "steps": 2, "batch_size": 2}}
PREVIOUS = "<previous stage>"  # replaced by the previous_importance fixture's file of the same kind
# A value other than the default for every option a loss-side mitigation has (with what it needs to matter).
OTHER = {
    ("kl", "weight"): {"weight": 0.3}, ("kl", "temperature"): {"temperature": 2.0},
    ("kl", "direction"): {"direction": "reverse"}, ("kl", "apply_to"): {"apply_to": "task"},
    ("kl", "cache_top_k"): {"cache_top_k": 5},
    ("l2sp", "weight"): {"weight": 0.3},
    ("ewc", "weight"): {"weight": 0.3}, ("ewc", "file"): {"file": GENERAL}, ("ewc", "batches"): {"batches": 3},
    ("ewc", "batch_size"): {"batch_size": 3}, ("ewc", "normalize"): {"normalize": False},
    ("ewc", "fisher_in"): {"fisher_in": PREVIOUS}, ("ewc", "decay"): {"decay": 0.5, "fisher_in": PREVIOUS},
    ("ewc", "save_fisher"): {"save_fisher": False},
    ("si", "weight"): {"weight": 0.3}, ("si", "file"): {"file": GENERAL}, ("si", "steps"): {"steps": 3},
    ("si", "batch_size"): {"batch_size": 3}, ("si", "step_lr"): {"step_lr": 1e-2},
    ("si", "relative_damping"): {"relative_damping": 0.5}, ("si", "normalize"): {"normalize": False},
    ("si", "importance_in"): {"importance_in": PREVIOUS}, ("si", "decay"): {"decay": 0.5, "importance_in": PREVIOUS},
    ("si", "save_importance"): {"save_importance": False},
    ("eaft", "top_k"): {"top_k": 5}, ("eaft", "alpha"): {"alpha": 2.0},
    ("asft", "weight"): {"weight": 0.3}, ("asft", "cache_top_k"): {"cache_top_k": 5},
}
CASES = [(name, None) for name in LOSS_TERMS] + list(OTHER)


def test_the_cases_cover_every_option_of_every_loss_side_mitigation():
    assert set(LOSS_TERMS) == {"dft", "eaft", "asft", "kl", "l2sp", "ewc", "si"}  # read from the table
    every = {(name, f.name) for name in LOSS_TERMS for f in dataclasses.fields(MITIGATIONS[name][0])}
    assert every == set(OTHER)  # a new option fails here until it has a case


@pytest.fixture(scope="module")
def previous_importance(tiny_model, tmp_path_factory):
    """An earlier stage's raw importance per kind (fisher.pt / si_importance.pt): 10 × this stage's own on the LM
    head and nothing elsewhere, so that adding it (and its decay) moves the penalty well beyond the tolerance."""
    from retain.training.integrations.callback import role_context

    folder, files = tmp_path_factory.mktemp("previous"), {}
    for name in ("ewc", "si"):
        model, tokenizer = load(tiny_model)
        role = build_mitigations(parse_mitigations({name: BASE[name]}))[0]
        role.setup(model, role_context(tokenizer, total_steps=2, max_length=DEFAULT_MAX_LENGTH, output_dir=folder))
        files[name] = folder / f"{name}.pt"
        torch.save({"lm_head.weight": 10 * role.raw_importance["lm_head.weight"]}, files[name])
    return {name: str(path) for name, path in files.items()}


def loop_step_loss(tiny_model, options: dict, weights: dict, batch: dict, out):
    """retain's loop on one micro-batch: the roles set up on the base, then the step's loss at `weights`."""
    from accelerate import Accelerator

    from retain.training.integrations.callback import role_context
    from retain.objectives.sft import SFT
    from retain.training.step import accumulate_gradients

    model, tokenizer = load(tiny_model)
    roles = build_mitigations(parse_mitigations(options))
    ctx = role_context(tokenizer, total_steps=2, max_length=DEFAULT_MAX_LENGTH, output_dir=out)
    for m in playing(roles, Setup):
        m.setup(model, ctx)
    model.load_state_dict(weights)
    model.train()
    shares = accumulate_gradients(model, model, [batch], playing(roles, LossTerm), Accelerator(cpu=True),
                                  SFT(playing(roles, TokenWeights)))
    files = {name: content for m in playing(roles, WritesFiles) for name, content in m.files().items()}
    return sum(v.item() for v in shares.values()), shares, files


@pytest.mark.parametrize("name,option", CASES, ids=[f"{n}-{o or 'defaults'}" for n, o in CASES])
def test_every_loss_side_option_gives_the_loops_loss_in_a_trainer(name, option, tiny_model, previous_importance,
                                                                  tmp_path):
    from transformers import Trainer

    from retain.training.integrations import RetainLossMixin

    overrides = {k: previous_importance[name] if v == PREVIOUS else v for k, v in OTHER.get((name, option), {}).items()}
    options = {name: {**BASE.get(name, {}), **overrides}}
    steps = []

    class Recording(RetainLossMixin, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            before = {n: p.detach().clone() for n, p in model.state_dict().items()}
            batch = {k: v.clone() for k, v in inputs.items()}
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            steps.append((before, batch, loss.item()))
            return loss

    torch.manual_seed(0)
    model, tokenizer = load(tiny_model)
    trainer = make_trainer("trainer", model, tokenizer, tmp_path / "out", rows=ROWS[:8], max_steps=2, bf16=False,
                           retain_losses=options, trainer_class=Recording)
    trainer.train()

    weights, batch, got = steps[-1]  # the second step: the weights have moved from the anchors
    want, shares, files = loop_step_loss(tiny_model, options, weights, batch, tmp_path / "loop")
    assert got == pytest.approx(want, rel=1e-5)
    logged = next(row for row in trainer.state.log_history if row["step"] == 2 and "loss" in row)
    for term, share in shares.items():  # each term by itself: an option that moves one term is seen there
        assert share.item() > 0 and logged[f"loss/{term}"] == pytest.approx(share.item(), rel=1e-5)
    written = {p.name for p in (tmp_path / "out").glob("*.pt")}
    assert written == set(files)  # save_fisher / save_importance: the files the loop writes, and only those
    for file_name, content in files.items():
        saved = torch.load(tmp_path / "out" / file_name, weights_only=True)
        assert saved.keys() == content.keys()
        for key in content:
            torch.testing.assert_close(saved[key], content[key], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", [n for n in MITIGATIONS if n not in LOSS_TERMS])
def test_a_mitigation_that_is_not_loss_side_is_refused_by_name(name, tiny_model, tmp_path):
    model, tokenizer = load(tiny_model)
    with pytest.raises(ConfigError, match=rf"retain_losses\.{name}: not usable in a Trainer's loss — {name} plays "):
        make_trainer("trainer", model, tokenizer, tmp_path / "out", retain_losses={name: {}})


def test_options_a_trainer_cannot_feed_are_refused_naming_them():
    with pytest.raises(ConfigError, match=r"retain_losses\.si\.file: required"):
        parse_loss_terms({"si": {}})
    with pytest.raises(ConfigError, match=r"retain_losses\.nope: not one of retain's mitigations"):
        parse_loss_terms({"nope": {}})


def test_a_resumed_trainer_keeps_the_anchors_and_importance_of_its_first_start(tiny_model, tmp_path):
    options = {"si": BASE["si"], "l2sp": {}}
    torch.manual_seed(0)
    model, tokenizer = load(tiny_model)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = make_trainer("trainer", model, tokenizer, tmp_path / "out", max_steps=4, save_strategy="steps",
                         save_steps=2, retain_losses=options)
    first.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / ROLES_FILE).is_file()

    model, tokenizer = load(tiny_model)
    resumed = make_trainer("trainer", model, tokenizer, tmp_path / "out", max_steps=4, save_strategy="steps",
                           save_steps=2, retain_losses=options)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name in options:  # the anchors are the base's, not the checkpoint's weights the resumed run started at
        anchor = resumed.retain_roles[name].anchor
        assert anchor.keys() == base.keys() and all(torch.equal(anchor[n], base[n]) for n in base)
    si_first, si_resumed = first.retain_roles["si"], resumed.retain_roles["si"]
    assert all(torch.equal(si_first.importance[n], si_resumed.importance[n]) for n in base)


def test_under_trls_fused_head_the_frozen_copy_is_the_base_not_the_student(tiny_model, tmp_path):
    """TRL's SFTTrainer sets an instance forward on the model that calls the original model: a copy made with it
    would run the student, and the KL to it would stay 0 after the weights move."""
    torch.manual_seed(0)
    model, tokenizer = load(tiny_model)
    trainer = make_trainer("sft", model, tokenizer, tmp_path / "out", rows=ROWS[:8], max_steps=2,
                           retain_losses={"kl": {}})
    trainer.train()
    kl = [row["loss/kl"] for row in trainer.state.log_history if "loss" in row]
    assert kl[0] == 0 and kl[1] > 1e-4  # the student equals its base at step 1 only
