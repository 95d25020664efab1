"""Measure audio-video sync and prompt adherence of a MOVA folder (default: the embedded toy model).

    python scripts/eval_sync.py --json artifacts/eval_sync.json            # the full table
    python scripts/eval_sync.py --json out.json --clips 2 --steps 2 --fast  # smoke run

Generates the fixed prompts/seeds of toy/captions.py EVAL_PROMPTS (text -> video + audio through the
same loaders, sampler and decoders as the nodes, T2VA white first frame) and reads each clip back with
toy/detectors.py: impacts seen in the video vs onsets heard in the audio (sync), the object's colour and
the impact sound class (adherence). Rows, each labelled:
  bridge_on / bridge_off      released text CFG, Bridge on vs both condition scales 0, the audio on its own
                              shift (--audio-shift, the toy's recommended value; the shipped workflows use it)
  same_shift_on / _off        the same with the audio on the video's shift (MOVA's released schedule)
  guidance_bridge_<s>         dual CFG (models/sampling/guidance.py, nested) with bridge scale s for both modalities
  quant_<mode>                bridge_on with the towers and Bridge in bf16 or quantized (kernels/quant.py)
  audio_given_video_<on|off>  the Bridge alone: the video tower's input replaced at every step by the true
                              clip's designed latent noised to that step's (video) sigma, the audio sampled as
                              usual; sync of the rendered video against the generated audio
  audio_given_video_same_shift_<on|off>  the same with the audio on the video's shift
  audio_given_clean_video_<on|off>  the same with the true video clean (t = 0) at every step
  reference_ground_truth      the rendered clips themselves (detector error floor)
  reference_decoders          the clips' designed latents through the toy decoders (the floor for generated clips)
  reference_vae_roundtrip     rendered clips through the toy encoders and decoders (the encoders only serve
                              first-frame conditioning; the audio encoder is not used to generate)
  v2a_* / a2v_* / extend_<n> with --given (or alone: --given-only): a given video or audio through the
                              nodes' paths and designed latents, and clips extended window by window
                              (scripts/eval_given.py)
The summary gives bridge_on / bridge_off and their ratio with a bootstrap interval over the clips.
--detail-clips K runs every row but bridge_on / bridge_off on the first K clips only (they cost 2-20x
more per clip), so the headline can use many clips; detail_bridge_on / _off then score the headline's
own first K clips, the rows the others compare with.
Every row also reports `motion`: the fraction of frames where the object is found and the track jumps
(centroid moves of more than 12 px between frames; a bouncing ball never moves that fast), which tell
whether the video tower drew one coherent moving object.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import _pack  # noqa: F401  (registers the repo as the package `mova_pack`)
import numpy as np
import torch

from mova_pack.kernels import quant
from mova_pack.models.sampling import sampler as sampler_mod
from mova_pack.models.codecs.audio_vae import load_audio_vae
from mova_pack.models.sampling.conditioning import first_frame_y, latent_shapes
from mova_pack.runtime.loading import load_generator
from mova_pack.models.sampling.guidance import DualGuidance, GuidanceSettings
from mova_pack.models.sampling.step_cache import StepCache, StepCacheSettings
from mova_pack.models.net.joint import joint_forward
from mova_pack.models.codecs.text_encoder import load_text_encoder
from mova_pack.models.codecs.video_vae import load_video_vae
from mova_pack.toy import detectors, scenes
from mova_pack.toy.captions import EVAL_PROMPTS, EvalPrompt
from mova_pack.toy.train import latents as designed
from mova_pack.toy.train.common import channels_last, video_tensor
from mova_pack.toy.train.configs import AUDIO_SHIFT, MODEL_DIR, NEGATIVE_PROMPT
from mova_pack.toy.train.pipeline import designed_audio_stats

import eval_given  # noqa: E402  (its rows use this module's helpers)

SYNC_GOAL_MS = 40.0
JUMP_PX = 12.0


class VideoGiven:
    """Wraps a guidance: every joint forward sees the true video latent noised to the step's sigma instead
    of the sampler's own video, so the audio is generated against the right picture (the sampler's video
    output is discarded). clean=True: the video stays clean (t = 0, low-noise expert) while the audio is
    denoised at its own t (joint_forward's audio_timestep)."""

    def __init__(self, guidance, video_latent: torch.Tensor, noise: torch.Tensor, schedule, clean: bool = False):
        self.guidance, self.video, self.noise, self.schedule = guidance, video_latent, noise, schedule
        self.clean, self.step = clean, 0

    def plan(self, step, timestep):
        self.step = step
        return self.guidance.plan(step, timestep)

    def combine(self, step, outputs):
        return self.guidance.combine(step, outputs)

    def run_forwards(self, generator, expert, passes, video, audio, timestep, contexts, y, video_fps,
                     audio_timestep=None):
        if self.clean:
            audio_t = timestep if audio_timestep is None else audio_timestep
            return [joint_forward(generator.expert(True), generator.audio, generator.bridge, self.video, audio,
                                  torch.zeros_like(timestep), contexts[p.text], y=y, video_fps=video_fps,
                                  a2v_scale=p.a2v_scale, v2a_scale=p.v2a_scale, audio_timestep=audio_t)
                    for p in passes]
        s = self.schedule.sigma_from[self.step]
        given = (1 - s) * self.video + s * self.noise
        return sampler_mod.run_forwards(generator, expert, passes, given, audio, timestep, contexts, y, video_fps,
                                        audio_timestep=audio_timestep)


class BridgeOff:
    """Released text CFG with both Bridge directions at condition scale 0 (the towers run unbridged)."""

    def __init__(self, video_scale: float, audio_scale: float):
        self.cfg = sampler_mod.TextCFG(video_scale, audio_scale)

    def plan(self, step, timestep):
        return [sampler_mod.ForwardPass(p.text, 0.0, 0.0) for p in self.cfg.plan(step, timestep)]

    def combine(self, step, outputs):
        return self.cfg.combine(step, outputs)


class Toy:
    """Everything loaded once from a MOVA folder; the generator is reloaded per dtype/quantization."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.text = load_text_encoder(folder, dtype=torch.float32)
        self.video_vae = channels_last(load_video_vae(folder / "video_vae"))
        self.audio_vae = load_audio_vae(folder / "audio_vae")
        self.negative = self.text.encode([NEGATIVE_PROMPT])

    def generator(self, mode: str = "fp32"):
        dtype = torch.bfloat16 if mode != "fp32" else torch.float32
        gen = load_generator(self.folder, dtype=dtype)
        if mode in quant.QUANTIZED_MODES:
            for name in ("video_high", "video_low", "audio", "bridge"):
                if getattr(gen, name) is not None:
                    quant.quantize_module(getattr(gen, name), mode)
        return gen

    @functools.cached_property
    def audio_stats(self):
        """Mean/std that standardise the designed audio latent (as the toy's audio VAE was trained)."""
        return designed_audio_stats()


def frames_01(pixels: torch.Tensor) -> np.ndarray:
    """Decoder output [3, F, H, W] in [-1, 1] -> frames [F, H, W, 3] in [0, 1] for the detectors."""
    return ((pixels.movedim(0, -1) + 1) / 2).clamp(0, 1).numpy()


def eval_prompts(n: int) -> list[EvalPrompt]:
    """The first n fixed prompts (cycled with shifted seeds beyond the 16 of EVAL_PROMPTS)."""
    base = list(EVAL_PROMPTS)
    return [base[i % len(base)] if i < len(base) else
            EvalPrompt(base[i % len(base)].prompt, base[i % len(base)].seed + 7919 * (i // len(base)),
                       base[i % len(base)].colour, base[i % len(base)].shape, base[i % len(base)].sound)
            for i in range(n)]


def settings_for(steps: int, cfg: float, audio_shift) -> sampler_mod.SamplerSettings:
    """The eval's sampler settings; audio_shift None = the audio on the video's shift (released)."""
    return sampler_mod.SamplerSettings(steps=steps, video_cfg=cfg, audio_cfg=cfg, video_fps=scenes.FPS,
                                       audio_shift=audio_shift)


@torch.no_grad()
def generate(toy: Toy, gen, prompts, steps: int, cfg: float, guidance_fn, audio_shift=None, batch: int = 8):
    """[(video [F,H,W,3] in 0..1, audio [N])] for each prompt, its seed's noise, white first frame."""
    w = h = scenes.WIDTH
    frames, fps = scenes.FRAMES, scenes.FPS
    y = first_frame_y(toy.video_vae, w, h, frames)
    vshape, ashape = latent_shapes(gen.config, w, h, frames, fps)
    settings = settings_for(steps, cfg, audio_shift)
    keep = int(toy.audio_vae.sample_rate * frames / fps)
    out = []
    for k in range(0, len(prompts), batch):
        chunk = prompts[k:k + batch]
        noise = [sampler_mod.make_noise(p.seed, vshape, ashape) for p in chunk]
        pos = toy.text.encode([p.prompt for p in chunk])
        neg = toy.negative.expand(len(chunk), -1, -1)
        video, audio = sampler_mod.sample(gen, torch.cat([n[0] for n in noise]), torch.cat([n[1] for n in noise]),
                                          pos, neg, y.expand(len(chunk), -1, -1, -1, -1), settings,
                                          guidance=guidance_fn())
        pixels = toy.video_vae.decode(video)                       # [B, 3, F, H, W] in [-1, 1]
        wave = toy.audio_vae.decode(audio)[:, 0, :keep]
        for i in range(len(chunk)):
            out.append((frames_01(pixels[i]), wave[i].numpy()))
    return out


def step_cache_row(toy: Toy, prompts, steps: int, cfg: float, audio_shift, threshold: float,
                   forecast: bool = True) -> dict:
    """bridge_on with the step cache (models/sampling/step_cache.py) at `threshold`, one clip per batch
    (the skip decision is per batch; in use a batch is one clip): forwards run vs without the cache."""
    t, caches = time.monotonic(), []

    def cached():
        caches.append(StepCache(StepCacheSettings(threshold=threshold, forecast=forecast), None, cfg, cfg))
        return caches[-1]
    clips = generate(toy, toy.generator(), prompts, steps, cfg, cached, audio_shift, batch=1)
    ran, saved = sum(c.forwards_run for c in caches), sum(c.forwards_skipped for c in caches)
    skipped = [len(c.skipped) for c in caches]
    # rows without "forecast" in the name reuse the last velocity (how the first step-cache rows were made)
    return {f"step_cache_{'forecast_' if forecast else ''}{threshold:g}": {
        "bridge": "on", "audio_shift": audio_shift, "step_cache_threshold": threshold,
        "step_cache_forecast": forecast, "forwards": ran,
        "forwards_without_cache": ran + saved, "forward_ratio": round((ran + saved) / ran, 3),
        "skipped_steps_per_clip": {"mean": round(sum(skipped) / len(skipped), 2), "min": min(skipped),
                                   "max": max(skipped)},
        **score(clips, prompts), "seconds": round(time.monotonic() - t, 1)}}


def motion(video) -> tuple[float, int]:
    """(fraction of frames with the object found, centroid jumps of more than JUMP_PX between frames)."""
    track = detectors.track_object(video)
    found = np.isfinite(track.x)
    step = np.hypot(np.diff(track.x), np.diff(track.y))
    return float(found.mean()), int((step[found[1:] & found[:-1]] > JUMP_PX).sum())


def score(clips, prompts) -> dict:
    """Pooled sync figures and adherence over clips; per-clip details under `clips`."""
    offsets, per_clip, matched, impacts = [], [], 0, 0
    colour_ok = sound_ok = jumps = 0
    visible = []
    for (video, audio), p in zip(clips, prompts):
        r = detectors.evaluate_clip(video, audio, scenes.FPS, scenes.SAMPLE_RATE)
        seen, jumped = motion(video)
        visible.append(seen)
        jumps += jumped
        offsets += r.sync.offsets_ms
        matched += len(r.sync.pairs)
        impacts += len(r.video_impacts_s)
        colour_ok += r.colour == p.colour
        sound_ok += r.sound == p.sound
        per_clip.append({"prompt": p.prompt, "seed": p.seed, "video_impacts_s": _r(r.video_impacts_s),
                         "audio_onsets_s": _r(r.audio_onsets_s), "offsets_ms": _r(r.sync.offsets_ms, 1),
                         "colour": r.colour, "sound": r.sound})
    abs_off = np.abs(offsets)
    n = len(prompts)
    return {
        "sync": {"median_abs_offset_ms": _num(np.median(abs_off)) if offsets else None,
                 "mean_abs_offset_ms": _num(abs_off.mean()) if offsets else None,
                 "within_40ms": _num((abs_off <= SYNC_GOAL_MS).sum() / impacts) if impacts else None,
                 "matched_pairs": matched, "video_impacts": impacts,
                 "audio_onsets": sum(len(c["audio_onsets_s"]) for c in per_clip)},
        "adherence": {"colour": colour_ok / n, "sound": sound_ok / n},
        "motion": {"object_visible": _num(np.mean(visible)), "track_jumps_per_clip": _num(jumps / n)},
        "clips": per_clip,
    }


def bootstrap_interval(on_clips, off_clips, resamples: int = 2000, seed: int = 0) -> dict:
    """5-95 % bootstrap interval of the pooled median |offset| with and without the Bridge and of their
    ratio: the clips are resampled with replacement, the same draw for both rows (same prompts and seeds).
    How far the figures could move with other clips, i.e. how much one eval run can be trusted."""
    rng = np.random.default_rng(seed)
    on_ms, off_ms, gain = [], [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(on_clips), len(on_clips))
        a = np.abs([o for i in idx for o in on_clips[i]["offsets_ms"]])
        b = np.abs([o for i in idx for o in off_clips[i]["offsets_ms"]])
        if not (a.size and b.size):
            continue
        on, off = np.median(a), np.median(b)
        if on > 0:
            on_ms.append(on)
            off_ms.append(off)
            gain.append(off / on)

    def span(xs):
        return [round(float(np.percentile(xs, 5)), 1), round(float(np.percentile(xs, 95)), 1)] if xs else None

    return {"bridge_on": span(on_ms), "bridge_off": span(off_ms), "bridge_gain": span(gain)}


def _r(xs, nd=3):
    return [round(float(x), nd) for x in xs]


def _num(x):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 2)


def write_mp4s(clips, prompts, folder: Path) -> None:
    """H.264 + AAC previews (enlarged 4x) named after the prompt index and seed."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, ((video, audio), p) in enumerate(zip(clips, prompts)):
        clip = scenes.Clip(video=video, audio=audio, impacts_s=[], caption=p.prompt, fps=scenes.FPS,
                           sample_rate=scenes.SAMPLE_RATE)
        scenes.write_mp4(clip, folder / f"{i:02d}_seed{p.seed}.mp4")


def rendered(prompts):
    return [scenes.render(scenes.scene_for_seed(p.seed, p.colour, p.shape, p.sound)) for p in prompts]


def designed_latents(toy: Toy, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's designed latents, normalised as the towers see them (video [16,T,h,w], audio [16,L])."""
    video = torch.from_numpy(designed.clip_video_latent(clip))[None]
    video = (video - toy.video_vae.latents_mean.float()) / toy.video_vae.latents_std.float()
    mean, std = (torch.as_tensor(np.asarray(v), dtype=torch.float32)[:, None] for v in toy.audio_stats)
    audio = (torch.from_numpy(designed.clip_audio_latent(clip)) - mean) / std
    return video[0], audio


@torch.no_grad()
def audio_given_video(toy: Toy, gen, prompts, steps: int, cfg: float, bridge_on: bool, clean: bool = False,
                      audio_shift=None):
    """(rendered video, audio generated against its noised designed latent) per prompt."""
    w, frames, fps = scenes.WIDTH, scenes.FRAMES, scenes.FPS
    y = first_frame_y(toy.video_vae, w, w, frames)
    vshape, ashape = latent_shapes(gen.config, w, w, frames, fps)
    settings = settings_for(steps, cfg, audio_shift)
    schedule = sampler_mod.make_schedule(settings.schedule, steps, settings.shift, gen.config.scheduler)
    keep = int(toy.audio_vae.sample_rate * frames / fps)
    out = []
    for p, clip in zip(prompts, rendered(prompts)):
        noise_v, noise_a = sampler_mod.make_noise(p.seed, vshape, ashape)
        inner = sampler_mod.TextCFG(cfg, cfg) if bridge_on else BridgeOff(cfg, cfg)
        given = VideoGiven(inner, designed_latents(toy, clip)[0][None], noise_v, schedule, clean)
        _, audio = sampler_mod.sample(gen, noise_v, noise_a, toy.text.encode([p.prompt]), toy.negative, y, settings,
                                      guidance=given)
        out.append((clip.video, toy.audio_vae.decode(audio)[0, 0, :keep].numpy()))
    return out


def references(toy: Toy, prompts) -> dict:
    """Detectors on the rendered eval scenes, on their designed latents through the toy decoders, and on
    the clips through the toy encoders and decoders."""
    clips = rendered(prompts)
    truth = [(c.video, c.audio) for c in clips]
    rows = {"reference_ground_truth": score(truth, prompts)}
    with torch.no_grad():
        dec = []
        for c in clips:
            zv, za = designed_latents(toy, c)
            v = toy.video_vae.decode(zv[None])[0]
            a = toy.audio_vae.decode(za[None])[0, 0, :len(c.audio)]
            dec.append((frames_01(v), a.numpy()))
        rows["reference_decoders"] = score(dec, prompts)
        rt = []
        for c in clips:
            v = toy.video_vae.decode(toy.video_vae.encode(video_tensor(c)[None]))[0]
            a = toy.audio_vae.decode(toy.audio_vae.encode(torch.from_numpy(c.audio)[None, None]))[0, 0, :len(c.audio)]
            rt.append((frames_01(v), a.numpy()))
    rows["reference_vae_roundtrip"] = score(rt, prompts)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="MOVA folder (default: embedded toy)")
    parser.add_argument("--clips", type=int, default=16, help="clips for bridge_on / bridge_off (the headline)")
    parser.add_argument("--detail-clips", type=int, default=None,
                        help="clips for every other row: the first K of --clips (default: all of them)")
    parser.add_argument("--steps", type=int, default=12, help="sampling steps (the demo workflow uses 12)")
    parser.add_argument("--cfg", type=float, default=5.0, help="text CFG scale (video and audio)")
    parser.add_argument("--audio-shift", type=float, default=AUDIO_SHIFT,
                        help="the sampler's audio_shift for the main rows (0: the video's shift, as released)")
    parser.add_argument("--sweep", default="0,1,2,3", help="bridge guidance scales ('' to skip)")
    parser.add_argument("--quant", default="bf16,fp8_e4m3fn,nf4,int8", help="quantization modes ('' to skip)")
    parser.add_argument("--fast", action="store_true", help="only bridge_on / bridge_off (no sweep, quant, references)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mp4", type=Path, default=None, help="also write the bridge_on clips as mp4 here")
    parser.add_argument("--given", action="store_true",
                        help="add the given-video / given-audio / extend rows (scripts/eval_given.py) to the table")
    parser.add_argument("--given-only", action="store_true",
                        help="only the given-video / given-audio / extend rows (scripts/eval_given.py) on the "
                             "first --detail-clips clips")
    parser.add_argument("--windows", type=int, default=3, help="windows of the extend row")
    parser.add_argument("--given-rows", default="v2a,a2v,extend", help="which of those rows (comma-separated)")
    parser.add_argument("--step-cache", default="",
                        help="step cache thresholds, e.g. 0.05,0.1,0.2: a bridge_on row per threshold on the "
                             "first --detail-clips clips, one clip per batch (runs with --fast too); rows "
                             "step_cache_forecast_<t> (the sampler's default: skipped steps forecast v)")
    parser.add_argument("--step-cache-reuse", default="",
                        help="the same with skipped steps reusing the last velocity (rows step_cache_<t>)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clips < 1 or args.steps < 1:
        parser.error("--clips and --steps must be at least 1")
    detail = args.clips if args.detail_clips is None else args.detail_clips
    if not 1 <= detail <= args.clips:
        parser.error(f"--detail-clips must be between 1 and --clips ({args.clips}); got {args.detail_clips}")
    if args.audio_shift < 0:
        parser.error("--audio-shift must be 0 (the video's shift) or positive")
    audio_shift = args.audio_shift or None
    t0 = time.monotonic()
    toy, all_prompts = Toy(args.model), eval_prompts(args.clips)
    prompts = all_prompts[:detail]            # every row but the headline's
    rows = {}

    def report(label):
        s = rows[label].get("sync", {})
        print(f"{label:28s} sync {s.get('median_abs_offset_ms')} ms  adherence {rows[label].get('adherence')}  "
              f"motion {rows[label].get('motion')}  ({rows[label]['seconds']} s)", flush=True)

    def run_rows(label, make_clips, **extra):
        t = time.monotonic()
        rows[label] = {**extra, **score(make_clips(), prompts)}
        rows[label]["seconds"] = round(time.monotonic() - t, 1)
        report(label)

    def run(label, mode="fp32", guidance_fn=lambda: None, shift=audio_shift, use=prompts, **extra):
        t = time.monotonic()
        extra["audio_shift"] = shift
        clips = None
        try:
            clips = generate(toy, toy.generator(mode), use, args.steps, args.cfg, guidance_fn, shift)
            rows[label] = {**extra, **score(clips, use)}
            if args.mp4 is not None and label == "bridge_on":
                write_mp4s(clips, use, args.mp4)
        except Exception as exc:   # noqa: BLE001  e.g. a quantization backend that cannot run here: report it
            if mode == "fp32":
                raise
            rows[label] = {**extra, "error": f"{type(exc).__name__}: {exc}"}
        rows[label]["seconds"] = round(time.monotonic() - t, 1)
        report(label)
        return clips

    if args.given_only:
        return given_only(args, toy, prompts, audio_shift, t0)
    bridge_on = run("bridge_on", use=all_prompts, bridge="on")
    bridge_off = run("bridge_off", guidance_fn=lambda: BridgeOff(args.cfg, args.cfg), use=all_prompts, bridge="off")
    on_label = "bridge_on"
    if detail < args.clips and not args.fast:
        on_label = "detail_bridge_on"
        for label, clips in ((on_label, bridge_on), ("detail_bridge_off", bridge_off)):
            headline = label.removeprefix("detail_")
            rows[label] = {"bridge": rows[headline]["bridge"], "audio_shift": audio_shift,
                           **score(clips[:detail], prompts), "first_clips_of": headline, "seconds": 0.0}
            report(label)
    for th in [float(x) for x in args.step_cache.split(",") if x.strip()]:
        rows.update(step_cache_row(toy, prompts, args.steps, args.cfg, audio_shift, th))
        report(f"step_cache_forecast_{th:g}")
    for th in [float(x) for x in args.step_cache_reuse.split(",") if x.strip()]:
        rows.update(step_cache_row(toy, prompts, args.steps, args.cfg, audio_shift, th, forecast=False))
        report(f"step_cache_{th:g}")
    if not args.fast and audio_shift is not None:
        run("same_shift_on", shift=None, bridge="on")
        run("same_shift_off", guidance_fn=lambda: BridgeOff(args.cfg, args.cfg), shift=None, bridge="off")
    if not args.fast:
        for s in [float(x) for x in args.sweep.split(",") if x.strip()]:
            if s == 1.0:   # nested dual CFG at bridge scale 1 is exactly the released text CFG
                rows["guidance_bridge_1"] = {**rows[on_label], "bridge_scale": 1.0, "same_as": on_label}
                continue
            gs = GuidanceSettings(video_text_scale=args.cfg, audio_text_scale=args.cfg, a2v_scale=s, v2a_scale=s)
            run(f"guidance_bridge_{s:g}", guidance_fn=lambda gs=gs: DualGuidance(gs), bridge_scale=s)
        for mode in [m.strip() for m in args.quant.split(",") if m.strip()]:
            run(f"quant_{mode}", mode=mode, quantization=mode)
        given = [(False, audio_shift, ""), (True, audio_shift, "")]
        if audio_shift is not None:
            given.insert(1, (False, None, "_same_shift"))
        for clean, shift, suffix in given:
            for on in (True, False):
                run_rows(f"audio_given_{'clean_' if clean else ''}video{suffix}_{'on' if on else 'off'}",
                         lambda on=on, clean=clean, shift=shift: audio_given_video(
                             toy, toy.generator(), prompts, args.steps, args.cfg, on, clean, shift),
                         bridge="on" if on else "off", audio_shift=shift)
        rows.update(references(toy, prompts))
        if args.given:
            rows.update(eval_given.rows(toy, prompts, args.steps, args.cfg, audio_shift, args.windows, _report_given,
                                        which=[w.strip() for w in args.given_rows.split(",")]))
    on, off = rows["bridge_on"].get("sync", {}), rows["bridge_off"].get("sync", {})
    on_ms, off_ms = on.get("median_abs_offset_ms"), off.get("median_abs_offset_ms")
    result = {
        "model": str(args.model), "clips": args.clips, "detail_clips": detail, "steps": args.steps, "text_cfg": args.cfg,
        "audio_shift": audio_shift,
        "sync": {"median_abs_offset_ms": {"bridge_on": on_ms, "bridge_off": off_ms},
                 "bridge_gain": round(off_ms / on_ms, 2) if on_ms and off_ms else None,
                 "interval_5_95": bootstrap_interval(rows["bridge_on"]["clips"], rows["bridge_off"]["clips"])
                 if on_ms and off_ms else None,
                 "goal_ms": SYNC_GOAL_MS},
        "adherence": rows["bridge_on"].get("adherence"),
        "rows": rows,
        "seconds": round(time.monotonic() - t0, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json} in {result['seconds']} s")
    return 0


def _report_given(label, row):
    s = row.get("sync", {})
    print(f"{label:28s} sync {s.get('median_abs_offset_ms')} ms  adherence {row.get('adherence')}  "
          f"{ {k: row[k] for k in ('per_window_sync_ms', 'seam', 'cut_between_unrelated_clips') if k in row} }  "
          f"({row['seconds']} s)", flush=True)


def given_only(args, toy, prompts, audio_shift, t0) -> int:
    """The rows of eval_given alone (issue 26), written as their own JSON."""
    rows = eval_given.rows(toy, prompts, args.steps, args.cfg, audio_shift, args.windows, _report_given,
                           which=[w.strip() for w in args.given_rows.split(",")])
    result = {"model": str(args.model), "clips": len(prompts), "steps": args.steps, "text_cfg": args.cfg,
              "audio_shift": audio_shift, "rows": rows, "seconds": round(time.monotonic() - t0, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
