"""pyproject's explicit package list covers the source tree (a missing entry would install a
package without one of its modules)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in ROOT.glob("ort_cam/**/__init__.py")}
    listed = set(conf["packages"])
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert conf["package-dir"]["ort_cam.demo_data"] == "models/demo"
    assert (ROOT / "models" / "demo").is_dir()
