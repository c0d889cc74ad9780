"""ConvNeXt-T on ImageNet-1k with the recipe of Liu et al., "A ConvNet for the 2020s"
(CVPR 2022, appendix A.1, table 5).

python -m flaxcnn.train --config train/configs/imagenet_convnext_tiny.py \
    --config.manual_dir=/path/to/ILSVRC2012_tars --config.precision=bfloat16

Needs ImageNet prepared for tfds (``imagenet2012``: the tars downloaded into
``manual_dir``). The recipe: AdamW (betas 0.9, 0.999) at learning rate 4e-3 for a batch of
4096 (scaled linearly when ``--config.batch_size`` changes), 20 epochs of linear warm-up
then cosine decay over 300 epochs, weight decay 0.05 (not on normalisation parameters and
biases), stochastic depth 0.1, label smoothing 0.1; random-resized crops (scale 0.08-1) and
horizontal flips at 224, RandAugment ``rand-m9-n2``, Mixup 0.8 and CutMix 1.0 (one of the two
per batch, with probability 1/2 each), random erasing 0.25; an EMA of the weights with decay
0.9999, evaluated on the 87.5% centre crop. Layer scale starts at 1e-6 (the model's
default). The paper's RandAugment is timm's ``rand-m9-mstd0.5-inc1``: magnitudes drawn
around 9 of 10 (std 0.5) and the increasing variants of the ops; here it is torchvision's
op set at the fixed magnitude 9 of timm's 10 levels (torchvision's bin 27 of 30; see
``flaxcnn.train.augment.randaugment``).
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "imagenet_convnext_tiny"
    c.model = "convnext_tiny"
    c.model_kwargs = {"drop_path_rate": 0.1}
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.crop_pct = 0.875
    c.batch_size = 4096
    c.num_epochs = 300
    c.augment.crop_scale_min = 0.08
    c.augment.hflip = True
    c.augment.randaugment = "rand-m9-n2"
    c.augment.erase_prob = 0.25
    c.mixup_alpha = 0.8
    c.cutmix_alpha = 1.0
    c.label_smoothing = 0.1
    c.ema_decay = 0.9999
    c.optim.optimizer = "adamw"
    c.optim.learning_rate = 4e-3
    c.optim.lr_base_batch = 4096
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 0.05
    c.optim.schedule = "cosine"
    c.optim.warmup_epochs = 20.0
    c.workdir = "runs/imagenet_convnext_tiny"
    return c
