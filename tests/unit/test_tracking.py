"""Tracking: secrets never leave the environment; modes resolve as documented; metrics land on disk."""

import json

import pytest

from kgutils import tracking


def test_scrub_drops_credentials_but_keeps_env_var_names():
    cfg = {"TEACHER_API_KEY": "sk-123", "API_KEY_ENV": "DEEPSEEK_API_KEY", "LR": 1e-4,
           "nested": {"hf_token": "x", "ok": 1}, "WANDB_PASSWORD": "p", "MAX_NEW_TOKENS": 512,
           "HF_TOKEN": "y", "ENDPOINT_NOTE": "sk-abcdefghijklmnopqrstuvwxyz"}
    clean = tracking.scrub(cfg)
    assert clean == {"API_KEY_ENV": "DEEPSEEK_API_KEY", "LR": 1e-4, "nested": {"ok": 1}, "MAX_NEW_TOKENS": 512}


@pytest.mark.parametrize(
    "env, mode, expected",
    [
        ({}, "auto", "offline"),
        ({"WANDB_API_KEY": "k"}, "auto", "online"),
        ({"WANDB_API_KEY": "k", "KG_TRIPLETS_TRACKING": "off"}, "auto", "disabled"),
        ({"WANDB_MODE": "disabled"}, "online", "disabled"),
        ({}, "offline", "offline"),
    ],
)
def test_resolve_mode(monkeypatch, env, mode, expected):
    for var in ("WANDB_API_KEY", "KG_TRIPLETS_TRACKING", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert tracking.resolve_mode(mode) == expected


def test_resolve_mode_rejects_unknown():
    with pytest.raises(ValueError, match="WANDB_MODE parameter"):
        tracking.resolve_mode("sometimes")


def test_offline_run_writes_params_metrics_and_wandb_files(tmp_path, monkeypatch, capsys):
    for var in ("WANDB_API_KEY", "KG_TRIPLETS_TRACKING", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    tr = tracking.init_run(tmp_path / "run", {"LR": 0.1, "MY_SECRET": "s3cret"}, mode="offline")
    assert tr.mode == "offline" and tr.run is not None
    tr.log({"loss": 1.5})
    path = tr.finish({"macro": {"composite": 0.5}})
    assert json.loads(path.read_text()) == {"macro": {"composite": 0.5}}
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params == {"LR": 0.1}
    assert "s3cret" not in capsys.readouterr().out
    wandb_files = list((tmp_path / "run" / "wandb").rglob("*.wandb"))
    assert wandb_files, "offline W&B run files were not written"
    assert not any(b"s3cret" in f.read_bytes() for f in (tmp_path / "run").rglob("*") if f.is_file())
