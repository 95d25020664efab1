"""MOVA Video to Audio, MOVA Audio to Video, MOVA Extend / Long Clip in the real ComfyUI: the shipped
templates run to an mp4 (in-process and over HTTP), adaptations and bad input give readable results."""
import json
import math
import wave

import numpy as np
import pytest

import comfy_host
import workflow_api
from conftest import WORKFLOWS, load_workflow, model_sample_rate, embedded_model_name, probe_media

GIVEN = ("video_to_audio.json", "audio_to_video.json", "extend_clip.json")
INPUT_FRAMES, FPS = 49, 24.0            # workflows/media/mova_toy_clip.mp4 and mova_toy_sound.wav
EXTENDED_FRAMES = 49 + 2 * 36           # 3 windows of 49 frames, each new one 36 frames on


def node_of(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)


def id_of(prompt: dict, class_type: str) -> str:
    return next(k for k, n in prompt.items() if n["class_type"] == class_type)


def write_wav(path, audio: np.ndarray, rate: int) -> None:
    """audio [channels, samples] in -1..1 as 16-bit PCM."""
    pcm = (np.clip(audio.T, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(audio.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def check_mp4(path, frames: int, seconds: float):
    info = probe_media(path)
    video, audio = info["video"][0], info["audio"][0]
    rate = model_sample_rate(embedded_model_name())
    assert video["codec"] == "h264" and video["frames"] == frames and (video["width"], video["height"]) == (64, 64), info
    assert abs(video["fps"] - FPS) < 1e-6, info
    assert audio["codec"] == "aac" and audio["sample_rate"] == rate, info
    assert abs(audio["seconds"] - seconds) <= 1024 / rate + 1e-3, info


@pytest.fixture(scope="module")
def ready(comfy):
    return comfy


@pytest.mark.parametrize("name, frames", [("video_to_audio.json", INPUT_FRAMES), ("audio_to_video.json", INPUT_FRAMES),
                                          ("extend_clip.json", EXTENDED_FRAMES)])
def test_template_runs_as_shipped_and_writes_mp4(ready, name, frames):
    result = ready.run(ready.convert(load_workflow(WORKFLOWS / name)), fresh=True)
    assert result.valid, result.node_errors
    assert result.success, result.execution_error()
    videos = [f for f in result.files() if f["filename"].endswith(".mp4")]
    assert len(videos) == 1
    check_mp4(ready.output_path(videos[0]), frames, frames / FPS)


def test_video_to_audio_passes_the_frames_through_and_sounds_their_impacts(ready):
    prompt = ready.convert(load_workflow(WORKFLOWS / "video_to_audio.json"))
    v2a, components = id_of(prompt, "MOVAVideoToAudio"), id_of(prompt, "GetVideoComponents")
    result = ready.run(prompt, outputs=[v2a, components])
    assert result.success, result.execution_error()
    images, audio, fps = result.values[v2a]
    given = result.values[components][0][0]
    assert images[0].shape == given.shape and bool((images[0] == given).all())     # the user's frames, untouched
    assert fps[0] == FPS
    wave_ = audio[0]["waveform"]
    assert wave_.shape[:2] == (1, 1) and wave_.shape[-1] == round(INPUT_FRAMES / FPS * audio[0]["sample_rate"])
    assert float(wave_.abs().max()) > 0.01      # a soundtrack, not silence


def _a2v_with_audio(ready, tmp_name: str, audio: np.ndarray, rate: int):
    write_wav(ready.base / "input" / tmp_name, audio, rate)
    prompt = ready.convert(load_workflow(WORKFLOWS / "audio_to_video.json"))
    node_of(prompt, "LoadAudio")["inputs"]["audio"] = tmp_name
    node_of(prompt, "MOVAAudioToVideo")["inputs"]["steps"] = 2
    return prompt


def test_audio_to_video_adapts_stereo_44k_audio(ready):
    t = np.arange(int(44100 * 1.0)) / 44100
    clicks = np.where((t % 0.25) < 0.01, np.sin(2 * np.pi * 900 * t), 0.0) * 0.8
    prompt = _a2v_with_audio(ready, "stereo44k.wav", np.stack([clicks, clicks * 0.5]), 44100)
    a2v = id_of(prompt, "MOVAAudioToVideo")
    result = ready.run(prompt, outputs=[a2v])
    assert result.success, result.execution_error()
    images, audio, _ = result.values[a2v]
    assert images[0].shape == (math.ceil(1.0 * FPS), 64, 64, 3)        # as long as the sound
    assert audio[0]["sample_rate"] == 44100 and audio[0]["waveform"].shape[1] == 2   # the given audio, as given


@pytest.mark.parametrize("seconds, amplitude, words", [
    (1.0, 0.0, ["silent"]),
    (9.0, 0.5, ["MOVA Extend", "193"]),
])
def test_audio_to_video_bad_audio_is_a_readable_error_and_writes_nothing(ready, seconds, amplitude, words):
    rate = 48000
    audio = amplitude * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)[None]
    prompt = _a2v_with_audio(ready, f"bad_{seconds}_{amplitude}.wav", audio, rate)
    before = sorted(p.name for p in ready.base.joinpath("output").rglob("*"))
    result = ready.run(prompt)
    assert result.valid, result.node_errors
    assert not result.success
    error = result.execution_error()
    assert error["node_type"] == "MOVAAudioToVideo"
    text = error["exception_message"]
    for word in words:
        assert word in text, text
    assert sorted(p.name for p in ready.base.joinpath("output").rglob("*")) == before


def test_video_to_audio_refuses_a_single_frame(ready):
    import shutil
    shutil.copy(comfy_host.COMFY_DIR / "input" / "example.png", ready.base / "input" / "example.png")
    prompt = ready.convert(load_workflow(WORKFLOWS / "video_to_audio.json"))
    v2a = id_of(prompt, "MOVAVideoToAudio")
    prompt["900"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    prompt[v2a]["inputs"]["images"] = ["900", 0]
    result = ready.run(prompt, outputs=[v2a])
    assert not result.success
    error = result.execution_error()
    assert error["node_type"] == "MOVAVideoToAudio" and "at least 2 frames" in error["exception_message"]


def test_long_clip_runs_windows_and_extend_refuses_an_empty_latent(ready):
    prompt = ready.convert(load_workflow(WORKFLOWS / "extend_clip.json"))
    sampler = id_of(prompt, "MOVASampler")
    inputs = {k: v for k, v in prompt[sampler]["inputs"].items() if k in ("model", "positive", "negative", "latent")}
    first_extend = node_of(prompt, "MOVAExtend")["inputs"]
    inputs.update(video_vae=first_extend["video_vae"], audio_vae=first_extend["audio_vae"], windows=2, seed=5,
                  steps=2, shift=5.0, boundary=0.9, cfg=5.0, audio_shift=50.0, overlap=3, last_frame_image=False)
    prompt["901"] = {"class_type": "MOVALongClip", "inputs": inputs}
    result = ready.run(prompt, outputs=["901"])
    assert result.success, result.execution_error()
    latent, images, audio, fps = result.values["901"]
    assert images[0].shape[0] == 49 + 36 and fps[0] == FPS
    assert audio[0]["waveform"].shape[-1] == round((49 + 36) / FPS * audio[0]["sample_rate"])

    bad = ready.convert(load_workflow(WORKFLOWS / "extend_clip.json"))
    extend = next(k for k, n in bad.items() if n["class_type"] == "MOVAExtend" and n["inputs"]["latent"][0] == sampler)
    bad[extend]["inputs"]["latent"] = [id_of(bad, "MOVALatent"), 0]
    result = ready.run(bad, outputs=[extend])
    assert not result.success
    assert "sampled MOVA_LATENT" in result.execution_error()["exception_message"]


def test_templates_run_over_http(comfy_server, tmp_path):
    info = comfy_server.get_json("/object_info")
    for name in ("MOVAVideoToAudio", "MOVAAudioToVideo", "MOVAExtend", "MOVALongClip"):
        assert info[name]["category"] == "MOVA/sampling"
    templates = comfy_server.get_json("/workflow_templates")[comfy_host.PACK_NAME]
    assert set(p.removesuffix(".json") for p in GIVEN) <= set(templates)
    for name, frames in (("video_to_audio.json", INPUT_FRAMES), ("audio_to_video.json", INPUT_FRAMES)):
        prompt = workflow_api.ui_to_api(load_workflow(WORKFLOWS / name), info)
        entry = comfy_server.run(prompt, timeout=900)
        files = [f for f in comfy_host.output_files(entry) if f["filename"].endswith(".mp4")]
        assert len(files) == 1, json.dumps(entry)[:2000]
        mp4 = tmp_path / files[0]["filename"]
        mp4.write_bytes(comfy_server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"]))
        check_mp4(mp4, frames, frames / FPS)
