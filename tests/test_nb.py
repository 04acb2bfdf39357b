import pytest
import torch

from minimodels.nb import check_shape, compare, setup, show_source
from minimodels.norms import RMSNorm


def test_check_shape_names_the_tensor():
    check_shape(torch.zeros(2, 3), (2, 3))
    with pytest.raises(AssertionError, match=r"q has shape \(2, 3\), expected \(3, 2\)"):
        check_shape(torch.zeros(2, 3), (3, 2), "q")


def test_setup_seeds_and_reports(monkeypatch, capsys):
    monkeypatch.setenv("MINIMODELS_PROFILE", "smoke")
    env = setup(seed=3)
    a = torch.rand(3)
    setup(seed=3, quiet=True)
    assert torch.equal(a, torch.rand(3))
    assert env.profile.name == "smoke" and "profile: smoke" in capsys.readouterr().out


def test_show_source_and_compare(capsys):
    code = show_source(RMSNorm)
    assert "class RMSNorm" in code.data
    assert show_source(RMSNorm, lines=(1, 1)).data.startswith("class RMSNorm")
    assert compare("same", torch.ones(2), torch.ones(2))
    assert not compare("off", torch.ones(2), torch.zeros(2))
    assert "max diff: 1.00e+00" in capsys.readouterr().out
