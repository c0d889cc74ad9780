"""The heart of the suite: every (source, model) pair the registry claims is numerically
equivalent to the torch model it converts from, and exports back to it
(see flaxcnn.convert.verify)."""

import pytest

import flaxcnn
from flaxcnn.convert import verify

PAIRS = [
    (source, src_name)
    for name in flaxcnn.list_models()
    for source, src_name in flaxcnn.get_model_spec(name).sources.items()
]


@pytest.mark.parametrize(("source", "name"), PAIRS, ids=[f"{s}:{n}" for s, n in PAIRS])
def test_equivalent_to_torch(source, name):
    result = verify(name, source=source)
    print(result)
    assert result.torch_params == result.flax_params, str(result)
    # eval/train x default/odd non-square size, and the export back to torch
    assert [c.mode for c in result.checks] == ["eval", "eval", "train", "train", "export"]
    assert result.ok, str(result)
