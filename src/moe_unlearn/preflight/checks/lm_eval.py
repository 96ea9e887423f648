"""The datasets lm-evaluation-harness will load for eval.lm_eval.tasks (metric lm_eval)."""

from __future__ import annotations

from pathlib import Path

from moe_unlearn.preflight.lm_eval_tasks import TaskData, TaskIndex, installed_tasks_dir
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.preflight.resources import CHECKERS, Job, Resource

TASKS, INCLUDE = "eval.lm_eval.tasks", "eval.lm_eval.include_path"
URLS = ("http://", "https://", "hf://")
FIX = (f"set {INCLUDE} to a folder of task YAMLs that read a local copy (dataset_path: the downloaded "
       "repository folder), or remove lm_eval from eval.metrics")


def _on_disk(data: TaskData) -> bool | None:
    """True: read from this machine; False: a listed local file is absent; None: from the Hub or a URL."""
    if Path(data.path).is_dir():
        return True
    if not data.files or any(f.startswith(URLS) for f in data.files):
        return None
    return all(Path(f).exists() for f in data.files)


def _dataset(path: str, tasks: list[str], configs: list[str | None], hub: Hub) -> Resource:
    named = [c for c in configs if c]
    what = (f"lm-eval task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)}: dataset '{path}'"
            + (f" ({', '.join(named)})" if 0 < len(named) <= 4 else f" ({len(named)} configs)" if named else ""))
    if all(hub.datasets_cached(path, c) for c in configs):
        return Resource(what, "local", (TASKS,), "in the datasets cache")
    offline = hub.offline()
    if offline is not None:
        return Resource(what, "missing", (TASKS,), f"not in this machine's datasets cache and the machine is offline "
                        f"({offline}); lm-eval would fail at evaluation, after any training", FIX)
    if path.startswith(URLS):  # data files on the web, not a hub repository
        return Resource(what, "download", (TASKS,), "from the network")
    remote = hub.remote(path, "dataset")
    if remote.denied is not None:
        return Resource(what, "missing", (TASKS,), remote.denied, FIX)
    wanted = {c for c in named if any(n.startswith(f"{c}/") for n in remote.sizes)}
    size = remote.size(lambda n: not wanted or n.split("/")[0] in wanted)
    return Resource(what, "download", (TASKS,), "from the Hub", size=size)


@CHECKERS.register("lm_eval")
def lm_eval(job: Job, hub: Hub) -> list[Resource]:
    """One resource per dataset (all the tasks that read it), plus any task name lm-eval lacks."""
    if job.eval is None or "lm_eval" not in job.eval.metrics:
        return []
    include = job.eval.lm_eval.include_path
    installed = installed_tasks_dir()
    if installed is None:
        return [Resource("lm-evaluation-harness", "missing", ("eval.metrics",), "not installed",
                         "pip install 'moe-unlearn[lmeval]', or remove lm_eval from eval.metrics")]
    if include is not None and not Path(include).is_dir():
        return [Resource(f"lm-eval task folder '{include}'", "missing", (INCLUDE,), "not a folder",
                         f"set {INCLUDE} to a folder of task YAML files")]
    index = TaskIndex([*([Path(include)] if include else []), installed])
    out: list[Resource] = []
    readers: dict[str, tuple[list[str], list[str | None]]] = {}
    for task in job.eval.lm_eval.tasks:
        found = index.datasets(task)
        if found is None:
            out.append(Resource(f"lm-eval task '{task}'", "missing", (TASKS,), "no such task in lm-eval or "
                                f"{INCLUDE}", f"check the name in {TASKS}, or add its YAML under {INCLUDE}"))
        for data in found or []:
            local = _on_disk(data)
            if local is not None:
                status, detail = ("local", "on this machine") if local else ("missing", "a listed data file is absent")
                out.append(Resource(f"lm-eval task {task}: dataset '{data.path}'", status, (TASKS,), detail,
                                    "" if local else f"fix the task YAML's data_files ({INCLUDE})"))
                continue
            tasks, configs = readers.setdefault(data.files[0] if data.files else data.path, ([], []))
            tasks += [task] if task not in tasks else []
            configs += [data.name] if data.name not in configs else []
    return out + [_dataset(path, tasks, configs, hub) for path, (tasks, configs) in readers.items()]
