"""A hub model at a revision: the commit loaded is part of the model's name (model@commit).

So reward values can always be traced to the exact weights. Loaded offline from a Hugging Face cache laid out
as the hub client lays it out, holding the tiny random model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# One process for every case: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import.
LOAD = """
import json, sys
from topreward.model.backend import ModelLoadError, Qwen3VLBackend
from topreward.types import ModelConfig
results = []
for model, revision in json.loads(sys.argv[1]):
    try:
        backend = Qwen3VLBackend.load(ModelConfig(model=model, revision=revision, device="cpu", dtype="float32"))
        results.append({"name": backend.name, "device": str(backend.device)})
    except ModelLoadError as exc:
        results.append({"error": str(exc)})
print(json.dumps(results))
"""


def test_the_commit_loaded_is_in_the_name_and_a_revision_must_exist(tmp_path, tiny_model_path):
    repo = tmp_path / "hub" / "models--lab--tiny-qwen3-vl"
    shutil.copytree(tiny_model_path, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    hub_id, local = "lab/tiny-qwen3-vl", str(tiny_model_path)
    cases = [(hub_id, ""), (hub_id, "main"), (hub_id, COMMIT), (hub_id, "v9.9"), (local, ""), (local, "main")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", LOAD, json.dumps(cases)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded[:3] == [{"name": f"{hub_id}@{COMMIT}", "device": "cpu"}] * 3
    assert hub_id in loaded[3]["error"] and "\n" not in loaded[3]["error"]  # a revision that is not there
    assert loaded[4] == {"name": local, "device": "cpu"}  # a local directory has no revision
    assert loaded[5] == {"error": f"revision 'main' applies to hub ids, not to the local directory {local}"}


def test_weights_load_straight_onto_the_device(tiny_model_path, monkeypatch):
    """No stop in host memory on the way to a GPU: from_pretrained places the weights (device_map), no .to() after."""
    import torch
    from transformers import AutoModelForImageTextToText

    from topreward.model.backend import Qwen3VLBackend
    from topreward.types import ModelConfig

    asked, moved = [], []
    real = AutoModelForImageTextToText.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        asked.append(kwargs)
        return real(cls, *args, **kwargs)

    real_to = torch.nn.Module.to
    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append((a, k)) or real_to(self, *a, **k))
    backend = Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32"))
    assert [kwargs["device_map"] for kwargs in asked] == ["cpu"] and asked[0]["dtype"] == torch.float32
    assert not any(a and isinstance(a[0], (str, torch.device)) for a, _ in moved)  # never moved after loading
    assert backend.device == torch.device("cpu")
