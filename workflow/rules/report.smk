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
    output:
        report(
            f"{TABLES_DIR}/table1_modality.html",
            caption="../report/table1_modality.rst",
            category="Tables",
            labels={"table": "Table 1: modality study"},
        ),
        report(
            f"{TABLES_DIR}/table2_comparison.html",
            caption="../report/table2_comparison.rst",
            category="Tables",
            labels={"table": "Table 2: comparison"},
        ),
        report(
            f"{TABLES_DIR}/table2_significance.html",
            caption="../report/table2_significance.rst",
            category="Tables",
            labels={"table": "Table 2b: significance"},
        ),
        report(
            f"{TABLES_DIR}/efficiency.html",
            caption="../report/efficiency.rst",
            category="Tables",
            labels={"table": "Efficiency"},
        ),
        report(
            f"{TABLES_DIR}/detection.html",
            caption="../report/detection.rst",
            category="Tables",
            labels={"table": "Detection"},
        ),
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
        *[
            report(
                f"{FIGURES_DIR}/{stem}.png",
                caption=f"../report/{stem}.rst",
                category="Training curves",
                labels={"figure": f"Training: {stem.removeprefix('training_')}"},
            )
            for stem in training_figure_stems()
        ],
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
