"""He et al.'s degradation experiment (2016, section 4.2, figure 6) on the embedded digits:
``plain20``, ``plain56``, ``resnet20`` and ``resnet56`` trained with one recipe, the paper's
CIFAR-10 one scaled down in length.

python -m flaxcnn.train --config train/configs/digits_degradation.py --config.model=plain56

The recipe of ``cifar10_resnet56`` (SGD with momentum 0.9, weight decay 1e-4, batch 128,
learning rate 0.1 divided by 10 at half and three quarters of training, zero-padding with a
random crop, horizontal flips) on the digits' own 8x8 (the paper's 4 pixels of padding on
32x32 become 1 pixel), 40 epochs of the 1,438 training digits (440 steps instead of 64k),
with the warm-up the paper gives ResNet-110 (a low rate until training takes off) for all
four: here 10 epochs of linear warm-up. Without it ResNet-56 is thrown off by its first
steps at 0.1 and, with so few steps, does not recover (measured: 20% training accuracy after
20 epochs). ``notebooks/09_degradation.py`` runs all four and plots them.
"""

from flaxcnn.train.configs import cifar10_resnet56


def get_config():
    c = cifar10_resnet56.get_config()
    c.name = "digits_degradation"
    c.model = "plain56"
    c.dataset = "digits"
    c.image_size = 8
    c.num_steps = 0
    c.num_epochs = 40
    c.augment.translate = 1
    c.optim.warmup_epochs = 10.0
    c.checkpoint_every_steps = 11  # every epoch of 1,438 images in batches of 128
    c.eval_batch_size = 120  # the 359 test digits in 3 batches (the last padded)
    c.workdir = "runs/digits_degradation"
    return c
