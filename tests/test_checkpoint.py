import pickle
import random
from pathlib import Path

import pytest
import torch

from minimodels.checkpoint import (
    CheckpointError,
    content_sha256,
    ensure_writable,
    load_checkpoint,
    load_model,
    save_atomic,
)
from minimodels.config import ModelConfig
from minimodels.model import MiniModel
from minimodels.train import TrainConfig, make_optimizer

CFG = ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, inter_dim=32, max_seq_len=8)


def make_checkpoint(path: Path) -> dict:
    """A small checkpoint shaped like train()'s: weights, AdamW state, history, sampler state."""
    torch.manual_seed(0)
    model = MiniModel(CFG)
    opt = make_optimizer(model, TrainConfig())
    model(torch.randint(0, 20, (2, 8))).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": CFG.to_dict(), "step": 1,
            "history": {"loss": [3.25, 2.5], "val_loss": [], "tokens": 16},
            "sampler_state": torch.Generator().manual_seed(0).get_state()}
    save_atomic(ckpt, path)
    return ckpt


def same(a, b) -> bool:
    return content_sha256(a) == content_sha256(b)


def test_save_and_load_model_round_trip(tmp_path):
    model = MiniModel(CFG)
    save_atomic({"model": model.state_dict(), "config": CFG.to_dict()}, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randint(0, 20, (1, 8))
    torch.testing.assert_close(loaded(x), model(x))
    assert "sha256" not in load_checkpoint(tmp_path / "m.pt")  # the checksum is checked, not returned


def test_content_sha256_sees_every_value_and_type():
    base = {"w": torch.zeros(2, 3), "loss": [1.5, 2.0], "step": 3, "name": "a", "none": None}
    variants = [{**base, "w": torch.zeros(3, 2)}, {**base, "w": torch.zeros(2, 3, dtype=torch.float64)},
                {**base, "loss": [1.5, 2.0000000000000004]}, {**base, "loss": (1.5, 2.0)}, {**base, "step": 3.0},
                {**base, "step": True}, {**base, "name": "b"}, {**base, "extra": 0}]
    digests = {content_sha256(v) for v in variants} | {content_sha256(base)}
    assert len(digests) == len(variants) + 1
    assert content_sha256(base) == content_sha256({**base, "w": torch.zeros(2, 3)})
    bf16 = torch.randn(4).to(torch.bfloat16)
    assert content_sha256({"t": bf16}) != content_sha256({"t": bf16 + 1})


def test_saving_a_value_torch_cannot_load_safely_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['train_config'\]\['path'\] is a PosixPath"):
        save_atomic({"model": {}, "config": {}, "train_config": {"path": Path("x")}}, tmp_path / "p.pt")
    assert not list(tmp_path.iterdir())


def test_flipped_bits_never_load_silently(tmp_path):
    """Every flipped bit either raises CheckpointError naming the file, or leaves the loaded values exactly as saved
    (a flip in zip padding or a timestamp, which torch never reads)."""
    path = tmp_path / "run.pt"
    saved = make_checkpoint(path)
    raw = path.read_bytes()
    caught = {"corrupt": 0, "damaged": 0, "unchanged": 0}
    rng = random.Random(0)
    chunk = len(raw) // 200
    for offset in [i * chunk + rng.randrange(chunk) for i in range(200)]:  # one byte in each 200th of the file
        bad = bytearray(raw)
        bad[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(bad))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err) and ("delete it" in str(err) or "not a" in str(err)), str(err)
            caught["corrupt" if "is corrupt" in str(err) else "damaged"] += 1
            continue
        assert same(loaded, saved), f"a flip at byte {offset} loaded different values silently"
        caught["unchanged"] += 1
    assert caught["corrupt"] >= 20 and caught["damaged"] >= 5, caught  # the checksum did real work


@pytest.mark.parametrize("name", ["head.weight", "layers.0.attn.wq.weight", "norm.weight"])
def test_a_flip_inside_the_weights_is_reported_as_corrupt(tmp_path, name):
    path = tmp_path / "run.pt"
    saved = make_checkpoint(path)
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(saved["model"][name].numpy().tobytes())
    assert at > 0
    for offset in (at, at + 7, at + saved["model"][name].numel() * 4 - 1):  # first, middle, last byte
        bad = bytearray(raw)
        bad[offset] ^= 0x01
        path.write_bytes(bytes(bad))
        assert torch.load(path, weights_only=True)["model"][name].ne(saved["model"][name]).sum() == 1  # torch: fine
        with pytest.raises(CheckpointError, match=r"is corrupt: .* flipped bit .* delete it and train again"):
            load_checkpoint(path)


def test_truncated_files_get_a_clear_error(tmp_path):
    path = tmp_path / "run.pt"
    make_checkpoint(path)
    raw = path.read_bytes()
    for keep in (1, 4, 100, len(raw) // 2, len(raw) - 22, len(raw) - 1):
        path.write_bytes(raw[:keep])
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)


FOREIGN = {
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "text": (lambda p: p.write_text("step,loss\n1,2.5\n"), "not a checkpoint"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"model": {}, "config": {}})), "not a checkpoint"),
    "tensor": (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor"),
    "list": (lambda p: torch.save([1, 2], p), "holds a list"),
    "other_keys": (lambda p: torch.save({"weights": torch.zeros(1)}, p), "not a minimodels checkpoint"),
    "no_checksum": (lambda p: torch.save({"model": {}, "config": {}}, p), "has no checksum"),
    "pickled_code": (lambda p: torch.save({"model": {}, "config": {}, "evil": object()}, p), "weights_only"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_files_that_are_not_checkpoints_get_clear_errors(tmp_path, kind):
    write, message = FOREIGN[kind]
    path = tmp_path / f"{kind}.pt"
    write(path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one first"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_ensure_writable(tmp_path):
    target = tmp_path / "new" / "deeper" / "run.pt"
    assert ensure_writable(target) == target and target.parent.is_dir()
    assert list(target.parent.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match=r"cannot write a checkpoint to .*file/run.pt.*Choose a writable"):
        ensure_writable(tmp_path / "file" / "run.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        ensure_writable(tmp_path)
