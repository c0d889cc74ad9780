"""LeNet-5 on the embedded digits (8x8 resized to 28x28, padded to 32x32): the main job.

    python -m flaxcnn.train --config train/configs/digits_lenet.py

Reaches >= 97% test top-1 in well under two minutes on two CPU cores.
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "digits_lenet"
    c.model = "lenet5"
    c.model_kwargs = {}
    c.dataset = "digits"
    c.batch_size = 64
    c.num_epochs = 30
    c.optim.learning_rate = 0.05
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 1e-4
    c.augment.crop_scale_min = 0.85
    c.workdir = "runs/digits_lenet"
    return c
