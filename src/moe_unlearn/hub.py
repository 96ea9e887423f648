"""Whether the Hugging Face Hub can be reached, decided quickly and once per process.

huggingface_hub retries an unreachable host for about 25 seconds per file, logging each retry.
Every reader of hub files asks `offline_reason()` first: the offline variables
(HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE), else one TCP connection to the
Hub's host with a short timeout. An offline machine then reads its cache or fails at once.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_SECONDS = 3.0  # DNS + TCP connect; a reachable Hub answers in well under a second


def _set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def endpoint() -> str:
    """The Hub's address (HF_ENDPOINT, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _reachable(url: str, seconds: float) -> str | None:
    """None when a TCP connection to url's host opens within `seconds`, else why not. getaddrinfo
    has no timeout of its own, so the attempt runs in a thread that is abandoned when late."""
    parts = urlparse(url)
    host, port = parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            result.append(None)
        except OSError as e:
            result.append(e.strerror or type(e).__name__)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        return f"no answer from {host} within {seconds:.0f} s"
    return None if result[0] is None else f"{host} cannot be reached: {result[0]}"


@functools.cache
def _probe(url: str) -> str | None:
    """Whether url's host answers, asked once per process (the network rarely comes and goes mid-run)."""
    reason = _reachable(url, PROBE_SECONDS)
    return None if reason is None else f"no network: {reason}"


def offline_reason() -> str | None:
    """Why the Hub cannot be used now ('HF_HUB_OFFLINE is set', 'no network: ...'), or None."""
    for name in OFFLINE_VARS:
        if _set(name):
            return f"{name} is set"
    return _probe(endpoint())


def stay_offline() -> None:
    """Put huggingface_hub, transformers and datasets in offline mode for the rest of this process,
    so that a file in the cache is read without a request (and without the retries of an
    unreachable host). Each library reads its flag from the environment at import, so the
    already imported ones are told too."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, attr):
            setattr(loaded, attr, True)


def is_hub_id(name: str) -> bool:
    """'org/name' or 'name' that is no path on this machine: what the Hub would be asked for."""
    if Path(name).exists() or name.startswith(("/", ".", "~")) or "\\" in name:
        return False
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts)
