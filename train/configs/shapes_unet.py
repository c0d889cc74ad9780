"""Padded U-Net (BatchNorm, base width 8) on the embedded synthetic shapes: segmentation.

    python -m flaxcnn.train --config train/configs/shapes_unet.py

Per-pixel cross-entropy (outline band ignored); the test metrics are mean IoU over the four
classes (background, disc, square, triangle) and pixel accuracy, from the confusion matrix
of the whole test split. MEASURED
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "shapes_unet"
    c.model = "unet_padded"
    c.model_kwargs = {"depth": 3, "base_width": 8}
    c.dataset = "shapes"
    c.image_size = 64
    c.batch_size = 32
    c.num_epochs = 8
    c.optim.optimizer = "adamw"
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 1e-4
    c.augment.hflip = True
    c.workdir = "runs/shapes_unet"
    return c
