"""flaxcnn.train: data-parallel training of flaxcnn models (needs the ``[train]`` extra).

``python -m flaxcnn.train --config train/configs/digits_lenet.py`` (or ``flaxcnn-train``)
trains; ``python -m flaxcnn.train evaluate --config ... --checkpoint DIR`` evaluates.

Modules: :mod:`.steps` (jitted train/eval steps over a ``data`` mesh), :mod:`.data`
(tfds + grain input pipeline), :mod:`.digits` and :mod:`.shapes` (the embedded
classification and segmentation sets), :mod:`.augment`, :mod:`.optim`, :mod:`.checkpoint`
(orbax), :mod:`.checks` (start-up checks of the dependencies and every config field),
:mod:`.loop` (the training job), :mod:`.cli`.
"""
