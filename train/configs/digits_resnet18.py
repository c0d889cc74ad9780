"""CIFAR-style ResNet-18 (3x3/1 stem, no max pool) on the embedded digits, 32x32.

python -m flaxcnn.train --config train/configs/digits_resnet18.py
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "digits_resnet18"
    c.model = "resnet18"
    c.model_kwargs = {"stem_type": "cifar"}
    c.dataset = "digits"
    c.batch_size = 128
    c.num_epochs = 4
    c.optim.learning_rate = 0.1
    c.optim.warmup_steps = 10
    c.augment.crop_scale_min = 0.8
    c.workdir = "runs/digits_resnet18"
    return c
