import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FLOORS = MANIFEST["tolerance_fp32_vs_fp64_max_abs"]

# Error model behind every float32 parity bound. An output's floor F (fixtures/manifest.json,
# "tolerance_fp32_vs_fp64_max_abs") is the largest |torch fp32 - torch fp64| over its cases, so
# PyTorch's float32 result lies within 1 F of the float64 truth. Ours rounds in another order
# (another library, and each CPU blocks its float32 products its own way), so we allow it 2 F.
# Two results are compared through the truth (triangle inequality): they may differ by the sum
# of their distances to it, so ours vs float64 2 F, ours vs torch fp32 3 F, and ours vs ours
# (a batch of two against one image alone, on any CPU) 4 F. A real mismatch is over 100x
# larger: a wrong decoder head count gives 1.4e-2, LayerNorm eps 1e-6 gives 6e-4.
DISTANCE_TO_FLOAT64 = {"float64": 0, "torch_fp32": 1, "ours": 2}


def max_difference(floor, a, b):
    """Largest |a - b| the error model allows between results `a` and `b` with this floor."""
    return (DISTANCE_TO_FLOAT64[a] + DISTANCE_TO_FLOAT64[b]) * floor


@pytest.fixture
def fixtures_dir():
    return FIXTURES
