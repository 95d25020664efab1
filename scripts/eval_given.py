"""eval_sync rows for a given video or audio and for extended clips (issue 26), on the embedded toy.

  v2a_encoded_<on|off>       rendered clip's frames through the node's path (fit, video VAE encode, held
                             given clean), audio sampled; sync of the rendered video vs the generated audio
  v2a_designed_<on|off>      the same with the clip's designed latent given (what a video encoder that
                             predicts the toy's latent gives; the toy's own encoder does not, see docs);
                             _off is v2a_encoded_off (with the Bridge off the audio never sees the video)
  v2a_designed_noised_on     the designed latent noised per step instead of clean
  a2v_encoded / a2v_designed rendered soundtrack given (through the audio VAE encoder / its designed
                             latent), video sampled; sync of the generated video vs the rendered audio,
                             colour adherence to the prompt
  extend_3                   a text-to-video+audio window extended twice (MOVA Extend's path): sync per
                             window, and the seam: object jump (px) and audio level step (dB) at each
                             window boundary vs the same measures at a cut between unrelated clips
"""
from __future__ import annotations

import functools

import numpy as np
import torch

import eval_sync as E
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.models.sampling import media
from mova_pack.models.sampling.conditioning import audio_latent_length, first_frame_y, latent_shapes
from mova_pack.models.sampling.given import GivenLatents
from mova_pack.models.sampling import tasks
from mova_pack.toy import detectors, scenes

LEVEL_MS = 40.0   # audio level window on each side of a seam


def sampler_fn(toy, gen, prompts, seed_offset: int, settings, bridge_on: bool, cfg: float):
    """tasks' sample callback for a batch of prompts: each clip its own seed's noise (+ seed_offset)."""
    pos = toy.text.encode([p.prompt for p in prompts])
    neg = toy.negative.expand(len(prompts), -1, -1)

    def sample(geo, y, given):
        vshape, ashape = latent_shapes(gen.config, geo.width, geo.height, geo.frames, geo.fps)
        noise = [sampler_mod.make_noise(p.seed + seed_offset, vshape, ashape) for p in prompts]
        guidance = None if bridge_on else E.BridgeOff(cfg, cfg)
        return sampler_mod.sample(gen, torch.cat([n[0] for n in noise]), torch.cat([n[1] for n in noise]), pos, neg,
                                  y.expand(len(prompts), -1, -1, -1, -1), settings, guidance=guidance, given=given)
    return sample


class Inputs:
    """Per eval clip, computed once (when first asked for) and shared by the rows: the rendered clip, its
    frames and soundtrack through the nodes' encode paths (tasks / media: fit, VAE encoders) and its
    designed latents."""

    @torch.no_grad()
    def __init__(self, toy, prompts):
        self.toy, self.clips = toy, E.rendered(prompts)
        self.geo = tasks.Geometry(scenes.WIDTH, scenes.WIDTH, scenes.FRAMES, scenes.FPS)
        self.white = first_frame_y(toy.video_vae, self.geo.width, self.geo.height, self.geo.frames)

    @functools.cached_property
    def video_encoded(self):
        with torch.no_grad():
            fitted = [tasks.fit_frames(torch.from_numpy(c.video), scenes.FPS) for c in self.clips]
            return torch.cat([tasks.encode_video(self.toy.video_vae, f) for f in fitted])

    @functools.cached_property
    def audio_encoded(self):
        vae = self.toy.audio_vae
        alen = audio_latent_length(scenes.FRAMES, scenes.FPS, vae.sample_rate, vae.hop_length)
        with torch.no_grad():
            waves = [media.fit_audio({"waveform": torch.from_numpy(c.audio).float()[None, None],
                                      "sample_rate": c.sample_rate}, vae.sample_rate, scenes.FRAMES, scenes.FPS, [])
                     for c in self.clips]
            return torch.cat([vae.encode(w)[..., :alen].float() for w in waves])

    @functools.cached_property
    def designed(self):
        return [E.designed_latents(self.toy, c) for c in self.clips]

    @property
    def video_designed(self):
        return torch.stack([d[0] for d in self.designed])

    @property
    def audio_designed(self):
        return torch.stack([d[1] for d in self.designed])


