"""The wheel must carry every sub-package under the ``dashc`` name."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["dashc", "dashc/frontend", "dashc/net", "dashc/runtime", "dashc/models", "dashc/calibration"]


def test_wheel_contains_every_subpackage(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("dashc-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in SUBPACKAGES:
        assert f"{pkg}/__init__.py" in names, f"{pkg} missing from the wheel"
    assert "dashc/models/zoo/A.onnx" in names and "dashc/models/zoo/A.json" in names
    assert "dashc/models/samples/mnist.npz" in names
    for top in ("runtime/", "models/", "calibration/"):
        assert not any(n.startswith(top) for n in names), f"top-level {top} leaked into the wheel"
