"""The pack in the real ComfyUI server over HTTP: /object_info, /prompt errors, /history, /view, av probe."""
import json

import comfy_host
import workflow_api
from conftest import WORKFLOWS, check_av_file, embedded_model_name, load_workflow, model_sample_rate


def _api(server, name="text_to_video_audio.json"):
    ui = load_workflow(WORKFLOWS / name)
    return ui, workflow_api.ui_to_api(ui, server.get_json("/object_info"))


def _node(prompt, class_type):
    return next(n for n in prompt.values() if n["class_type"] == class_type)


def test_nodes_and_templates_are_served(comfy_server):
    info = comfy_server.get_json("/object_info/MOVASampler")["MOVASampler"]
    assert info["category"] == "MOVA/sampling"
    assert info["input_order"]["required"][:4] == ["model", "positive", "negative", "latent"]
    templates = comfy_server.get_json("/workflow_templates")
    assert sorted(templates[comfy_host.PACK_NAME]) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def test_errors_are_readable_and_server_keeps_serving(comfy_server, tmp_path):
    ui, good = _api(comfy_server)

    bad_size = json.loads(json.dumps(good))
    _node(bad_size, "MOVALatent")["inputs"]["width"] = 100
    status, body = comfy_server.post_prompt(bad_size)
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    assert "100" in json.dumps(body["node_errors"]) and "16" in json.dumps(body["node_errors"])

    missing = json.loads(json.dumps(good))
    _node(missing, "MOVAAudioVAELoader")["inputs"]["vae"] = "MOVA-720p/audio_vae"
    status, body = comfy_server.post_prompt(missing)
    assert status == 400 and "not one of the choices" in json.dumps(body["node_errors"])

    unsampled = json.loads(json.dumps(good))   # decode an empty latent: fails while running
    sampler_id = next(k for k, v in unsampled.items() if v["class_type"] == "MOVASampler")
    latent_id = next(k for k, v in unsampled.items() if v["class_type"] == "MOVALatent")
    for node in unsampled.values():
        if node["inputs"].get("latent") == [sampler_id, 0]:
            node["inputs"]["latent"] = [latent_id, 0]
    entry = comfy_server.wait_for(comfy_server.queue_prompt(unsampled), timeout=600)
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert "MOVA Sampler" in error["exception_message"]

    entry = comfy_server.run(good, timeout=900)
    files = [f for f in comfy_host.output_files(entry) if f["filename"].endswith(".mp4")]
    assert len(files) == 1
    mp4 = tmp_path / files[0]["filename"]
    mp4.write_bytes(comfy_server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"]))
    check_av_file(mp4, ui, model_sample_rate(embedded_model_name()))
    assert "IMPORT FAILED" not in comfy_server.log_text()
