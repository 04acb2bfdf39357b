import pytest
import torch

from minimodels.checkpoint import load_checkpoint, load_model, save_atomic
from minimodels.config import ModelConfig
from minimodels.model import MiniModel


def test_save_and_load_model_round_trip(tmp_path):
    cfg = ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, inter_dim=32, max_seq_len=8)
    model = MiniModel(cfg)
    save_atomic({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randint(0, 20, (1, 8))
    torch.testing.assert_close(loaded(x), model(x))


def test_missing_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one first"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a minimodels checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": {}, "config": {}, "evil": object()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_checkpoint(tmp_path / "evil.pt")
