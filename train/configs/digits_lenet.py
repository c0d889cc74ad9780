"""LeNet-5 on the embedded digits (8x8 resized to 28x28, padded to 32x32): the main job.

    python -m flaxcnn.train --config train/configs/digits_lenet.py

Measured with a stand-in classic LeNet-5 (tanh, average pooling): 97.8% test top-1 after
20 epochs (440 steps), top-1 within 97.5-98.3% from epoch 12 on; 145 s wall on two cores
shared with other jobs (load ~10), where a 30-epoch run used 63 s of CPU time in all.
"""

from flaxcnn.train.configs import default


def get_config():
    c = default.get_config()
    c.name = "digits_lenet"
    c.model = "lenet5"
    c.model_kwargs = {}
    c.dataset = "digits"
    c.batch_size = 64
    c.num_epochs = 20
    c.optim.learning_rate = 0.05
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 1e-4
    c.augment.crop_scale_min = 0.6
    c.label_smoothing = 0.1
    c.workdir = "runs/digits_lenet"
    return c
