# Data: synthesise the cohort (embedded default) -> index -> split -> preprocess.
#
# The set of cases is data-dependent (a real root, cases skipped by
# on_bad_case: skip), so `index` is a checkpoint; only the per-case preprocessing
# mode asks it for the case list. Everything downstream depends on one flag,
# CACHE_DONE, so the rest of the DAG (45 + two-stage + baseline trainings) is
# known before the index has run, which keeps `snakemake -n` complete and fast
# even when the data root does not exist yet.


if SYNTHETIC:

    rule synthesise:
        """Generate the synthetic BraTS-MET cohort (resumable: complete cases are kept)."""
        output:
            touch(SYNTH_DONE),
        params:
            root=DATA["synthetic"]["root"],
            n_cases=DATA["synthetic"]["n_cases"],
            seed=DATA["synthetic"]["seed"],
            shape=synth_shape_arg(),
            spacing=synth_spacing_arg(),
        threads: RES["data"]["threads"]
        resources:
            mem_mb=RES["data"]["mem_mb"],
            runtime=RES["data"]["runtime"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/synthesise.log",
        benchmark:
            f"{BENCHMARKS}/data/synthesise.tsv"
        shell:
            "brainmets synth --out-dir {params.root} --n-cases {params.n_cases} --seed {params.seed} "
            "{params.shape} {params.spacing} --workers {threads} --no-progress > {log} 2>&1"


checkpoint index:
    """Find and validate every case under the cohort root -> cases.tsv (paths, shapes, lesion counts)."""
    input:
        get_index_inputs,
    output:
        CASES_TSV,
    params:
        root=COHORT_ROOT,
        on_bad_case=DATA["on_bad_case"],
    threads: RES["data"]["threads"]
    resources:
        mem_mb=RES["data"]["mem_mb"],
        runtime=RES["data"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/data/index.log",
    benchmark:
        f"{BENCHMARKS}/data/index.tsv"
    shell:
        "brainmets index --root {params.root} --out {output} --on-bad-case {params.on_bad_case} "
        "--workers {threads} --no-progress > {log} 2>&1"


rule split:
    """Stratified train/val/test split (or the user's split file, validated) -> splits.tsv."""
    input:
        unpack(get_split_inputs),
    output:
        SPLITS_TSV,
    params:
        fractions=DATA["split"]["fractions"],
        seed=DATA["split"]["seed"],
        split_file=split_file_arg,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/data/split.log",
    benchmark:
        f"{BENCHMARKS}/data/split.tsv"
    shell:
        "brainmets split --cases {input.cases} --out {output} --fractions {params.fractions} "
        "--seed {params.seed} {params.split_file} > {log} 2>&1"


if DATA["preprocess_jobs"] == "single":

    rule preprocess:
        """Cache every case (RAS, brain crop, z-score, 4 channels + label) in one job."""
        input:
            cases=CASES_TSV,
        output:
            touch(CACHE_DONE),
        params:
            out_dir=flagged_dir,
            spacing=cache_spacing_arg(),
        threads: RES["data"]["threads"]
        resources:
            mem_mb=RES["data"]["mem_mb"],
            runtime=RES["data"]["runtime"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/preprocess.log",
        benchmark:
            f"{BENCHMARKS}/data/preprocess.tsv"
        shell:
            "brainmets preprocess --cases {input.cases} --out-dir {params.out_dir} {params.spacing} "
            "--workers {threads} > {log} 2>&1"

else:

    localrules:
        preprocess_all,

    rule preprocess_case:
        """Cache one case (one job per case: suits a cluster and large cohorts)."""
        input:
            cases=CASES_TSV,
        output:
            npy=f"{CACHE_DIR}/{{case}}.npy",
            meta=f"{CACHE_DIR}/{{case}}.json",
        params:
            out_dir=out_dir,
            spacing=cache_spacing_arg(),
        resources:
            mem_mb=RES["data"]["mem_mb"],
            runtime=RES["data"]["runtime"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/preprocess/{{case}}.log",
        benchmark:
            f"{BENCHMARKS}/data/preprocess/{{case}}.tsv"
        shell:
            "brainmets preprocess --cases {input.cases} --out-dir {params.out_dir} "
            "--case {wildcards.case} {params.spacing} > {log} 2>&1"

    rule preprocess_all:
        """Flag: every ok case of cases.tsv is cached (asks the index checkpoint for the cases)."""
        input:
            get_cached_cases,
        output:
            touch(CACHE_DONE),
        params:
            out_dir=flagged_dir,
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/preprocess_all.log",
        benchmark:
            f"{BENCHMARKS}/data/preprocess_all.tsv"
        shell:
            "echo 'every ok case is cached in {params.out_dir}' > {log}"
