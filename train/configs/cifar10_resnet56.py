"""ResNet-56 on CIFAR-10 with He et al.'s recipe (2016, section 4.2).

python -m flaxcnn.train --config train/configs/cifar10_resnet56.py

Needs CIFAR-10 prepared for tfds (``tfds build cifar10``, or its files under
``--config.data_dir``). The paper's recipe: SGD, momentum 0.9, weight decay 1e-4, batch 128,
learning rate 0.1 divided by 10 at 32k and 48k iterations, stopped at 64k (about 164 epochs
of the 50k training images); 4-pixel zero padding with a random 32x32 crop, and horizontal
flips; the per-pixel mean subtracted (here: per-channel mean and std, as torchvision's
CIFAR recipes). Two differences, both usual today: the paper trained on 45k images and
held out 5k for validation (here all 50k, evaluated on the 10k test set), and weight decay
here skips BatchNorm parameters and biases. ``resnet20``...``resnet110`` and ``plain20``...
``plain56`` take the same recipe (``--config.model=plain56``). For resnet110 the paper trains
at 0.01 for the first 400 iterations; ``--config.optim.warmup_steps=400`` is the nearest
setting here (a linear warm-up from 0).
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "cifar10_resnet56"
    c.model = "resnet56"
    c.model_kwargs = {}
    c.dataset = "cifar10"
    c.image_size = 32
    c.crop_pct = 1.0
    c.batch_size = 128
    c.num_steps = 64_000
    c.augment.translate = 4
    c.augment.hflip = True
    c.optim.optimizer = "sgd"
    c.optim.learning_rate = 0.1
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "step"
    c.optim.step_fractions = (0.5, 0.75)  # 32k and 48k of 64k
    c.optim.warmup_steps = 0
    c.checkpoint_every_steps = 2_000
    c.workdir = "runs/cifar10_resnet56"
    return c
