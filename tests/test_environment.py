"""Device, precision and the Hub probe: what each kind of machine gets, without needing it here."""

from __future__ import annotations

import pytest
import torch

from ibsr_helpers import environment as env
from ibsr_helpers.errors import IBSRError


def test_auto_precision_on_this_cpu_follows_its_bf16_instructions():
    expected = "bf16" if env.cpu_has_native_bf16() else "fp32"
    assert env.choose_precision("cpu").name == expected
    assert env.choose_precision("cpu", "fp32").dtype is None


@pytest.mark.parametrize(("native_bf16", "name"), [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_follows_the_gpu(monkeypatch, native_bf16, name):
    """Ampere and newer: bf16; a T4 or V100 (no native bf16): fp16 with a gradient scaler."""
    calls = []

    def supported(including_emulation=True):
        calls.append(including_emulation)
        return native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    precision = env.choose_precision(torch.device("cuda"))
    assert precision.name == name and precision.device_type == "cuda"
    assert precision.needs_scaler == (name == "fp16")
    assert calls == [False]  # emulated bf16 (a T4's) does not count


def test_auto_precision_elsewhere_and_explicit_choices(monkeypatch):
    assert env.choose_precision("mps").name == "fp32"
    monkeypatch.setattr(env, "cpu_has_native_bf16", lambda: False)
    assert env.choose_precision("cpu").name == "fp32"
    monkeypatch.setattr(env, "cpu_has_native_bf16", lambda: True)
    assert env.choose_precision("cpu").name == "bf16"
    assert env.choose_precision("cpu", "fp16").dtype == torch.float16
    with pytest.raises(IBSRError, match="train.precision"):
        env.choose_precision("cpu", "fp8")


def test_fp16_step_uses_a_gradient_scaler():
    """The fp16 path (a T4's) runs its scaler: checked on the CPU, where autocast fp16 exists."""
    from ibsr_helpers.step import TrainStep

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = TrainStep(
        model,
        torch.nn.functional.cross_entropy,
        optimizer,
        scheduler,
        env.Precision("fp16", "cpu"),
    )
    assert step.scaler.is_enabled()
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4, 8, 8))
    before = model[0].weight.detach().clone()
    losses = [step(x, y) for _ in range(5)]
    assert not torch.equal(before, model[0].weight) and losses[-1] < losses[0]
    assert step.state_dict()["scaler"]["scale"] > 0


def test_asking_for_a_missing_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(IBSRError, match="no CUDA GPU"):
        env.get_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.get_device("auto").type == "cpu"


def test_colab_secrets_to_env_copies_only_what_is_missing(monkeypatch):
    import sys
    import types

    from ibsr_helpers.environment import colab_secrets_to_env

    assert colab_secrets_to_env(["DAGSHUB_REPO"]) == []  # not on Colab: nothing
    secrets = {"DAGSHUB_REPO": "me/course", "DAGSHUB_USER_TOKEN": "t0k"}

    def get(name):
        if name not in secrets:
            raise KeyError(name)  # what Colab raises for a secret not shared
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "already-set")
    monkeypatch.delenv("DAGSHUB_REPO", raising=False)
    names = ["DAGSHUB_REPO", "DAGSHUB_USER_TOKEN", "UNSHARED"]
    assert colab_secrets_to_env(names) == ["DAGSHUB_REPO"]
    import os

    assert os.environ["DAGSHUB_REPO"] == "me/course"
    assert os.environ["DAGSHUB_USER_TOKEN"] == "already-set"


def test_hub_offline_when_asked_without_probing_the_network(monkeypatch):
    from huggingface_hub import constants

    def no_probe(timeout: float = 3.0) -> bool:
        raise AssertionError("the network was probed although offline mode was asked for")

    monkeypatch.setattr(env, "_hub_reachable", no_probe)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "yes")):
        monkeypatch.setenv(var, value)
        assert env.hub_offline()
        monkeypatch.delenv(var)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert env.hub_offline()


@pytest.mark.parametrize("reachable", [True, False])
def test_hub_offline_otherwise_follows_the_probe(monkeypatch, reachable):
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(env, "_hub_reachable", lambda timeout=3.0: reachable)
    assert env.hub_offline() is not reachable


def test_hub_probe_trusts_a_proxy_and_reports_a_closed_connection(monkeypatch):
    import socket

    def refused(address, timeout=None):
        raise OSError("connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    for var in env._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert env._hub_reachable() is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert env._hub_reachable() is True  # only the proxy knows
