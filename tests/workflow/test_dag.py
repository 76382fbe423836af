"""The workflow's DAG: lint-clean, and dry-runs of the default and paper configs expand the whole study."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"


def test_lint_is_clean(snakemake):
    run = snakemake("--lint")
    assert run.returncode == 0, run.output
    assert "Lints for" not in run.output, run.output


def _trained_baselines() -> int:
    # the modality study's U-Net is reused as the 3D-UNET row: not trained as a baseline
    return len(set(yaml.safe_load((REPO / "config.yaml").read_text())["baselines"]["models"]) - {"unet"})


def test_default_config_expands_the_whole_study(snakemake):
    run = snakemake("-n", "--quiet", "rules")
    assert run.returncode == 0, run.output
    jobs = run.job_counts()
    # seeds_per_job: all: one job trains (or predicts) the 3 seeds of a study, model and subset;
    # modality_study.subsets_per_job: 4: the study's 15 subsets in 4 jobs (4, 4, 4, 3), train_modality_group1-4
    assert "train_modality" not in jobs
    assert {rule: n for rule, n in jobs.items() if rule.startswith("train_modality_group")} == {
        f"train_modality_group{k}": 1 for k in range(1, 5)}
    assert jobs["train_detector"] == 2
    assert jobs["train_segmentor"] == 2
    assert jobs["train_baseline"] == _trained_baselines()
    # single-pass runs are predicted and evaluated by their training job; the two-stage pair by
    # predict_twostage: no job evaluates on its own
    assert "predict" not in jobs
    assert jobs["predict_twostage"] == 2
    assert "evaluate" not in jobs
    # the seed ensembles (the two-stage model of the selected subset, the U-Net on all four sequences):
    # one job each segments, tunes the postprocessing, and evaluates its three Table 2 rows
    assert jobs["ensemble"] == 2
    for once in ("synthesise", "index", "split", "preprocess", "select_subset", "tables", "figures"):
        assert jobs[once] == 1, once
    # a dry-run writes no results
    assert not (snakemake.workdir / "results").exists()


def test_a_subset_group_job_pairs_each_subset_and_seed_with_its_run_directory(snakemake, tmp_path):
    override = tmp_path / "groups.yaml"
    override.write_text(yaml.safe_dump({"modality_study": {"subsets": ["t1c", "t2f", "t1c+t2f"],
                                                           "subsets_per_job": 2},
                                        "seeds": [0, 1], "tracking": {"enabled": False},
                                        "baselines": {"models": []}, "ensembles": {"enabled": False}}))
    run = snakemake("-n", "--printshellcmds", "--configfile", str(override), "--forceall")
    assert run.returncode == 0, run.output
    commands = {}
    for block in run.output.split("rule train_modality_group")[1:]:
        command = block.split("brainmets train ")[1].split("\n")[0]
        commands[block.split(":")[0]] = command
    assert sorted(commands) == ["1", "2"], run.output  # 3 subsets in groups of 2, in the study's order
    for number, subsets in (("1", ["t1c", "t2f"]), ("2", ["t1c+t2f"])):
        args = commands[number].split(" --")
        value = {a.split(" ", 1)[0]: a.split(" ", 1)[1].split() for a in args if " " in a}
        assert value["subset"] == [s for s in subsets for _ in (0, 1)], commands[number]
        assert value["seed"] == ["0", "1"] * len(subsets), commands[number]
        assert value["out-dir"] == [f"results/modality/unet/{s}/seed{k}" for s in subsets for k in (0, 1)]
    # the selection still reads every subset's val metrics
    select = run.output.split("rule select_subset:")[1].split("\n\n")[0]
    assert all(f"modality/unet/{s}/seed1/metrics/val.tsv" in select for s in ("t1c", "t2f", "t1c+t2f"))


def test_the_study_and_the_selected_chain_start_before_the_baselines(snakemake):
    """Priorities: the modality study gates the selection and the selected two-stage chain the report."""
    run = snakemake("-n")
    assert run.returncode == 0, run.output
    priority = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", run.output)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        found = re.search(r"^\s+priority: (\d+)$", block, re.MULTILINE)
        priority.setdefault(rule, set()).add(int(found.group(1)) if found else 0)
    assert set(priority) >= {"train_modality_group1", "select_subset", "train_detector", "train_segmentor",
                             "predict_twostage", "ensemble", "train_baseline"}, run.output
    study = {rule: p for rule, p in priority.items()
             if rule.startswith("train_modality") or rule == "select_subset"}
    chain = [priority[rule] for rule in ("train_detector", "train_segmentor", "predict_twostage", "ensemble")]
    assert min(map(min, study.values())) > max(map(max, chain)), priority
    assert min(map(min, chain)) > max(priority["train_baseline"]), priority


def test_one_seed_per_job_expands_a_job_per_run(snakemake):
    run = snakemake("-n", "--quiet", "rules", "--config", "seeds_per_job=1")
    assert run.returncode == 0, run.output
    jobs = run.job_counts()
    assert jobs["train_modality"] == 15 * 3
    assert jobs["train_detector"] == 2 * 3 and jobs["train_segmentor"] == 2 * 3
    assert jobs["train_baseline"] == _trained_baselines() * 3
    assert jobs["predict_twostage"] == 2 * 3
    for once in ("select_subset", "tables", "figures"):
        assert jobs[once] == 1, once


@pytest.mark.parametrize("seeds_per_job", ["all", 1])
def test_the_segmentor_of_seed_k_trains_on_the_detector_of_seed_k(snakemake, seeds_per_job):
    """twostage.train_on_detected: each seed's run directory, detector and `--seed` in the same order."""
    overrides = snakemake.workdir / "train_on_detected.yaml"
    overrides.write_text(yaml.safe_dump({"twostage": {"train_on_detected": True}, "seeds_per_job": seeds_per_job}))
    run = snakemake("-n", "-p", "--configfile", str(overrides))
    assert run.returncode == 0, run.output
    commands = [line for line in run.output.splitlines()
                if "--model segmentor" in line and "--subset t1c+t1n+t2f+t2w " in line]
    groups = [[0, 1, 2]] if seeds_per_job == "all" else [[0], [1], [2]]
    assert len(commands) == len(groups), commands
    found = []
    for command in commands:
        seeds = [int(s) for s in re.search(r"--seed ([\d ]+?) --", command).group(1).split()]
        detectors = re.search(r"--detector (.+?) --seed", command).group(1).split()
        out_dirs = re.search(r"--out-dir (.+?) --threads", command).group(1).split()
        assert detectors == [f"results/twostage/detector/t1c+t1n+t2f+t2w/seed{s}/best.pt" for s in seeds]
        assert out_dirs == [f"results/twostage/segmentor/t1c+t1n+t2f+t2w/seed{s}" for s in seeds]
        log = re.search(r"> (\S+) 2>&1", command).group(1)
        assert log.endswith("/seeds/train.log" if seeds_per_job == "all" else f"/seed{seeds[0]}/train.log")
        found.append(seeds)
    assert sorted(found) == groups


