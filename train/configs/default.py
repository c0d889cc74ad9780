"""Every training setting with its default; the other configs start from this one.

    python -m flaxcnn.train --config train/configs/default.py --config.model=resnet18

Any field can be overridden on the command line: ``--config.optim.learning_rate=0.05``,
``--config.model_kwargs.stem_type=cifar`` (new keys under ``model_kwargs`` are allowed).
Every field's type and range is checked before a run starts (``flaxcnn.train.checks``): a
new field here needs its check there.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.name = "default"
    c.seed = 0
    # Model: a registry name; model_kwargs override its fields (stem_type, drop_rate, ...).
    c.model = "resnet18"
    c.model_kwargs = ConfigDict({"stem_type": "cifar"})
    # "float32", "bfloat16" or "float16": half-precision compute, float32 params, optimizer
    # state and BN statistics. float16 uses dynamic loss scaling: the loss is multiplied by a
    # scale (starting at loss_scale.initial) that halves on every step whose gradients overflow
    # (that step is skipped) and doubles after loss_scale.period finite steps in a row.
    c.precision = "float32"
    c.loss_scale = ConfigDict({"initial": 2.0**15, "period": 2000})
    # BatchNorm: "sync" (statistics over the global batch) or "group" (per group of
    # bn_group_devices devices, as torch DDP (1) or MLPerf (a few)).
    c.batch_norm = "sync"
    c.bn_group_devices = 1
    # Data.
    c.dataset = "digits"  # the model's task must match: shapes for segmentation models
    c.data_dir = ""  # default: $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.manual_dir = ""  # imagenet2012's downloaded tars
    c.num_classes = 0  # 0: the dataset's; anything else must agree with it
    c.image_size = 32
    c.crop_pct = 0.875
    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 0  # 0: batch_size
    # Segmentation datasets (shapes): the crop and the flip move the masks with the images;
    # erase_prob, translate, randaugment, mixup, cutmix, label smoothing and distillation are
    # refused at start-up.
    c.augment = ConfigDict(
        {
            "crop_scale_min": 0.0,
            "translate": 0,  # pixels: zero-pad and random crop back (He et al.'s CIFAR: 4)
            "hflip": False,
            # RandAugment, torchvision's ops: timm's "rand-m9-n2" (magnitude 9 of 10, 2 ops
            # per image); "" is off (checks.parse_randaugment says what else is accepted).
            "randaugment": "",
            "color_jitter": 0.0,
            "noise_std": 0.0,
            "salt_pepper": 0.0,  # probability of a pixel turned white or black
            "erase_prob": 0.0,
        }
    )
    c.mixup_alpha = 0.0
    c.cutmix_alpha = 0.0
    # Length: num_steps if > 0, else num_epochs over the train split.
    c.num_epochs = 10
    c.num_steps = 0
    # Optimisation.
    c.optim = ConfigDict(
        {
            "optimizer": "sgd",  # sgd | adamw
            "learning_rate": 0.1,
            # > 0: learning_rate is per this many examples, scaled linearly to batch_size
            # (Goyal et al., 2017: 0.1 per 256).
            "lr_base_batch": 0,
            "momentum": 0.9,
            "nesterov": True,
            "b1": 0.9,
            "b2": 0.999,
            "weight_decay": 5e-4,  # masked off BN parameters and biases
            "schedule": "cosine",  # constant | step | cosine | plateau
            "warmup_steps": 0,
            "warmup_epochs": 0.0,  # the warm-up in epochs instead (not both)
            "step_fractions": (0.5, 0.75),
            "plateau_factor": 0.1,
            "plateau_patience": 10,
            "plateau_accumulation": 10,
            "grad_clip_norm": 0.0,
            "freeze_backbone": False,
        }
    )
    c.label_smoothing = 0.0
    # Auxiliary heads' loss weight: 0.3 for GoogLeNet / Inception; torchvision's references
    # train FCN's 'aux' map with 0.5 (set it so for fcn_resnet50/101).
    c.aux_loss_weight = 0.3
    c.ema_decay = 0.0  # > 0: keep an EMA of the weights and evaluate with it
    # Knowledge distillation from a teacher (a registry name and a checkpoint dir of this trainer).
    c.distill = ConfigDict(
        {
            "teacher": "",
            "teacher_kwargs": ConfigDict(),
            "checkpoint": "",
            "alpha": 0.0,
            "temperature": 4.0,
            "hard": False,
        }
    )
    # Fine-tuning from converted torch weights: a new head if num_classes differs.
    c.init_from = ConfigDict({"weights": "", "source": "torchvision", "source_name": ""})
    # Run.
    c.workdir = "runs/default"
    c.checkpoint_every_steps = 0  # 0: every epoch
    c.keep_checkpoints = 2
    c.tensorboard = False  # also write the metrics as TensorBoard events into workdir
    # Consecutive non-finite steps before stopping; float16 loss-scale overflows do not count.
    c.max_nonfinite = 5
    c.progress = True
    return c
