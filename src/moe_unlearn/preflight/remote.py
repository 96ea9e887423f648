"""The Hugging Face Hub as the checkers see it: offline or not, what the local caches hold, and
(online) a repository's files, their sizes, and whether this user may download them.

Every request has a short timeout and no retry: a preflight answers in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from moe_unlearn.hub import endpoint, offline_reason

RepoType = Literal["model", "dataset"]
INFO_SECONDS = 10.0  # one metadata request per repository


@dataclass(frozen=True)
class Remote:
    """A hub repository's files (name -> bytes, None when not reported), or why it cannot be downloaded."""

    sizes: dict[str, int | None]
    denied: str | None = None

    def size(self, wanted: Callable[[str], bool]) -> int | None:
        """Bytes of the wanted files; None when any size is unknown or nothing matches."""
        sizes = [s for name, s in self.sizes.items() if wanted(name)]
        return sum(sizes) if sizes and None not in sizes else None  # type: ignore[arg-type]


def _denied(e: Exception, repo_id: str, repo_type: RepoType) -> str:
    """Why a repository's files cannot be had, in words; gated only when the Hub says so."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    page = f"{endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    if isinstance(e, GatedRepoError):
        return f"access is gated: request it on {page} and log in (`hf auth login`)"
    if isinstance(e, RepositoryNotFoundError):
        return f"not found on the Hub ({page}), or private without a login"
    return f"the Hub did not answer ({type(e).__name__}: {' '.join(str(e).split())[:120]})"


class Hub:
    """One preflight's view of the Hub; remembers each answer, and whether it was asked at all."""

    def __init__(self) -> None:
        self.asked_offline: str | None = None  # the offline reason, once a checker needed the Hub
        self._remotes: dict[tuple[str, str], Remote] = {}

    def offline(self) -> str | None:
        """Why the Hub cannot be used ('HF_HUB_OFFLINE is set', 'no network: ...'), or None."""
        reason = offline_reason()
        self.asked_offline = self.asked_offline or reason
        return reason

    def remote(self, repo_id: str, repo_type: RepoType) -> Remote:
        """The repository's files and sizes, or why they cannot be downloaded (call online only)."""
        key = (repo_id, repo_type)
        if key not in self._remotes:
            self._remotes[key] = self._ask(repo_id, repo_type)
        return self._remotes[key]

    @staticmethod
    def _ask(repo_id: str, repo_type: RepoType) -> Remote:
        from huggingface_hub import HfApi, auth_check

        api = HfApi()
        info_of = api.model_info if repo_type == "model" else api.dataset_info
        try:
            info = info_of(repo_id, files_metadata=True, timeout=INFO_SECONDS)
            if getattr(info, "gated", False):
                auth_check(repo_id, repo_type=repo_type)  # GatedRepoError without access
        except Exception as e:  # the hub client raises many types; each means "not downloadable now"
            return Remote({}, _denied(e, repo_id, repo_type))
        return Remote({s.rfilename: s.size for s in info.siblings or []})

    @staticmethod
    def cached_file(repo_id: str, filename: str, repo_type: RepoType = "model") -> Path | None:
        """The file in the Hugging Face cache (what an offline load reads), or None."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
        return Path(found) if isinstance(found, str) else None

    @staticmethod
    def datasets_cached(repo_id: str, config: str | None) -> bool:
        """Whether `datasets` has prepared this dataset config in its cache (what an offline
        `load_dataset` reads): <HF_DATASETS_CACHE>/<org>___<name>/<config>/."""
        home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        root = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets")
        entry = root / repo_id.replace("/", "___") / (config or "default")
        return entry.is_dir() and any(entry.iterdir())
