"""Snakemake keeps within --cores after a checkpoint.

Snakemake 9.15 and 9.16 start more jobs than --cores allows once a checkpoint
has run and the DAG is updated (here: 3 one-thread jobs at once with --cores 2,
2 with --cores 1; the default study ran 6 trainings at once on 2 cores); 9.9,
9.10, 9.17, 9.19, 9.21 and 9.27 were measured to keep within --cores. The
workflow has that shape: `index` is a checkpoint and per-case preprocessing
asks it for the cases. pyproject.toml asks for snakemake>=9.17 and
requirements/lock.txt pins a version that schedules correctly; this test runs
the installed Snakemake on the smallest workflow of that shape, the end-to-end
test checks the same bound on the real, reduced study.
"""

from __future__ import annotations

import pytest

CHECKPOINT_THEN_SIX_JOBS = '''
checkpoint cases:
    output: "cases.txt"
    shell: "printf 'a\\\\nb\\\\n' > {output}"


def case_list(wildcards):
    return checkpoints.cases.get().output[0]


rule work:
    input: case_list
    output: "out/{i}.txt"
    threads: 1
    shell: "cat {input} > {output}"


rule all:
    input: expand("out/{i}.txt", i=range(6))
    default_target: True
'''


@pytest.mark.parametrize("cores", [1, 2])
def test_jobs_after_a_checkpoint_stay_within_cores(snakemake, cores):
    snakefile = snakemake.workdir / "Snakefile"
    snakefile.write_text(CHECKPOINT_THEN_SIX_JOBS)
    run = snakemake("--cores", str(cores), snakefile=snakefile)
    assert run.returncode == 0, run.output
    assert sorted(p.name for p in (snakemake.workdir / "out").iterdir()) == [f"{i}.txt" for i in range(6)]
    # six independent one-thread jobs: exactly as many at once as there are cores, never more
    assert run.max_cores_in_use() == cores, run.output
