"""Every model the job loads: its config.json and safetensors weights, here or downloadable."""

from __future__ import annotations

from moe_unlearn.preflight.locate import locate, weights_problem
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.preflight.resources import CHECKERS, Job, ModelRef, Resource

WEIGHT_FILES = (".safetensors", ".json")  # what a load downloads: weights, config, index


def _check(ref: ModelRef, job: Job, hub: Hub) -> Resource | None:
    found = locate(ref.path, job.data)
    what = f"model '{found.name}' (config and weights)"
    fix = f"set {ref.key} to a local model directory"
    if found.problem is not None:
        if ref.path is None and job.data.manifest is not None:
            return None  # the manifest cannot be read: the data checker's line says why
        return Resource(found.problem, "missing", (ref.key,), fix=fix)
    if found.directory is not None:
        problem = weights_problem(found.directory)
        if problem is not None:
            return Resource(problem, "missing", (ref.key,), fix=fix)
        return Resource(what, "local", (ref.key,), found.where)
    if found.hub_id is None:  # the embedded benchmark's model, built here
        return Resource(what, "local", (ref.key,), found.where)
    offline = hub.offline()
    if offline is not None:
        return Resource(what, "missing", (ref.key,), f"not in this machine's Hugging Face cache and the machine is "
                        f"offline ({offline})", f"{fix} (or download it where there is network)")
    remote = hub.remote(found.hub_id, "model")
    if remote.denied is not None:
        return Resource(what, "missing", (ref.key,), remote.denied, fix)
    return Resource(what, "download", (ref.key,), "from the Hub", size=remote.size(lambda n: n.endswith(WEIGHT_FILES)))


@CHECKERS.register("model")
def models(job: Job, hub: Hub) -> list[Resource]:
    """One resource per model the job loads (the trained model, the original for comparison)."""
    return [r for r in (_check(ref, job, hub) for ref in job.models) if r is not None]
