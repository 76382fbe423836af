"""The pieces of the training loop one by one (Trainer), and a stop by a real signal in the middle of a run."""

import errno
import os
import signal

import pandas as pd
import pytest
import torch
import yaml

from brainmets.config import validate_model
from brainmets.errors import BrainmetsError
from brainmets.models import load_trained
from brainmets.training.loop import RunRequest, train
from brainmets.training.trainer import Trainer


def request(tiny_data, out_dir, model="unet", **kw):
    cache, splits = tiny_data
    return RunRequest(study="modality", model=model, subset="t1c+t2f", seed=0, cache_dir=cache, splits=splits,
                      out_dir=out_dir, **kw)


def weights(path, key="state_dict"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def history_iterations(out):
    return pd.read_csv(out / "history.tsv", sep="\t")["iteration"].tolist()


def test_resume_restores_iteration_history_best_and_weights(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    fresh = Trainer(tiny_config, request(tiny_data, out))
    assert fresh.resume() is False and (fresh.iteration, fresh.history, fresh.best, fresh.saved) == (0, [], None, None)

    train(tiny_config, request(tiny_data, out), progress=False, stop_at=5)  # checkpoints at 2, 4, 5; validated at 3
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    (out / "history.tsv").unlink()  # as if the job died between writing checkpoint.pt and history.tsv

    trainer = Trainer(tiny_config, request(tiny_data, out))
    assert trainer.resume() is True
    assert (trainer.iteration, trainer.saved) == (5, 5)
    assert [row["iteration"] for row in trainer.history] == [1, 2, 3, 4, 5]
    assert trainer.history == saved["history"]
    assert trainer.best == {"score": load_trained(out / "val_best.pt")[1]["val_score"], "iteration": 3}
    assert trainer.window == [] and trainer.seconds == saved["extra"]["seconds"] > 0
    assert_same_weights(trainer.model.state_dict(), saved["model"])
    assert trainer.optimizer.param_groups[0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"] < 0.01
    assert history_iterations(out) == [1, 2, 3, 4, 5]  # rewritten from the checkpoint


def test_train_step_and_record_advance_the_state(tiny_data, tiny_config, tmp_path):
    tiny_config["training"]["log_every"] = 2
    trainer = Trainer(tiny_config, request(tiny_data, tmp_path / "run"))
    loss, lr = trainer.train_step(trainer.sampler.batch(0))
    assert (trainer.iteration, trainer.window, lr) == (1, [loss], 0.01)
    assert trainer.record(lr) is None and trainer.history == []  # no row due at iteration 1
    loss2, lr2 = trainer.train_step(trainer.sampler.batch(1))
    row = trainer.record(lr2)
    assert row == trainer.history[0] and trainer.window == []
    assert (row["iteration"], row["loss"], row["lr"]) == (2, (loss + loss2) / 2, lr2)
    assert lr2 < lr  # the schedule moved on
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # stepping writes nothing; checkpoint() does


def test_checkpoint_is_atomic_and_keeps_history_with_it(tiny_data, tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config, request(tiny_data, out))
    for t in range(2):
        trainer.record(trainer.train_step(trainer.sampler.batch(t))[1])
    trainer.checkpoint()
    assert trainer.saved == 2 and torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert history_iterations(out) == [1, 2]
    before = (out / "checkpoint.pt").read_bytes()

    trainer.record(trainer.train_step(trainer.sampler.batch(2))[1])
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):  # the write fails as the file is put in place
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.EIO, "input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(BrainmetsError, match="could not write .*checkpoint.pt"):
        trainer.checkpoint()
    monkeypatch.undo()
    assert (out / "checkpoint.pt").read_bytes() == before  # the previous checkpoint, whole
    assert history_iterations(out) == [1, 2]  # history.tsv not ahead of it
    assert trainer.saved == 2
    assert not [p.name for p in out.iterdir() if ".part" in p.name]


def test_validate_writes_best_only_when_the_score_improves(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config, request(tiny_data, out))
    logit = {"value": -10.0}  # the network's output is replaced: -10 predicts nothing, +10 everything
    trainer.model.register_forward_hook(lambda module, args, output: torch.full_like(output, logit["value"]))

    nothing = trainer.validate()
    assert nothing["val_score"] < 1  # the validation cases hold tumour that nothing-predicted misses
    assert trainer.best == {"score": nothing["val_score"], "iteration": 0}
    first = (out / "val_best.pt").read_bytes()

    trainer.iteration = 1
    assert trainer.validate() == nothing  # equal is not better
    assert trainer.best["iteration"] == 0 and (out / "val_best.pt").read_bytes() == first

    trainer.iteration, logit["value"] = 2, 10.0
    everything = trainer.validate()
    assert everything["val_score"] > nothing["val_score"]
    assert trainer.best == {"score": everything["val_score"], "iteration": 2}
    info = load_trained(out / "val_best.pt")[1]
    assert (info["iteration"], info["val_score"]) == (2, everything["val_score"])

    trainer.iteration, logit["value"] = 3, -10.0
    trainer.validate()
    assert trainer.best["iteration"] == 2 and load_trained(out / "val_best.pt")[1]["iteration"] == 2


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_there(tiny_data, tiny_config, tmp_path, monkeypatch,
                                                              signum):
    # a real signal to this process at the end of step 3 (checkpoints are due at 2, 4, 6)
    real_step = Trainer.train_step

    def step_then_signal(self, batch):
        result = real_step(self, batch)
        if self.iteration == 3:
            os.kill(os.getpid(), signum)
        return result

    handler = signal.getsignal(signum)
    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    out = tmp_path / "stopped"
    result = train(tiny_config, request(tiny_data, out), progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signum) == handler  # the process's own handling is back
    assert (result.status, result.iteration, result.signal) == ("stopped", 3, signum.name)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 3
    assert history_iterations(out) == [1, 2, 3]
    assert not (out / "model.pt").exists()

    rest = train(tiny_config, request(tiny_data, out), progress=False)
    assert (rest.status, rest.start_iteration) == ("trained", 3)
    whole = tmp_path / "whole"
    train(tiny_config, request(tiny_data, whole), progress=False)
    assert_same_weights(weights(whole / "model.pt"), weights(out / "model.pt"))
    assert_same_weights(weights(whole / "best.pt"), weights(out / "best.pt"))
    a = pd.read_csv(whole / "history.tsv", sep="\t").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, pd.read_csv(out / "history.tsv", sep="\t").drop(columns="seconds"))


def test_training_runs_channels_last_where_the_network_suits_it(tiny_data, tiny_config, tmp_path):
    tiny_config["models"]["vae"] = validate_model("vae", {"arch": "segresnetvae", "init_filters": 4, "blocks_down": [1, 1],
                                                          "blocks_up": [1], "vae_nz": 8, "patch": [16, 16, 16]})
    unet = Trainer(tiny_config, request(tiny_data, tmp_path / "unet"))
    assert unet.runtime.channels_last is True  # on the CPU too: measured faster for training
    assert next(unet.model.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    assert Trainer(tiny_config, request(tiny_data, tmp_path / "vae", "vae")).runtime.channels_last is False
    tiny_config["training"]["channels_last"] = False
    assert Trainer(tiny_config, request(tiny_data, tmp_path / "plain")).runtime.channels_last is False


def test_precision_auto_trains_the_same_weights_as_fp32_on_the_cpu_and_bf16_others(tiny_data, tiny_config, tmp_path):
    """``auto`` is plain fp32 on the CPU, as before the setting existed: bitwise the same weights."""
    trained = {}
    for precision in ("auto", "fp32", "bf16"):
        tiny_config["training"].update(device="cpu", precision=precision)
        trainer = Trainer(tiny_config, request(tiny_data, tmp_path / precision))
        for t in range(3):
            trainer.train_step(trainer.sampler.batch(t))
        trained[precision] = trainer.model.state_dict()
        runtime = yaml.safe_load((tmp_path / precision / "config.yaml").read_text())["runtime"]
        assert runtime["precision"] == ("bf16" if precision == "bf16" else "fp32")
    assert_same_weights(trained["auto"], trained["fp32"])
    changed = [k for k in trained["fp32"] if not torch.equal(trained["fp32"][k], trained["bf16"][k])]
    assert changed  # bf16 really ran: its rounding moved the weights


def test_precision_by_model_overrides_the_training_precision_for_that_model_only(tiny_data, tiny_config, tmp_path):
    tiny_config["training"].update(device="cpu", precision="bf16", precision_by_model={"unet": "fp32"})
    unet = Trainer(tiny_config, request(tiny_data, tmp_path / "unet"))
    assert unet.runtime.bf16 is False
    assert yaml.safe_load((tmp_path / "unet" / "config.yaml").read_text())["runtime"]["precision"] == "fp32"
    tiny_config["training"]["precision_by_model"] = {"segmentor": "fp32"}
    assert Trainer(tiny_config, request(tiny_data, tmp_path / "other")).runtime.bf16 is True


def test_pos_fraction_by_model_overrides_the_task_pos_fraction_for_that_model_only(tiny_data, tiny_config, tmp_path):
    tiny_config["training"]["segmentation"]["pos_fraction"] = 0.25
    tiny_config["training"]["pos_fraction_by_model"] = {"unet": 0.75}
    unet = Trainer(tiny_config, request(tiny_data, tmp_path / "unet"))
    assert unet.sampler.pos_fraction == 0.75
    assert yaml.safe_load((tmp_path / "unet" / "config.yaml").read_text())["training"]["segmentation"]["pos_fraction"] == 0.75
    tiny_config["training"]["pos_fraction_by_model"] = {"segmentor": 0.75}
    assert Trainer(tiny_config, request(tiny_data, tmp_path / "other")).sampler.pos_fraction == 0.25


def test_bf16_training_of_the_default_detector_falls_back_to_fp32_where_bf16_gets_its_gradients_wrong(
        tiny_data, tiny_config, tmp_path):
    """config.yaml's detector reaches 2^3 voxels in its second dense block, where torch 2.13's bf16 CPU kernel
    for the weight gradient of a 3x3x3 convolution is broken (a default study lost a run to a NaN loss)."""
    from brainmets.models import build_model
    from brainmets.runtime import Runtime, bf16_gradient_faults

    spec = validate_model("detector", {"arch": "densenet121", "init_features": 8, "growth_rate": 8,
                                       "block_config": [2, 2, 2], "dropout": 0.2, "patch": [16, 16, 16]})
    tiny_config["models"]["detector"] = spec
    tiny_config["training"]["detection"]["iterations"] = 24
    tiny_config["training"].update(val_every=12, checkpoint_every=12)
    trained = {}
    for precision in ("bf16", "fp32"):
        tiny_config["training"]["precision"] = precision
        result = train(tiny_config, request(tiny_data, tmp_path / precision, "detector"), progress=False)
        assert result.status == "trained"
        trained[precision] = (weights(tmp_path / precision / "model.pt"),
                              yaml.safe_load((tmp_path / precision / "config.yaml").read_text())["runtime"]["precision"])
    runtime = Runtime.create("cpu", True, precision="bf16")
    faults = bf16_gradient_faults(runtime.place(build_model("detector", spec, 2, 1)), (4, 2, 16, 16, 16), runtime)
    if faults:  # this machine's bf16: the run trains exactly as in fp32, and says so
        assert trained["bf16"][1] == "fp32"
        assert_same_weights(trained["bf16"][0], trained["fp32"][0])
    else:
        assert trained["bf16"][1] == "bf16"
        assert any(not torch.equal(a, b) for a, b in zip(trained["bf16"][0].values(), trained["fp32"][0].values()))
