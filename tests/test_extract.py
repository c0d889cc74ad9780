"""flaxcnn.create_feature_extractor: outputs at torch-named nodes, equal to torchvision's
``create_feature_extractor`` on the same (converted) weights."""

import numpy as np
import pytest

import flaxcnn


def _bound(ref):
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize(
    ("name", "return_nodes"),
    [
        (
            "resnet50",
            {
                "layer1": "stage1",  # a Sequential: its last block's output
                "layer2.1.conv2": "conv",
                "layer3": "stage3",
                "layer4.2.bn3": "bn",
                "fc": "logits",
            },
        ),
        # convs (each followed by a BN; a node followed by torch's in-place ReLU is reported
        # after the ReLU by torchvision, see flaxcnn.extract)
        ("vgg11_bn", ["features.0", "features.8", "features.15", "classifier.6"]),
    ],
)
def test_equals_torchvisions_feature_extractor(name, return_nodes):
    import jax.numpy as jnp
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor as tv_extractor

    from flaxcnn.convert import from_torch
    from flaxcnn.convert.verify import randomize_bn

    torch.manual_seed(0)
    tmodel = torchvision.models.get_model(name).eval()
    randomize_bn(tmodel)
    module, variables = from_torch(name, tmodel, source="torchvision")
    x = np.random.default_rng(0).standard_normal((2, 3, 67, 75), dtype=np.float32)
    with torch.no_grad():
        ref = tv_extractor(tmodel, return_nodes=return_nodes)(torch.from_numpy(x))
    extractor = flaxcnn.create_feature_extractor(module, return_nodes)
    got = extractor.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert list(got) == list(ref)
    for key, r in ref.items():
        r = r.numpy()
        r = r.transpose(0, 2, 3, 1) if r.ndim == 4 else r
        g = np.asarray(got[key])
        assert g.shape == r.shape, key
        assert float(np.abs(g - r).max()) <= _bound(r), key


def test_nodes_and_errors():
    model = flaxcnn.create_model("resnet18")
    nodes = flaxcnn.get_graph_node_names(model)
    assert {"conv1", "layer1", "layer1.0.conv1", "layer4", "fc"} <= set(nodes)
    with pytest.raises(
        ValueError, match="no node 'layer1.0.conv9'; did you mean .*'layer1.0.conv1'"
    ):
        flaxcnn.create_feature_extractor(model, ["layer1.0.conv9"])
    with pytest.raises(TypeError, match="list of node names"):
        flaxcnn.create_feature_extractor(model, "layer1")
    # VGG's features has functional children (ReLU, pools): not offered as a node
    assert "features" not in flaxcnn.get_graph_node_names(flaxcnn.create_model("vgg11"))
