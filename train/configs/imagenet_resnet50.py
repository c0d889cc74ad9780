"""ResNet-50 on ImageNet-1k: the large-batch SGD recipe of Goyal et al. (2017), with the
label smoothing of He et al.'s "Bag of Tricks" (2019).

python -m flaxcnn.train --config train/configs/imagenet_resnet50.py \
    --config.manual_dir=/path/to/ILSVRC2012_tars

Needs ImageNet prepared for tfds (``imagenet2012``: the tars downloaded into
``manual_dir``). The recipe: SGD with momentum 0.9 (no Nesterov), learning rate 0.1 per 256
images scaled linearly to the batch (here 1024: 0.4; ``--config.batch_size`` rescales it),
5 epochs of linear warm-up then cosine decay to zero over 90 epochs, weight decay 1e-4 on
the weights only (BatchNorm parameters and biases are not decayed), label smoothing 0.1;
Inception-style random-resized crops (scale 0.08-1) and horizontal flips at 224, evaluated
on the 87.5% centre crop. Goyal et al. divide the rate by 10 at epochs 30, 60 and 80; the
cosine schedule (``--config.optim.schedule=step`` with ``step_fractions`` for theirs) is the
"Bag of Tricks" choice and about 0.5 points better there.
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "imagenet_resnet50"
    c.model = "resnet50"
    c.model_kwargs = {}
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.crop_pct = 0.875
    c.batch_size = 1024
    c.num_epochs = 90
    c.augment.crop_scale_min = 0.08
    c.augment.hflip = True
    c.optim.optimizer = "sgd"
    c.optim.learning_rate = 0.1
    c.optim.lr_base_batch = 256
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 5.0
    c.label_smoothing = 0.1
    c.workdir = "runs/imagenet_resnet50"
    return c
