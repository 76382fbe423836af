# Tables (CSV + booktabs LaTeX + HTML) and figures (PNG + PDF) of the study. The
# HTML tables and PNG figures are registered for the HTML report:
#
#   .venv/bin/snakemake --report results/report.html
#
# (run after the workflow; captions in workflow/report/). Both verbs are
# torch-free and cheap, so they run as local jobs.


rule tables:
    """Table 1 (modality study), Table 2 (comparison + significance), efficiency, detection."""
    input:
        results=get_report_inputs,
        ensembles=ensemble_metrics(),
    output:
        table_report_files(),
        expand(f"{TABLES_DIR}/{{name}}.{{ext}}", name=TABLES, ext=["csv", "tex"]),
    params:
        config=resolved_config,
        results=results_dir,
        out_dir=out_dir,
        reporting=config["reporting"],
    threads: RES["report"]["threads"]
    resources:
        mem_mb=RES["report"]["mem_mb"],
        runtime=RES["report"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCHMARKS}/tables.tsv"
    shell:
        "brainmets tables --results {params.results} --config {params.config} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    """Patients per split, modality heatmap, qualitative panel, training curves."""
    input:
        results=get_report_inputs,
    output:
        figure_report_files(),
        expand(f"{FIGURES_DIR}/{{name}}.pdf", name=FIGURES),
    params:
        config=resolved_config,
        results=results_dir,
        out_dir=out_dir,
        reporting=config["reporting"],
    threads: RES["report"]["threads"]
    resources:
        mem_mb=RES["report"]["mem_mb"],
        runtime=RES["report"]["runtime"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCHMARKS}/figures.tsv"
    shell:
        "brainmets figures --results {params.results} --config {params.config} "
        "--out-dir {params.out_dir} > {log} 2>&1"