@torch.no_grad()
def v2a(toy, gen, prompts, inputs, steps, cfg, audio_shift, bridge_on=True, source="encoded", mode="clean"):
    settings = E.settings_for(steps, cfg, audio_shift)
    sample = sampler_fn(toy, gen, prompts, 0, settings, bridge_on, cfg)
    latent = inputs.video_encoded if source == "encoded" else inputs.video_designed
    _, audio = sample(inputs.geo, inputs.white, GivenLatents(video=latent, mode=mode))
    waves = toy.audio_vae.decode(audio)[:, 0]
    return [(c.video, w[:len(c.audio)].numpy()) for c, w in zip(inputs.clips, waves)]


@torch.no_grad()
def a2v(toy, gen, prompts, inputs, steps, cfg, audio_shift, source="encoded", mode="clean"):
    settings = E.settings_for(steps, cfg, audio_shift)
    sample = sampler_fn(toy, gen, prompts, 0, settings, True, cfg)
    latent = inputs.audio_encoded if source == "encoded" else inputs.audio_designed
    video, _ = sample(inputs.geo, inputs.white, GivenLatents(audio=latent, mode=mode))
    pixels = toy.video_vae.decode(video)
    return [(E.frames_01(px), c.audio) for c, px in zip(inputs.clips, pixels)]


def _level_db(wave: np.ndarray, at: int, n: int) -> tuple:
    rms = [np.sqrt(np.mean(np.square(w)) + 1e-12) for w in (wave[at - n:at], wave[at:at + n])]
    return tuple(20 * np.log10(r) for r in rms)


def _seam(frames: np.ndarray, wave: np.ndarray, frame: int, sample: int) -> dict:
    """Object jump (px) from frame-1 to frame, and |level step| (dB) across the sample."""
    track = detectors.track_object(frames[max(0, frame - 6):frame + 6])
    k = frame - max(0, frame - 6)
    jump = float(np.hypot(track.x[k] - track.x[k - 1], track.y[k] - track.y[k - 1]))
    steps = np.hypot(np.diff(track.x), np.diff(track.y))
    before, after = _level_db(wave, sample, int(scenes.SAMPLE_RATE * LEVEL_MS / 1000))
    return {"jump_px": jump, "typical_step_px": float(np.nanmedian(steps)), "level_step_db": abs(after - before)}


@torch.no_grad()
def extend(toy, gen, prompts, inputs, steps, cfg, audio_shift, windows: int = 3, overlap: int = 3):
    """Per prompt: the joined clip, each window's own (frames, audio), and the seams' figures. Window k is
    sampled with seed + k, the T2VA white frame, and the previous window's tail given (tasks.extend_given)."""
    settings = E.settings_for(steps, cfg, audio_shift)
    frames, fps, sr = scenes.FRAMES, scenes.FPS, scenes.SAMPLE_RATE
    hop = toy.audio_vae.hop_length
    plan = tasks.extend_plan(frames, fps, sr, hop, overlap)
    keep = int(sr * frames / fps)
    per_clip = [{"windows": [], "joined": None} for _ in prompts]
    given = None
    for k in range(windows):
        video, audio = sampler_fn(toy, gen, prompts, k, settings, True, cfg)(inputs.geo, inputs.white, given)
        pixels = toy.video_vae.decode(video)
        waves = toy.audio_vae.decode(audio)[:, 0, :keep]
        for r, px, a in zip(per_clip, pixels, waves):
            f = torch.from_numpy(E.frames_01(px))
            r["windows"].append((f.numpy(), a.numpy()))
            r["joined"] = (f, a[None, None]) if r["joined"] is None else tasks.join(plan, *r["joined"], f, a[None, None])
        given = tasks.extend_given(plan, video, audio, frames, fps, sr, hop)
    for r in per_clip:
        f, a = r["joined"][0].numpy(), r["joined"][1][0, 0].numpy()
        r["joined"] = (f, a)
        r["seams"] = [_seam(f, a, frames + (k - 1) * plan.start, keep + (k - 1) * plan.audio_start_samples)
                      for k in range(1, windows)]
    return per_clip


