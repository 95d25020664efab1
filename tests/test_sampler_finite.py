"""The sampler never hands on NaN/inf latents (models/sampling/finite.py): NaN settings are refused before
the first forward, and a step whose latents are not finite stops the run, naming the step and the fix."""
import math

import pytest
import torch

from parity_utils import seed_params, tiny_inputs, uncompiled_reference_rope
from mova_pack.common.errors import InputError
from mova_pack.models.net.generator import build_generator
from mova_pack.models.sampling.finite import check_settings, check_step
from mova_pack.models.sampling.sampler import SamplerSettings, make_noise, sample


@pytest.fixture()
def gen(monkeypatch):
    uncompiled_reference_rope(monkeypatch)
    g = build_generator("tiny")
    for i, m in enumerate((g.video_high, g.video_low, g.audio, g.bridge)):
        seed_params(m, 200 + i)
    return g


@pytest.mark.parametrize("field", ["shift", "video_cfg", "audio_cfg", "boundary_ratio", "audio_shift"])
def test_nan_settings_are_refused_naming_the_setting(field):
    with pytest.raises(InputError, match=f"{field}.*nan"):   # SamplerSettings or check_settings
        check_settings(SamplerSettings(steps=2, **{field: math.nan}))
    check_settings(SamplerSettings(steps=2))


def test_check_step_names_step_latent_and_expert():
    ok = torch.zeros(1, 4)
    check_step(0, 4, ok, ok)
    with pytest.raises(InputError, match=r"the audio latent became NaN/infinite at step 3 of 4 \(low-noise expert\)"):
        check_step(2, 4, ok, torch.tensor([[0.0, math.inf]]), "low-noise")


def test_a_weight_that_gives_nan_stops_the_run_at_its_first_step(gen):
    _, y, _, pos = tiny_inputs(seed=36, frames=2, h=4, w=4)
    video, audio = make_noise(3, (1, 16, 2, 4, 4), (1, 128, 11))
    seen = []
    settings = SamplerSettings(steps=4, boundary_ratio=1.0)        # low-noise expert from step 2 (t < 1000)
    clean = sample(gen, video, audio, pos, pos, y, settings)
    assert all(bool(torch.isfinite(t).all()) for t in clean)
    with torch.no_grad():
        gen.video_low.head.head.weight.fill_(math.nan)    # the low-noise expert is corrupt
    with pytest.raises(InputError, match=r"video latent became NaN/infinite at step 2 of 4 \(low-noise") as err:
        sample(gen, video, audio, pos, pos, y, settings, on_step=seen.append)
    assert "nothing was passed on to decoding" in str(err.value)
    assert [i.index for i in seen] == [0] and bool(torch.isfinite(seen[0].video_latent).all())
