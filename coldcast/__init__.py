"""coldcast: one multi-task model for podcast ads and promotions, with cold-start targeting."""

import os as _os

# TFRS needs Keras 2: this must be set before anything imports tf.keras, so the package sets it for its users.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
