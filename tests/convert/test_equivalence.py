"""The heart of the suite: every (source, model) pair the registry claims is numerically
equivalent to the torch model it converts from, and exports back to it
(see flaxcnn.convert.verify).

One test per flaxcnn model runs all its sources, so a model that converts from both
torchvision and timm into the same module compiles once for both comparisons.
"""

import pytest

import flaxcnn
from flaxcnn.convert import verify

MODELS = [n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).sources]


@pytest.mark.parametrize("name", MODELS)
def test_equivalent_to_torch(name):
    failures = []
    for source, src_name in flaxcnn.get_model_spec(name).sources.items():
        result = verify(src_name, source=source)
        print(result)
        # eval/train x default/odd non-square size, and the export back to torch
        modes = [c.mode for c in result.checks]
        if modes != ["eval", "eval", "train", "train", "export"] or not result.ok:
            failures.append(f"{result}\n  checks run: {modes}")
    assert not failures, "\n".join(failures)
