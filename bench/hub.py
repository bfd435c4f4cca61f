"""Hugging Face Hub access: decide once whether the Hub is reachable, never hang offline.

Without network, ``datasets``/``transformers`` retry for half a minute before failing. We probe
the Hub's host once (a TCP connect with a short timeout); when it is unreachable we switch the
libraries to offline mode, so that what is cached still loads and what is not fails at once with
a clear message from the caller.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def _hub_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def hub_reachable() -> bool:
    """True when a TCP connection to the Hub's host succeeds within a few seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        with socket.create_connection(_hub_host(), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def prepare_hub_access() -> bool:
    """Switch the HF libraries to offline mode when the Hub is unreachable; return reachability.

    Sets ``HF_HUB_OFFLINE=1`` (read by the libraries at import time) and, when they are already
    imported, their cached constants too.
    """
    if hub_reachable():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
    return False
