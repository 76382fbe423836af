# Tables (CSV + booktabs LaTeX) and figures (PNG + PDF) of the study. The CSV
# tables and PNG figures are registered for the HTML report:
#
#   .venv/bin/snakemake --report results/report.html
#
# (run after the workflow; captions in workflow/report/). Both verbs are
# torch-free and cheap, so they run as local jobs.


rule tables:
    """Table 1 (modality study), Table 2 (comparison + significance), efficiency, detection."""
    input:
        results=get_report_inputs,
    output:
        report(
            f"{TABLES_DIR}/table1_modality.csv",
            caption="../report/table1_modality.rst",
            category="Tables",
            labels={"table": "Table 1: modality study"},
        ),
        report(
            f"{TABLES_DIR}/table2_comparison.csv",
            caption="../report/table2_comparison.rst",
            category="Tables",
            labels={"table": "Table 2: comparison"},
        ),
        report(
            f"{TABLES_DIR}/table2_significance.csv",
            caption="../report/table2_significance.rst",
            category="Tables",
            labels={"table": "Table 2b: significance"},
        ),
        report(
            f"{TABLES_DIR}/efficiency.csv",
            caption="../report/efficiency.rst",
            category="Tables",
            labels={"table": "Efficiency"},
        ),
        report(
            f"{TABLES_DIR}/detection.csv",
            caption="../report/detection.rst",
            category="Tables",
            labels={"table": "Detection"},
        ),
        expand(f"{TABLES_DIR}/{{name}}.tex", name=TABLES),
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
    shell:
        "brainmets tables --results {params.results} --config {params.config} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    """Patients per split, modality heatmap, qualitative panel, training curves."""
    input:
        results=get_report_inputs,
    output:
        report(
            f"{FIGURES_DIR}/patients_per_split.png",
            caption="../report/patients_per_split.rst",
            category="Figures",
            labels={"figure": "Patients per split"},
        ),
        report(
            f"{FIGURES_DIR}/modality_heatmap.png",
            caption="../report/modality_heatmap.rst",
            category="Figures",
            labels={"figure": "Modality heatmap"},
        ),
        report(
            f"{FIGURES_DIR}/qualitative.png",
            caption="../report/qualitative.rst",
            category="Figures",
            labels={"figure": "Qualitative example"},
        ),
        report(
            expand(f"{FIGURES_DIR}/{{name}}.png", name=training_figure_stems()),
            caption="../report/training_curves.rst",
            category="Training curves",
        ),
        expand(f"{FIGURES_DIR}/{{name}}.pdf", name=figure_stems()),
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
    shell:
        "brainmets figures --results {params.results} --config {params.config} "
        "--out-dir {params.out_dir} > {log} 2>&1"
