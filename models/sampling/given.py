"""A given video and/or audio latent held fixed while the sampler denoises the other modality
(video -> audio, audio -> video) or the rest of a window (a prefix of frames, for extending a clip).

At every step the given part of the sampler's state is replaced by the given clean latent, either
noised to that step's sigma with the sampler's own starting noise (x_t = (1 - s) x0 + s eps, as in
training: "noised"), or kept clean at t = 0 ("clean": then the given modality's tower runs at t = 0,
so a clean video also selects the low-noise expert). A prefix (video_frames / audio_frames) can only be
"noised": the tower has one t for all its frames. The given part's velocity is discarded; `finish`
puts the clean given latent into the result.

The sampler calls `runner(inner_runner, ...)` to wrap its forward runner (the released one or the
guidance's own), so text CFG, bridge guidance, the audio's own shift and the expert switch work as in
text-to-video.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...common.errors import InputError

MODES = ("clean", "noised")


@dataclass
class GivenLatents:
    video: Optional[torch.Tensor] = None     # [B, 16, T, h, w], normalised as the towers see it
    audio: Optional[torch.Tensor] = None     # [B, C, L]
    mode: str = "clean"
    video_frames: Optional[int] = None       # None: every latent frame; k: the first k latent frames
    audio_frames: Optional[int] = None       # None: every audio latent frame; k: the first k

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"given mode {self.mode!r} is unknown; expected one of {MODES}.")
        if self.video is None and self.audio is None:
            raise InputError("a given condition needs a video latent, an audio latent or both.")
        if self.mode == "clean" and (self.video_frames is not None or self.audio_frames is not None):
            raise InputError("a given prefix of frames can only be 'noised' (the towers take one t per clip).")
        if self.mode == "clean" and self.video is not None and self.audio is not None:
            raise InputError("both modalities given clean leaves nothing to sample.")

    def check(self, video_noise: torch.Tensor, audio_noise: torch.Tensor) -> None:
        for name, given, noise, k in (("video", self.video, video_noise, self.video_frames),
                                      ("audio", self.audio, audio_noise, self.audio_frames)):
            if given is None:
                continue
            want, got = list(noise.shape), list(given.shape)
            if k is None:
                ok = got == want
            else:
                ok = got[:2] == want[:2] and got[3:] == want[3:] and 1 <= k <= min(got[2], want[2])
            if not ok:
                raise InputError(f"the given {name} latent has shape {got} but this clip's {name} latent is {want}"
                                 + (f" (its first {k} frames given)" if k is not None else "")
                                 + "; encode the given media at the clip's size, frame count and fps.")

    def _part(self, x: torch.Tensor, k: Optional[int]):
        return x if k is None else x[:, :, :k]

    def _put(self, state: torch.Tensor, value: torch.Tensor, k: Optional[int]) -> torch.Tensor:
        if k is None:
            return value.to(state)
        out = state.clone()
        out[:, :, :k] = value[:, :, :k].to(state)
        return out

    def _noised(self, given, noise, sigma, k):
        s = float(sigma)
        return (1 - s) * self._part(given, k).to(noise) + s * self._part(noise, k)

    def runner(self, inner, generator, video_noise, audio_noise, schedule, audio_schedule):
        """The sampler's forward runner with the given parts substituted (same signature as run_forwards)."""
        self.check(video_noise, audio_noise)
        vnoise, anoise = video_noise.clone(), audio_noise.clone()

        def step_of(timestep) -> int:   # the step index from the video t (robust to skipped calls)
            return int(torch.argmin((schedule.timesteps - float(timestep.reshape(-1)[0])).abs()))

        def run(gen, expert, passes, video, audio, timestep, contexts, y, video_fps, audio_timestep=None):
            i = step_of(timestep)
            audio_t = timestep if audio_timestep is None else audio_timestep
            if self.mode == "clean":
                if self.video is not None:   # clean picture: video tower at t = 0 (low-noise expert)
                    video = self.video.to(video)
                    expert, timestep = gen.expert(True), torch.zeros_like(timestep)
                else:
                    audio = self.audio.to(audio)
                    audio_t = torch.zeros_like(audio_t)
                return inner(gen, expert, passes, video, audio, timestep, contexts, y, video_fps,
                             audio_timestep=audio_t)
            if self.video is not None:
                video = self._put(video, self._noised(self.video, vnoise, schedule.sigma_from[i], self.video_frames),
                                  self.video_frames)
            if self.audio is not None:
                audio = self._put(audio, self._noised(self.audio, anoise, audio_schedule.sigma_from[i],
                                                      self.audio_frames), self.audio_frames)
            extra = {} if audio_timestep is None else {"audio_timestep": audio_timestep}
            return inner(gen, expert, passes, video, audio, timestep, contexts, y, video_fps, **extra)

        return run

    def finish(self, video: torch.Tensor, audio: torch.Tensor):
        """The sampled latents with the given parts replaced by the clean given latents."""
        if self.video is not None:
            video = self._put(video, self.video, self.video_frames)
        if self.audio is not None:
            audio = self._put(audio, self.audio, self.audio_frames)
        return video, audio
