# Set-up that runs once per workflow run, in the main Snakemake process, after
# the DAG is built and before the first job starts (never during a dry-run,
# never inside cluster jobs: Snakemake spawns those with --no-hooks):
#
# 1. the resolved config (validated, defaults filled, subsets canonical) is
#    written to <results>/config.resolved.yaml: the file every job reads
#    (--config). Rules list the config sections they depend on in `params`, so
#    Snakemake's params trigger reruns exactly the jobs whose settings changed;
#    the file itself is deliberately no rule input (any edit would then retrain
#    everything), and a dry-run with other settings cannot swap it under a run;
# 2. MLflow: the store, one experiment per study and the studies' parent runs
#    are created before parallel training jobs start (created concurrently, a
#    new sqlite database crashes most jobs and a run can land in "Default",
#    ../shared/notes/mlflow.md). A hook, not a rule with a flag file: a flag
#    input would retrain everything whenever tracking is switched on or the
#    store is recreated, and MLflow is a window on the results, not an input
#    of them. A tracking failure is a warning; training jobs still write their files.
#
# Cluster: export MLFLOW_TRACKING_URI=http://host:port before starting
# Snakemake; this hook and every job inherit it.


onstart:
    write_resolved_config(config, RESOLVED_CONFIG)
    if config["tracking"]["enabled"]:
        init_tracking()
