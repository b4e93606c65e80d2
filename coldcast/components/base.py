"""The one platform image every component runs in, and the decorator that binds a component to it."""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from coldcast import __version__

# Built from the repository's Dockerfile (the package with the pinned stack). Push it to your registry and pass
# `coldcast compile --image REGISTRY/coldcast/platform:TAG`; every task of both pipelines uses this one image.
PLATFORM_IMAGE = f"coldcast/platform:{__version__}"


def component(func: Callable[..., Any]) -> Any:
    """A lightweight kfp component on the platform image.

    The image already holds kfp and coldcast, so nothing is pip-installed when a task starts (and, locally with
    `SubprocessRunner(use_venv=False)`, nothing is installed into the caller's environment either). The body is
    serialised into the task, so its imports live inside the function.
    """
    return dsl.component(func, base_image=PLATFORM_IMAGE, install_kfp_package=False)
