"""The Train form's checks: every out-of-range number, bad label budget and malformed hidden-size list is refused
in plain words, and valid settings pass untouched."""

import pytest
import torch

from ssvae_core.data import label_split
from ssvae_core.train import TrainConfig
from ssvae_core.validate import SMALLEST_CLASS, parse_hidden, problems, smallest_class

D = TrainConfig()
GOOD = {"dataset": "mnist", "kind": "m2", "labels": 100, "epochs": 10, "m1_epochs": 10, "seed": 0, "lr": 3e-4,
        "lr_final": 0.0, "kl_warmup": 0.0, "m1_lr": 3e-4, "m1_lr_final": 0.0, "m1_kl_warmup": 0.0, "z_dim": 50,
        "hidden": "500", "batch_size": 100}


def test_defaults_and_edges_pass():
    assert problems(GOOD) == {}
    assert problems({**GOOD, "kind": "m1m2", "labels": 45060, "epochs": 3000, "seed": 2**31 - 1, "lr": 1.0,
                     "batch_size": 10, "z_dim": 512, "hidden": " 500, 500,"}) == {}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("epochs", 0, "Epochs must be from 1 to 3,000; 0 is outside"),
    ("epochs", 3001, "3,001 is outside"),
    ("batch_size", 1, "batch size must be from 10 to 5,000; 1 is outside"),
    ("seed", -1, "seed must be from 0"),
    ("z_dim", 0, "z size"),
    ("lr", 0.0, "learning rate must be from 0.000001 to 1; 0 is outside"),
    ("lr_final", 2.0, "final learning rate"),
    ("kl_warmup", -1.0, "KL warm-up"),
    ("epochs", None, "empty"),
    ("epochs", 2.5, "whole number"),
])
def test_numbers_out_of_range_are_refused(field, value, words):
    got = problems({**GOOD, field: value})
    assert list(got) == [field] and words in got[field]


def test_m1_stage_is_checked_only_for_m1m2():
    bad = {**GOOD, "m1_epochs": 0, "m1_lr": 5.0}
    assert problems(bad) == {}
    got = problems({**bad, "kind": "m1m2"})
    assert set(got) == {"m1_epochs", "m1_lr"} and "M1 epochs must be from 1" in got["m1_epochs"]


@pytest.mark.parametrize(("n", "words"), [
    (15, "must be a multiple of 10, so that each of the 10 classes gets the same number of labels: try 10 or 20"),
    (0, "must be at least 10"),
    (-10, "must be at least 10"),
    (99999, "multiple of 10"),
    (60000, "only 4,506 images of its rarest class, so N can be at most 45,060"),
    (45070, "at most 45,060"),
])
def test_bad_label_budgets_are_refused(n, words):
    got = problems({**GOOD, "labels": n})
    assert list(got) == ["labels"] and words in got["labels"]


def test_label_budget_follows_the_dataset_and_the_loaded_pool():
    assert "multiple of 5" in problems({**GOOD, "dataset": "norb", "labels": 12})["labels"]
    assert problems({**GOOD, "dataset": "norb", "labels": 15}) == {}
    assert "at most 1,090" in problems({**GOOD, "dataset": "digits", "labels": 1100})["labels"]
    assert problems({**GOOD, "dataset": "digits", "labels": 1090}) == {}
    assert "at most 300" in problems({**GOOD, "labels": 310}, smallest=30)["labels"]  # the pool in memory wins


def test_known_sizes_match_the_data(digits):
    assert smallest_class(digits.y_train, 10) == SMALLEST_CLASS["digits"]
    label_split(digits.y_train, 10 * SMALLEST_CLASS["digits"], 10, 0)  # the largest N allowed can be drawn
    assert smallest_class(torch.tensor([0, 0, 1, 2, 2]), 4) == 0  # a missing class counts as none


@pytest.mark.parametrize(("text", "words"), [
    ("abc", "whole numbers separated by commas"),
    ("500;500", "whole numbers separated by commas"),
    ("", "at least one hidden layer"),
    (" , ", "at least one hidden layer"),
    ("500,0", "at least 1 unit"),
    ("-5", "at least 1 unit"),
])
def test_malformed_hidden_sizes_are_refused(text, words):
    got = problems({**GOOD, "hidden": text})
    assert list(got) == ["hidden"] and words in got["hidden"] and "invalid literal" not in got["hidden"]


def test_parse_hidden_reads_what_the_form_always_read():
    assert parse_hidden("500") == [500]
    assert parse_hidden("500, 500") == [500, 500]
    assert parse_hidden("32,,16,") == [32, 16]
    with pytest.raises(ValueError):
        parse_hidden("abc")
