"""Wav2Lip network: the parameter names and shapes of the published checkpoints, strict loading, forward shapes."""

from __future__ import annotations

import pytest
import torch

from Wav2Lip.model import Wav2Lip, load_checkpoint

# The reference generator (Rudrabha/Wav2Lip models/wav2lip.py + models/conv.py), transcribed as data:
# (cin, cout, kernel, stride, padding, residual) per Conv2d block; "T" rows are Conv2dTranspose blocks
# (cin, cout, kernel, stride, padding, output_padding).
FACE_ENCODER = [
    [(6, 16, 7, 1, 3, False)],
    [(16, 32, 3, 2, 1, False)] + [(32, 32, 3, 1, 1, True)] * 2,
    [(32, 64, 3, 2, 1, False)] + [(64, 64, 3, 1, 1, True)] * 3,
    [(64, 128, 3, 2, 1, False)] + [(128, 128, 3, 1, 1, True)] * 2,
    [(128, 256, 3, 2, 1, False)] + [(256, 256, 3, 1, 1, True)] * 2,
    [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)],
    [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],
]
AUDIO_ENCODER = (
    [(1, 32, 3, 1, 1, False)] + [(32, 32, 3, 1, 1, True)] * 2
    + [(32, 64, 3, (3, 1), 1, False)] + [(64, 64, 3, 1, 1, True)] * 2
    + [(64, 128, 3, 3, 1, False)] + [(128, 128, 3, 1, 1, True)] * 2
    + [(128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True)]
    + [(256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]
)
FACE_DECODER = [
    [(512, 512, 1, 1, 0, False)],
    [("T", 1024, 512, 3, 1, 0, 0), (512, 512, 3, 1, 1, True)],
    [("T", 1024, 512, 3, 2, 1, 1)] + [(512, 512, 3, 1, 1, True)] * 2,
    [("T", 768, 384, 3, 2, 1, 1)] + [(384, 384, 3, 1, 1, True)] * 2,
    [("T", 512, 256, 3, 2, 1, 1)] + [(256, 256, 3, 1, 1, True)] * 2,
    [("T", 320, 128, 3, 2, 1, 1)] + [(128, 128, 3, 1, 1, True)] * 2,
    [("T", 160, 64, 3, 2, 1, 1)] + [(64, 64, 3, 1, 1, True)] * 2,
]
OUTPUT_BLOCK_CONV = (80, 32, 3, 1, 1, False)  # output_block.0; output_block.1 = nn.Conv2d(32, 3, 1); .2 = Sigmoid


def _block_keys(prefix: str, row: tuple) -> list[tuple[str, tuple[int, ...]]]:
    if row[0] == "T":
        _, cin, cout, k, *_ = row
        wshape = (cin, cout, k, k)  # ConvTranspose2d stores [in, out, kh, kw]
    else:
        cin, cout, k, *_ = row
        wshape = (cout, cin, k, k)
    return [
        (f"{prefix}.conv_block.0.weight", wshape),
        (f"{prefix}.conv_block.0.bias", (cout,)),
        (f"{prefix}.conv_block.1.weight", (cout,)),
        (f"{prefix}.conv_block.1.bias", (cout,)),
        (f"{prefix}.conv_block.1.running_mean", (cout,)),
        (f"{prefix}.conv_block.1.running_var", (cout,)),
        (f"{prefix}.conv_block.1.num_batches_tracked", ()),
    ]


def _expected_blocks() -> list[tuple[str, tuple]]:
    blocks = []
    for s, stage in enumerate(FACE_ENCODER):
        blocks += [(f"face_encoder_blocks.{s}.{j}", row) for j, row in enumerate(stage)]
    blocks += [(f"audio_encoder.{j}", row) for j, row in enumerate(AUDIO_ENCODER)]
    for s, stage in enumerate(FACE_DECODER):
        blocks += [(f"face_decoder_blocks.{s}.{j}", row) for j, row in enumerate(stage)]
    blocks.append(("output_block.0", OUTPUT_BLOCK_CONV))
    return blocks


def expected_state() -> list[tuple[str, tuple[int, ...]]]:
    keys = [kv for prefix, row in _expected_blocks() for kv in _block_keys(prefix, row)]
    return keys + [("output_block.1.weight", (3, 32, 1, 1)), ("output_block.1.bias", (3,))]


@pytest.fixture(scope="module")
def net() -> Wav2Lip:
    torch.manual_seed(0)
    return Wav2Lip().eval()


def test_state_dict_matches_reference_names_and_shapes(net: Wav2Lip) -> None:
    ours = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert ours == expected_state()  # same names, same shapes, same order
    assert sum(p.numel() for p in net.parameters()) == 36_298_035


def test_layer_hyperparameters_match_reference(net: Wav2Lip) -> None:
    modules = dict(net.named_modules())

    def pair(v: int | tuple[int, int]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else tuple(v)

    for prefix, row in _expected_blocks():
        block = modules[prefix]
        conv = block.conv_block[0]
        if row[0] == "T":
            _, cin, cout, k, stride, pad, out_pad = row
            assert isinstance(conv, torch.nn.ConvTranspose2d)
            assert conv.output_padding == pair(out_pad), prefix
        else:
            cin, cout, k, stride, pad, residual = row
            assert type(conv) is torch.nn.Conv2d
            assert block.residual is residual, prefix
        assert (conv.in_channels, conv.out_channels) == (cin, cout), prefix
        assert conv.kernel_size == pair(k) and conv.stride == pair(stride) and conv.padding == pair(pad), prefix
    assert isinstance(net.output_block[2], torch.nn.Sigmoid)


def test_forward_shapes_and_range(net: Wav2Lip) -> None:
    mel = torch.randn(3, 1, 80, 16)
    face = torch.rand(3, 6, 96, 96)
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for b in net.face_encoder_blocks]
    audio_out = []
    hooks.append(net.audio_encoder.register_forward_hook(lambda m, i, o: audio_out.append(tuple(o.shape))))
    with torch.no_grad():
        out = net(mel, face)
    for h in hooks:
        h.remove()
    assert sizes == [(16, 96, 96), (32, 48, 48), (64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3), (512, 1, 1)]
    assert audio_out == [(3, 512, 1, 1)]
    assert out.shape == (3, 3, 96, 96) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def _randomize_buffers(model: Wav2Lip) -> None:
    """Random batch-norm statistics: with the (random, seed-dependent) default init of every weight, a fresh model
    then differs from this one in every tensor, so a load that silently dropped one would show."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1234)


def test_published_format_round_trip_strict(tmp_path) -> None:
    torch.manual_seed(3)
    src = Wav2Lip()
    _randomize_buffers(src)
    path = tmp_path / "wav2lip_random.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()},
                "global_step": 1, "global_epoch": 1}, path)
    torch.manual_seed(4)
    fresh = Wav2Lip().state_dict()
    loaded = load_checkpoint(path, "cpu")
    assert not loaded.training
    a, b = src.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], fresh[k]) for k in a if k.endswith(("0.weight", "running_mean")))
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    with torch.no_grad():
        assert torch.equal(src.eval()(mel, face), loaded(mel, face))


def test_strict_load_rejects_incomplete_checkpoint(tmp_path) -> None:
    state = {"module." + k: v for k, v in Wav2Lip().state_dict().items()}
    del state["module.output_block.1.bias"]
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match="output_block.1.bias"):
        load_checkpoint(path)