def cut_seams(clips) -> list:
    """The seam measures at a cut from clip i's end into clip i+1's start (unrelated scenes)."""
    out = []
    for (fa, aa), (fb, ab) in zip(clips, clips[1:] + clips[:1]):
        frames = np.concatenate([fa, fb])
        wave = np.concatenate([aa, ab])
        out.append(_seam(frames, wave, len(fa), len(aa)))
    return out


def seam_summary(seams: list) -> dict:
    def med(key):
        xs = [s[key] for s in seams if np.isfinite(s[key])]
        return E._num(np.median(xs)) if xs else None
    return {"median_jump_px": med("jump_px"), "median_typical_step_px": med("typical_step_px"),
            "median_level_step_db": med("level_step_db"), "seams": len(seams),
            "object_lost": sum(not np.isfinite(s["jump_px"]) for s in seams)}


def rows(toy, prompts, steps: int, cfg: float, audio_shift, windows: int = 3, report=print,
         which=("v2a", "a2v", "extend")) -> dict:
    import time
    out = {}

    def timed(label, fn, **extra):
        t = time.monotonic()
        out[label] = {**extra, **fn()}
        out[label]["seconds"] = round(time.monotonic() - t, 1)
        report(label, out[label])

    gen = toy.generator()
    t = time.monotonic()
    inputs = Inputs(toy, prompts)
    report("inputs", {"seconds": round(time.monotonic() - t, 1)})
    for label, kw in () if "v2a" not in which else (("v2a_encoded_on", {}), ("v2a_encoded_off", {"bridge_on": False}),
                      ("v2a_designed_on", {"source": "designed"}),
                      ("v2a_designed_noised_on", {"source": "designed", "mode": "noised"})):
        timed(label, lambda kw=kw: E.score(v2a(toy, gen, prompts, inputs, steps, cfg, audio_shift, **kw), prompts),
              given="video", **kw)
    if "v2a_encoded_off" in out:   # with the Bridge off the audio tower never sees the video: same clips
        out["v2a_designed_off"] = {**out["v2a_encoded_off"], "source": "designed", "same_as": "v2a_encoded_off"}
    for label, kw in () if "a2v" not in which else (("a2v_encoded", {}), ("a2v_designed", {"source": "designed"}),
                      ("a2v_designed_noised", {"source": "designed", "mode": "noised"})):
        timed(label, lambda kw=kw: E.score(a2v(toy, gen, prompts, inputs, steps, cfg, audio_shift, **kw), prompts),
              given="audio", **kw)

    def extend_row():
        res = extend(toy, gen, prompts, inputs, steps, cfg, audio_shift, windows)
        per_window = [E.score([r["windows"][k] for r in res], prompts) for k in range(windows)]
        seams = [s for r in res for s in r["seams"]]
        cuts = cut_seams([r["windows"][0] for r in res])
        return {"windows": windows, "per_window_sync_ms": [w["sync"]["median_abs_offset_ms"] for w in per_window],
                "per_window": [{k: w[k] for k in ("sync", "adherence", "motion")} for w in per_window],
                "joined": {k: v for k, v in E.score([r["joined"] for r in res], prompts).items() if k != "clips"},
                "seam": seam_summary(seams), "cut_between_unrelated_clips": seam_summary(cuts)}
    if "extend" in which:
        timed(f"extend_{windows}", extend_row)
    return out
