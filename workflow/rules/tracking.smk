# MLflow outcome sync: once at the end of every workflow run that did work,
# in the main Snakemake process (never in a dry-run, nor when there was
# nothing to do), `brainmets tracking sync` logs every evaluated run's val/test
# metrics into its MLflow run and the study summary (selection, tables,
# figures) into the study parents. One pass for the whole study instead of
# one in each job that evaluates (~3 s and a sqlite writer each). A hook,
# not a rule, for the reason given in setup.smk: MLflow is a window on the
# results, not an output of them; the sync is idempotent, so running it again
# is harmless. A failure only warns; `brainmets tracking sync --config
# <results>/config.resolved.yaml` retries it by hand.
#
# Snakemake keeps one onsuccess handler: a second one elsewhere replaces this one.


def sync_tracking():
    """`brainmets tracking sync` after a successful run; a failure only warns (files are the truth)."""
    import subprocess

    log = Path(LOGS) / "tracking_sync.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        status = subprocess.run(
            ["brainmets", "tracking", "sync", "--config", RESOLVED_CONFIG, "--results", RESULTS],
            stdout=out, stderr=subprocess.STDOUT,
        ).returncode
    if status != 0:
        logger.warning(f"MLflow outcomes were not synced (see {log}); the results' files are complete")


onsuccess:
    if config["tracking"]["enabled"]:
        sync_tracking()
