"""Padded U-Net (BatchNorm, depth 3, base width 8) on the embedded synthetic shapes.

    python -m flaxcnn.train --config train/configs/shapes_unet.py

Segmentation: per-pixel cross-entropy (the outline band is ignored); the test metrics are
mean IoU over the four classes (background, disc, square, triangle) and pixel accuracy,
from the confusion matrix of the whole test split. The 64x64 images are trained at 32x32.

Measured (8 simulated devices, two CPU cores shared with three other jobs, nice 19): test
mIoU 71.3%, pixel accuracy 95.7% after 15 epochs (465 steps), mIoU rising from 61% at
epoch 10; 4 min 16 s wall, 214 s of CPU time (user) in all. Background and shapes separate
within two epochs (pixel accuracy 86%); telling discs, squares and triangles apart is what
takes the rest. With learning rate 3e-3 instead of 1e-2, 10 epochs reached 34.8% only.
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "shapes_unet"
    c.model = "unet_padded"
    c.model_kwargs = {"depth": 3, "base_width": 8}
    c.dataset = "shapes"
    c.image_size = 32  # the 64x64 images and masks resized (bilinear / nearest)
    c.batch_size = 32
    c.num_epochs = 15
    c.optim.optimizer = "adamw"
    c.optim.learning_rate = 1e-2
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 1e-4
    c.augment.hflip = True
    c.workdir = "runs/shapes_unet"
    return c