def test_paper_config_builds_the_full_dag_without_the_data(snakemake):
    run = snakemake("-n", "--quiet", "rules", "--configfile", str(PAPER))
    assert run.returncode == 0, run.output
    assert "does not exist" in run.output  # the missing data root is pointed out
    jobs = run.job_counts()
    assert jobs["train_modality"] == 45
    assert jobs["train_detector"] == 6 and jobs["train_segmentor"] == 6
    # Table 2: 11 paper rows (the 3D-UNET reused from the modality study) + nnU-Net ResEnc, 3 seeds each
    assert jobs["train_baseline"] == 11 * 3
    assert "predict" not in jobs and jobs["predict_twostage"] == 6
    assert "evaluate" not in jobs
    assert "synthesise" not in jobs
    # per-case preprocessing waits for the index checkpoint; its collector is in the DAG
    assert jobs["preprocess_all"] == 1 and "preprocess" not in jobs


PAPER_TABLE2_TRAINED = ("resunet", "resunetse", "vnet", "swinunetr", "swinunetr_v2", "unetr", "segresnet",
                        "segresnetvae", "nnformer", "mlp_unext", "resenc_unet")

#: The paper's Table 2 rows, top to bottom (figures/results.png of the authors' repository,
#: xmindflow/Met-Seg at 9ee3779), as registry entries; then the project's reference row.
PAPER_TABLE2_ORDER = ["resunet", "resunetse", "unet", "vnet", "swinunetr_v2", "swinunetr", "unetr", "nnformer",
                      "segresnet", "mlp_unext", "segresnetvae", "resenc_unet"]


