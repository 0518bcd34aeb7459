"""Handing an ablation's workers to the scheduler users already have.

Every worker is the same ``synth ablate ... --no-wait`` command on one ``--out`` folder: the
cells, synthetic sets and fold GANs are claimed one by one (:mod:`.cache`), a worker that dies
or is requeued leaves claims that another worker takes over, and ``synth ablate --report-only
--out OUT`` writes the report once every cell exists. So a cluster run needs nothing but N
copies of one command line:

* :func:`emit_commands` writes them to a file: a swarm file (NIH Biowulf), the lines of a
  SLURM array script, or GNU parallel input;
* :func:`submit` hands them to SLURM (or runs them as local processes) through ``submitit``
  (optional extra ``synth[cluster]``).
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from synth.ablation.plan import AblationError

__all__ = ["worker_args", "emit_commands", "SlurmSettings", "submit"]

# Options that steer the submission itself and never reach a worker.
CLUSTER_OPTIONS = ("executor", "emit_commands", "workers", "status", "slurm_partition", "slurm_gpus", "slurm_cpus",
                   "slurm_mem", "slurm_time", "slurm_account", "slurm_config", "report_only", "no_wait")


def worker_args(ctx) -> list[str]:
    """The options given on this command line, as a worker's arguments: cluster options dropped,
    paths made absolute (workers start elsewhere), ``--no-wait`` added."""
    import click

    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name in CLUSTER_OPTIONS or ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        opt = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            if value:
                args.append(opt)
            elif param.secondary_opts:
                args.append(max(param.secondary_opts, key=len))  # --no-matched-control
            continue
        for v in (value if param.multiple else [value]):
            if isinstance(v, Path):
                v = v.resolve()
            args += [opt, str(v)]
    return [*args, "--no-wait"]


def _line(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["synth", "ablate", *args])


def emit_commands(path: str | Path, args: Sequence[str], workers: int, out: Path) -> str:
    """Write ``workers`` worker lines and, commented, the final report line; returns the report
    command. Any line may run on any machine that sees ``out``; run them all at once."""
    from synth.utils.io import atomic_write_text

    report = _line(["--report-only", "--out", str(Path(out).resolve())])
    lines = [_line(args) for _ in range(workers)]
    text = "\n".join(lines) + f"\n# when every worker has finished:\n# {report}\n"
    atomic_write_text(path, text)
    return report


@dataclass
class SlurmSettings:
    """What the jobs ask of the scheduler (``--slurm-*`` options or a YAML file of these keys)."""

    partition: str | None = None
    gpus: int = 0
    cpus: int = 2
    mem_gb: float = 8.0
    time_min: int = 240
    account: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, **override: Any) -> "SlurmSettings":
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise AblationError(f"--slurm-config {path}: cannot read it ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise AblationError(f"--slurm-config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        known = set(cls.__dataclass_fields__)
        if not isinstance(data, Mapping) or set(data) - known:
            bad = sorted(set(data) - known) if isinstance(data, Mapping) else ["(not a mapping)"]
            raise AblationError(f"--slurm-config {path}: unknown key(s) {', '.join(map(str, bad))}; "
                                f"known: {', '.join(sorted(known))}")
        return cls(**{**data, **{k: v for k, v in override.items() if v is not None}})


def submit(worker: Callable[[Sequence[str]], int], args: Sequence[str], workers: int, executor: str, out: Path,
           slurm: SlurmSettings | None = None, log=print) -> list[Any]:
    """Submit ``workers`` jobs running ``worker(args)`` (``synth.ablation.cli.run_worker``: a SLURM array, or
    local processes; the worker is passed in, so this module never imports the command it runs);
    returns the submitit jobs. Job logs go to ``OUT/jobs/``."""
    try:
        import submitit
    except ImportError:
        raise AblationError(f"--executor {executor}: needs submitit (pip install 'raregan-synth[cluster]')") from None
    folder = Path(out).resolve() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="local" if executor == "local" else "slurm")
    s = slurm or SlurmSettings()
    params: dict[str, Any] = {"timeout_min": int(s.time_min), "cpus_per_task": int(s.cpus), "mem_gb": float(s.mem_gb),
                              "name": "synth-ablate"}
    if executor == "slurm":
        params.update(slurm_array_parallelism=workers, gpus_per_node=int(s.gpus))
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.account:
            params["slurm_account"] = s.account
    ex.update_parameters(**params)
    jobs = ex.map_array(worker, [list(args)] * workers)
    for job in jobs:
        log(f"job {job.job_id}: log {job.paths.stdout}")
    return jobs
