"""eval_sync rows for a given video or audio and for extended clips (issue 26), on the embedded toy.

  v2a_encoded_<on|off>       rendered clip's frames through the node's path (fit, video VAE encode, held
                             given clean), audio sampled; sync of the rendered video vs the generated audio
  v2a_designed_<on|off>      the same with the clip's designed latent given (what a video encoder that
                             predicts the toy's latent gives; the toy's own encoder does not, see docs)
  v2a_designed_noised_on     the designed latent noised per step instead of clean
  a2v_encoded / a2v_designed rendered soundtrack given (through the audio VAE encoder / its designed
                             latent), video sampled; sync of the generated video vs the rendered audio,
                             colour adherence to the prompt
  extend_3                   a text-to-video+audio window extended twice (MOVA Extend's path): sync per
                             window, and the seam: object jump (px) and audio level step (dB) at each
                             window boundary vs the same measures at a cut between unrelated clips
"""
from __future__ import annotations

import numpy as np
import torch

import eval_sync as E
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.models.sampling.conditioning import first_frame_y, latent_shapes
from mova_pack.models.sampling.given import GivenLatents
from mova_pack.models.sampling import tasks
from mova_pack.toy import detectors, scenes

LEVEL_MS = 40.0   # audio level window on each side of a seam


def sampler_fn(toy, gen, prompt, seed: int, settings, bridge_on: bool, cfg: float):
    """tasks' sample callback: the plain sampler with the eval's noise, prompt and guidance."""
    pos = toy.text.encode([prompt])

    def sample(geo, y, given):
        vshape, ashape = latent_shapes(gen.config, geo.width, geo.height, geo.frames, geo.fps)
        nv, na = sampler_mod.make_noise(seed, vshape, ashape)
        guidance = None if bridge_on else E.BridgeOff(cfg, cfg)
        return sampler_mod.sample(gen, nv, na, pos, toy.negative, y, settings, guidance=guidance, given=given)
    return sample


def _designed_given(toy, clip, which: str, mode: str):
    zv, za = E.designed_latents(toy, clip)
    return GivenLatents(video=zv[None], mode=mode) if which == "video" else GivenLatents(audio=za[None], mode=mode)


@torch.no_grad()
def v2a(toy, gen, prompts, steps, cfg, audio_shift, bridge_on=True, source="encoded", mode="clean"):
    settings = E.settings_for(steps, cfg, audio_shift)
    out = []
    for p, clip in zip(prompts, E.rendered(prompts)):
        sample = sampler_fn(toy, gen, p.prompt, p.seed, settings, bridge_on, cfg)
        if source == "encoded":
            wave, _ = tasks.video_to_audio(gen.config, toy.video_vae, toy.audio_vae, torch.from_numpy(clip.video),
                                           scenes.FPS, sample, mode=mode)
        else:
            geo = tasks.Geometry(scenes.WIDTH, scenes.WIDTH, scenes.FRAMES, scenes.FPS)
            y = first_frame_y(toy.video_vae, geo.width, geo.height, geo.frames)
            _, audio = sample(geo, y, _designed_given(toy, clip, "video", mode))
            wave = toy.audio_vae.decode(audio)[..., :len(clip.audio)]
        out.append((clip.video, wave[0, 0].numpy()))
    return out