def test_paper_config_lists_table2_rows_in_the_papers_order():
    from brainmets.config import merge_config, read_yaml

    merged = merge_config(read_yaml(REPO / "config.yaml"), read_yaml(PAPER))  # as Snakemake merges them
    assert merged["baselines"]["models"] == PAPER_TABLE2_ORDER


def test_paper_config_trains_every_table2_row_three_seeds(snakemake):
    run = snakemake("-n", "--configfile", str(PAPER))
    assert run.returncode == 0, run.output
    trained = [fields["output"] for rule, fields in run.jobs()
               if rule in ("train_baseline", "train_modality", "train_segmentor", "train_detector")]
    per_row = {}
    for output in trained:
        study, model, subset, seed = output.partition("results/paper/")[2].split("/")[:4]
        per_row.setdefault((study, model, subset), set()).add(seed)
    all_four = "t1c+t1n+t2f+t2w"
    for model in PAPER_TABLE2_TRAINED:
        assert per_row[("baselines", model, all_four)] == {"seed0", "seed1", "seed2"}, model
    # the 3D-UNET row is the modality study's all-four run, trained once
    assert ("baselines", "unet", all_four) not in per_row
    assert per_row[("modality", "unet", all_four)] == {"seed0", "seed1", "seed2"}
    for subset in ("selected", all_four):  # the two two-stage rows
        for part in ("detector", "segmentor"):
            assert per_row[("twostage", part, subset)] == {"seed0", "seed1", "seed2"}
    assert sum(1 for key in per_row if key[0] == "baselines") == len(PAPER_TABLE2_TRAINED)


@pytest.mark.parametrize("configfile", [[], ["--configfile", str(PAPER)]], ids=["default", "paper"])
def test_every_job_has_a_benchmark_mirroring_its_log(snakemake, configfile):
    run = snakemake("-n", *configfile)
    assert run.returncode == 0, run.output
    jobs = run.jobs()
    modality = "train_modality_group1" if not configfile else "train_modality"  # paper: one run per job
    assert {rule for rule, _ in jobs} >= {modality, "train_detector", "train_segmentor", "train_baseline",
                                          "predict_twostage", "index", "split",
                                          "select_subset", "tables", "figures"}
    for rule, fields in jobs:
        if rule == "all":
            continue
        results, sep, relpath = fields["log"].partition("/logs/")
        assert sep and relpath.endswith(".log"), (rule, fields)
        assert fields.get("benchmark") == f"{results}/benchmarks/{relpath.removesuffix('.log')}.tsv", (rule, fields)


def test_paper_training_jobs_ask_for_a_gpu(snakemake):
    run = snakemake("-n", "--configfile", str(PAPER), "--forcerun", "train_modality")
    assert run.returncode == 0, run.output
    block = run.output.split("rule train_modality:")[1].split("\n\n")[0]
    assert "gpu=1" in block


def test_reduced_study_and_override(snakemake, tmp_path):
    override = tmp_path / "reduced.yaml"
    override.write_text(yaml.safe_dump({
        "seeds": [5],
        "modality_study": {"subsets": ["t1c", "t2f+t1c"], "subsets_per_job": 1},
        "twostage": {"subsets": ["selected"], "train_on_detected": True},
        "baselines": {"models": []},
        "selection": {"override": "t1c+t2f"},
        "tracking": {"enabled": False},
        "ensembles": {"enabled": False},  # config.yaml's U-Net ensemble needs the all-four subset
    }))
    run = snakemake("-n", "--configfile", str(override))
    assert run.returncode == 0, run.output
    jobs = run.job_counts()
    assert jobs["train_modality"] == 2 and jobs["train_detector"] == 1 and jobs["train_segmentor"] == 1
    assert "train_baseline" not in jobs
    assert "modality/unet/t1c+t2f/seed5/model.pt" in run.output
    # the alias keeps paths independent of the decision; the decision file is an input
    assert "twostage/segmentor/selected/seed5/model.pt" in run.output
    segmentor = run.output.split("rule train_segmentor:")[1].split("\n\n")[0]
    assert "selection/modality.json" in segmentor
    assert "twostage/detector/selected/seed5/best.pt" in segmentor  # train_on_detected: the detector's best


