"""The wheel carries every subpackage and the Hydra configs (non-editable installs work)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser under its backport name (a dev dependency)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hardneg").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("hardneg-*.whl"))).namelist()
    assert "hardneg/conf/config.yaml" in names and "hardneg/conf/loss/sct.yaml" in names
    assert "hardneg/conf/experiment/paper/cub_sct.yaml" in names