@torch.no_grad()
def a2v(toy, gen, prompts, steps, cfg, audio_shift, source="encoded", mode="clean"):
    settings = E.settings_for(steps, cfg, audio_shift)
    out = []
    for p, clip in zip(prompts, E.rendered(prompts)):
        sample = sampler_fn(toy, gen, p.prompt, p.seed, settings, True, cfg)
        if source == "encoded":
            audio = {"waveform": torch.from_numpy(clip.audio).float()[None, None], "sample_rate": clip.sample_rate}
            pixels, _ = tasks.audio_to_video(gen.config, toy.video_vae, toy.audio_vae, audio, scenes.WIDTH,
                                             scenes.WIDTH, scenes.FPS, sample, mode=mode)
        else:
            geo = tasks.Geometry(scenes.WIDTH, scenes.WIDTH, scenes.FRAMES, scenes.FPS)
            y = first_frame_y(toy.video_vae, geo.width, geo.height, geo.frames)
            video, _ = sample(geo, y, _designed_given(toy, clip, "audio", mode))
            pixels = toy.video_vae.decode(video)[0]
        out.append((E.frames_01(pixels), clip.audio))
    return out


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
def extend(toy, gen, prompts, steps, cfg, audio_shift, windows: int = 3, overlap: int = 3, first_frame=False):
    """Per prompt: the joined clip, each window's own (frames, audio), and the seams' figures."""
    settings = E.settings_for(steps, cfg, audio_shift)
    w, frames, fps, sr = scenes.WIDTH, scenes.FRAMES, scenes.FPS, scenes.SAMPLE_RATE
    hop = toy.audio_vae.hop_length
    plan = tasks.extend_plan(frames, fps, sr, hop, overlap)
    white = first_frame_y(toy.video_vae, w, w, frames)
    geo = tasks.Geometry(w, w, frames, fps)
    keep = int(sr * frames / fps)
    results = []
    for p in prompts:
        wins, video, audio, given = [], None, None, None
        joined_f = joined_a = None
        for k in range(windows):
            y = white
            if given is not None and first_frame:
                y = first_frame_y(toy.video_vae, w, w, frames, torch.from_numpy(wins[-1][0][plan.start]).movedim(-1, 0)[None])
            sample = sampler_fn(toy, gen, p.prompt, p.seed + k, settings, True, cfg)
            video, audio = sample(geo, y, given)
            f = E.frames_01(toy.video_vae.decode(video)[0])
            a = toy.audio_vae.decode(audio)[0, 0, :keep]
            wins.append((f, a.numpy()))
            if joined_f is None:
                joined_f, joined_a = torch.from_numpy(f), a
            else:
                joined_f, joined_a = tasks.join(plan, joined_f, joined_a, torch.from_numpy(f), a)
            given = tasks.extend_given(plan, video, audio, frames, fps, sr, hop)
        seams = [_seam(joined_f.numpy(), joined_a.numpy(), frames + (k - 1) * plan.start,
                       keep + (k - 1) * plan.audio_start_samples) for k in range(1, windows)]
        results.append({"windows": wins, "joined": (joined_f.numpy(), joined_a.numpy()), "seams": seams})
    return results


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


def rows(toy, prompts, steps: int, cfg: float, audio_shift, windows: int = 3, report=print) -> dict:
    import time
    out = {}

    def timed(label, fn, **extra):
        t = time.monotonic()
        out[label] = {**extra, **fn()}
        out[label]["seconds"] = round(time.monotonic() - t, 1)
        report(label, out[label])

    gen = toy.generator()
    for label, kw in (("v2a_encoded_on", {}), ("v2a_encoded_off", {"bridge_on": False}),
                      ("v2a_designed_on", {"source": "designed"}),
                      ("v2a_designed_off", {"source": "designed", "bridge_on": False}),
                      ("v2a_designed_noised_on", {"source": "designed", "mode": "noised"})):
        timed(label, lambda kw=kw: E.score(v2a(toy, gen, prompts, steps, cfg, audio_shift, **kw), prompts),
              given="video", **kw)
    for label, kw in (("a2v_encoded", {}), ("a2v_designed", {"source": "designed"}),
                      ("a2v_designed_noised", {"source": "designed", "mode": "noised"})):
        timed(label, lambda kw=kw: E.score(a2v(toy, gen, prompts, steps, cfg, audio_shift, **kw), prompts),
              given="audio", **kw)

    def extend_row():
        res = extend(toy, gen, prompts, steps, cfg, audio_shift, windows)
        per_window = [E.score([r["windows"][k] for r in res], prompts) for k in range(windows)]
        seams = [s for r in res for s in r["seams"]]
        cuts = cut_seams([r["windows"][0] for r in res])
        return {"windows": windows, "per_window_sync_ms": [w["sync"]["median_abs_offset_ms"] for w in per_window],
                "per_window": [{k: w[k] for k in ("sync", "adherence", "motion")} for w in per_window],
                "joined": {k: v for k, v in E.score([r["joined"] for r in res], prompts).items() if k != "clips"},
                "seam": seam_summary(seams), "cut_between_unrelated_clips": seam_summary(cuts)}
    timed(f"extend_{windows}", extend_row)
    return out
