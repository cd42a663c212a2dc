"""The SASRec encoder: causality, padding independence, no NaN on padding rows."""
import pytest
import torch

from llm4cdsr.models.sasrec import EncoderConfig, SASRecEncoder

torch.set_num_threads(1)


def _encoder(causal=True, max_len=12):
    torch.manual_seed(0)
    enc = SASRecEncoder(EncoderConfig(hidden=16, blocks=2, heads=2, dropout=0.3, max_len=max_len, causal=causal))
    return enc.eval()


def _inputs(lengths, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), width, 16, generator=g)
    real = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        real[row, width - n:] = True
    return x * real[..., None], real


def test_changing_a_later_item_never_changes_an_earlier_output():
    enc = _encoder()
    x, real = _inputs([8, 5, 3], 8)
    before = enc(x, real)
    for t in range(5, 8):
        changed = x.clone()
        changed[:, t] += torch.randn(16)  # not a constant shift, which LayerNorm would erase
        after = enc(changed, real)
        torch.testing.assert_close(after[:, :t], before[:, :t])
        assert not torch.allclose(after[:, t], before[:, t])


def test_non_causal_switch_reproduces_the_leak():
    enc = _encoder(causal=False)
    x, real = _inputs([8], 8)
    changed = x.clone()
    changed[:, 7] += torch.randn(16)
    assert not torch.allclose(enc(changed, real)[:, 0], enc(x, real)[:, 0])


def test_output_does_not_depend_on_padding_width():
    enc = _encoder()
    x, real = _inputs([6, 2, 4], 6)
    wide = torch.zeros(3, 11, 16)
    wide[:, 5:] = x
    wide_real = torch.zeros(3, 11, dtype=torch.bool)
    wide_real[:, 5:] = real
    torch.testing.assert_close(enc(wide, wide_real)[:, 5:], enc(x, real), rtol=1e-5, atol=1e-5)


def test_padding_rows_are_zero_and_never_nan():
    enc = _encoder().train()  # dropout on: the training path too
    x, real = _inputs([0, 3], 5)
    out = enc(x, real)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[1, :2] == 0).all()
    out.sum().backward()  # gradients are finite as well
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_too_long_sequences_are_refused():
    enc = _encoder(max_len=4)
    x, real = _inputs([5], 5)
    with pytest.raises(ValueError, match="max_len"):
        enc(x, real)


def test_last_only_equals_the_last_step_of_the_full_pass():
    enc = _encoder()
    x, real = _inputs([6, 2, 0, 4], 6)
    torch.testing.assert_close(enc(x, real, last_only=True), enc(x, real)[:, -1], rtol=1e-5, atol=1e-6)
