"""Training configs: each module's ``get_config()`` returns an ``ml_collections.ConfigDict``.

``digits_c8`` is the default demo (runs in minutes on a CPU); the others reproduce the
paper's image experiments with pretrained ResNet50 / ViT-B/16 predictors. Variants
import a base config and override a few fields.
"""