@pytest.mark.parametrize("on", [True, False])
def test_segmentor_waits_for_the_detector_only_when_it_trains_on_detected_crops(snakemake, tmp_path, on):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"twostage": {"subsets": ["all"], "train_on_detected": on},
                                        "seeds": [0], "tracking": {"enabled": False},
                                        "ensembles": {"enabled": False}}))
    run = snakemake("-n", "--configfile", str(override), "--forceall")
    assert run.returncode == 0, run.output
    inputs = run.output.split("rule train_segmentor:")[1].split("input: ")[1].split("\n")[0]
    assert ("twostage/detector/t1c+t1n+t2f+t2w/seed0/best.pt" in inputs) is on


@pytest.mark.parametrize(("choice", "weights"), [("best", "best.pt"), ("final", "model.pt")])
def test_prediction_reads_the_chosen_checkpoint(snakemake, tmp_path, choice, weights):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"inference": {"checkpoint": choice}, "seeds": [0],
                                        "tracking": {"enabled": False}}))
    run = snakemake("-n", "--printshellcmds", "--configfile", str(override), "--forceall")
    assert run.returncode == 0, run.output
    other = ({"best.pt", "model.pt"} - {weights}).pop()
    # the ensembles' `brainmets ensemble` gets the same choice through --config (tests/segment)
    for rule in ("predict_twostage", "ensemble"):
        block = run.output.split(f"rule {rule}:")[1].split("\n\n")[0]
        inputs = block.split("input: ")[1].split("\n")[0]
        assert f"seed0/{weights}" in inputs and f"seed0/{other}" not in inputs
    # single-pass runs: their training job predicts val and test with the chosen file, then evaluates
    # them against the cohort (the synthetic root here) into the run's metrics files, its outputs
    for rule in ("train_modality_group1", "train_baseline"):
        after = run.output.split(f"rule {rule}:")[1]
        command = after.split("brainmets train ")[1].split("\n")[0]
        assert f"--predict val test --predict-weights {weights} --evaluate-gt results/synthetic" in command, command
        assert "seed0/metrics/test_lesions.tsv" in after.split("output: ")[1].split("\n")[0], after
    for rule in ("train_detector", "train_segmentor"):
        command = run.output.split(f"rule {rule}:")[1].split("brainmets train ")[1].split("\n")[0]
        assert "--predict" not in command and "--evaluate-gt" not in command, command
    command = run.output.split("rule predict_twostage:")[1].split("brainmets predict ")[1].split("\n")[0]
    assert "--evaluate-gt results/synthetic" in command, command
    # so does the seed ensembles' job, which also tunes and applies the postprocessing: no job evaluates alone
    command = run.output.split("rule ensemble:")[1].split("brainmets ensemble ")[1].split("\n")[0]
    assert command.startswith("results/synthetic ") and "--config results/config.resolved.yaml" in command, command
    assert "rule evaluate:" not in run.output and "rule evaluate_ensemble:" not in run.output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"modality_study": {"subsets": ["t1c", "t1c+t1ce"]}}, "modality_study.subsets[1]"),
        ({"data": {"split": {"fractions": [0.5, 0.3, 0.3]}}}, "sums to 1.1"),
        ({"baselines": {"models": ["resunet", "nnunet"]}}, "baselines.models[1] names model 'nnunet'"),
    ],
)
def test_bad_config_fails_readably_before_any_job(snakemake, tmp_path, override, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    run = snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0
    assert "invalid configuration" in run.output
    assert expected in run.output
    assert "Traceback" not in run.output
