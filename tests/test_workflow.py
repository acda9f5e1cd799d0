"""The experiment workflow: config files, the tracked log-likelihood, sweeps and compare-runs."""

import csv
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyrovae import cli
from pyrovae.analysis.compare_runs import find_runs, format_table, group_runs, read_run
from pyrovae.cli.commands import config_from_args
from pyrovae.cli.parser import build_parser
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.guides import gaussian_params
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.sweep import plan_sweep, read_sweep
from pyrovae.training import Callback, fit
from pyrovae.training.tracking import LogLikelihoodTracker
from pyrovae.training.validation import validation_scores
from tests.exact import make_ppca
from tests.stats import assert_mean_within

SMALL = {"hidden": [16], "latent_dim": 4, "eval_num_samples": 30}


def _train_args(*argv):
    return build_parser().parse_args(["train", *argv])


def test_config_file_toml_json_and_command_line_overrides(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.toml").write_text('data = "binarized-mnist"\ndata_dir = "../data"\nlatent_dim = 8\nhidden = [64, 32]\n'
                                     'prior = "mixture"\nepochs = 7\n[prior_options]\nnum_components = 3\n')
    monkeypatch.chdir(tmp_path)  # relative paths are the file's folder's, not the working directory's
    config = config_from_args(_train_args("--config", "configs/run.toml", "--epochs", "9"))
    assert config.epochs == 9  # the command line wins
    assert (config.latent_dim, config.hidden, config.prior) == (8, (64, 32), "mixture")
    assert config.prior_options == {"num_components": 3} and config.data_dir == str(tmp_path / "data")
    assert config.seed == TrainConfig().seed  # untouched options keep their defaults
    saved = tmp_path / "config.json"
    config.save(str(saved), kl_terms={"z": "analytic"})  # a run's config.json, with its recorded facts
    assert config_from_args(_train_args("--config", str(saved))) == config


@pytest.mark.parametrize("name,text,message", [
    ("a.toml", "epoch = 3\n", "unknown configuration keys ['epoch'] ('epoch': did you mean 'epochs'?)"),
    ("b.toml", 'epochs = "3"\n', 'key "epochs" must be an integer'),
    ("c.toml", "latent_dim = 0\n", 'key "latent_dim" must be an integer >= 1'),
    ("d.json", '{"hidden": [200, -1]}', 'key "hidden" must be a list of positive integers'),
    ("e.toml", "epochs = [\n", "not valid TOML"),
    ("f.json", "[1, 2]", "expected a JSON object of options"),
    ("g.yaml", "epochs: 3\n", "a configuration file must be .toml or .json"),
    ("h.toml", "[sweep]\nseeds = [0]\n", "holds a [sweep] table: run it with pyrovae sweep"),
])
def test_config_file_errors_name_the_file_and_key(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyrovae: error: {path}") and message in err, err
    assert not (tmp_path / "run").exists()


def test_validation_scores_against_exact_ppca():
    """On probabilistic PCA with a shifted, too-wide guide: the ELBO from K draws is unbiased for
    log p(x) - KL(q || p(z|x)), its KL part for KL(q || p(z)) (closed forms), and the IWAE bound lies
    between the ELBO and log p(x), within 5 standard errors of 8 independent estimates."""
    ppca = make_ppca(num_pixels=6, latent_dim=3, num_data=30)
    guide, x = ppca.guide_at(loc_shift=0.4, scale_factor=1.4), ppca.x
    runs = [validation_scores(ppca.model, guide, x, seed, "cpu", num_samples=500) for seed in range(8)]
    column = {k: torch.tensor([r[k] for r in runs]) for k in runs[0]}
    exact = ppca.log_marginal(x).mean()
    loc, scale = gaussian_params(guide, x)
    prior_kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).mean()
    se_elbo = assert_mean_within(column["elbo"], exact - ppca.kl_to_posterior(x, 0.4, 1.4).mean())
    se_kl = assert_mean_within(column["kl"], prior_kl)
    assert se_elbo < 0.01 and se_kl < 0.01  # power
    iwae, se = column["log_likelihood"].mean(), column["log_likelihood"].std() / 8 ** 0.5
    assert column["elbo"].mean() + 0.1 < iwae < exact + 5 * se and iwae > exact - 0.05, (iwae, exact, se)


def test_tracker_records_every_n_epochs_and_leaves_training_unchanged():
    ppca = make_ppca(num_pixels=6, latent_dim=3, num_data=40)

    def run(callbacks):
        torch.manual_seed(0)
        model, guide = make_ppca(num_pixels=6, latent_dim=3, num_data=40).model, ppca.guide_at(0.3, 1.2)
        records = []

        class Keep(Callback):  # keeps each epoch's record
            def on_epoch_end(self, loop):
                records.append(dict(loop.record))

        fit(model, guide, pyro.infer.Trace_ELBO(), ppca.x, 5, valid=ppca.x[:20], batch_size=10,
            callbacks=[*callbacks, Keep()], lr=1e-2)
        return records, [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]

    tracked, params = run([LogLikelihoodTracker(ppca.x[:20], every=2, num_samples=50)])
    plain, plain_params = run([])
    assert [r["epoch"] for r in tracked if "valid_log_likelihood" in r] == [2, 4]
    assert all(torch.equal(a, b) for a, b in zip(params, plain_params))  # the global RNG was not touched
    assert [{k: v for k, v in r.items() if not k.startswith("valid_log") and k != "seconds"} for r in tracked] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in plain]
    for r in tracked:
        if "valid_log_likelihood" in r:
            assert r["valid_log_likelihood"] > r["valid_elbo"]
            assert r["valid_reconstruction"] - r["valid_kl"] == pytest.approx(r["valid_elbo"])


def test_plan_sweep_crosses_variants_grid_and_seeds(tmp_path):
    runs = plan_sweep({"epochs": 5}, seeds=[0, 1], variants=[{"guide": "amortized"},
                                                              {"guide": "per-example", "local_steps": 10}],
                      grid={"prior": ["standard-normal", "laplace"]})
    assert len(runs) == 8
    assert runs[0].name == "guide=amortized_prior=standard-normal_seed=0"
    assert runs[-1].name == "guide=per-example_local_steps=10_prior=laplace_seed=1"
    assert runs[-1].config.local_steps == 10 and runs[-1].config.epochs == 5 and runs[-1].config.seed == 1
    with pytest.raises(ConfigError, match="same settings"):
        plan_sweep({}, seeds=[0, 0])
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep]\nseeds = [0]\nvariants = [{guide = 3}]\n")
    with pytest.raises(ConfigError, match=f'{bad}: key "guide" must be a string'):
        read_sweep(str(bad))
    bad.write_text("[sweep]\nseed = [0]\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['seed'\] in \[sweep\]"):
        read_sweep(str(bad))


def _sweep_file(tmp_path, epochs):
    path = tmp_path / "guides.toml"
    path.write_text(f"epochs = {epochs}\nhidden = [16]\nlatent_dim = 4\neval_num_samples = 0\nbatch_size = 50\n"
                    "[sweep]\nseeds = [0, 1]\nvariants = [{guide = \"amortized\"}, {guide = \"iaf\"}]\n")
    return path


def test_sweep_skips_finished_runs_continues_started_ones_and_starts_the_rest(tmp_path):
    """In one process: a finished run (its summary.json) is left as it is, a run stopped after its
    first epoch continues from its checkpoint, and a new run starts."""
    from pyrovae.runs.sweep import sweep
    from pyrovae.runs.train import train

    runs = read_sweep(str(_sweep_file(tmp_path, 3)))[:3]
    out = tmp_path / "sweep"
    sweep(runs[:1], str(out))
    stamp = os.stat(out / runs[0].name / "best.pt").st_mtime_ns
    train(TrainConfig.from_dict({**runs[1].config.to_dict(), "epochs": 1}), str(out / runs[1].name), progress=False)
    os.unlink(out / runs[1].name / "summary.json")  # as if stopped after epoch 1
    log = io.StringIO()
    result = sweep(runs, str(out), log=log)
    assert "1 finished before, 1 to continue, 1 to start" in log.getvalue(), log.getvalue()
    assert result.status == {runs[0].name: "skipped", runs[1].name: "finished", runs[2].name: "finished"}
    assert os.stat(out / runs[0].name / "best.pt").st_mtime_ns == stamp
    lines = [json.loads(line) for line in (out / runs[1].name / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert json.loads((out / "sweep.json").read_text())["runs"][2]["settings"] == {"guide": "iaf", "seed": 0}
    changed = [runs[0]._replace(config=TrainConfig.from_dict({**runs[0].config.to_dict(), "latent_dim": 5}))]
    with pytest.raises(ConfigError, match="holds a run with other options \\(latent_dim\\)"):
        sweep(changed, str(out))


@pytest.mark.slow
def test_sweep_killed_halfway_continues_without_rerunning_finished_runs(tmp_path):
    """Four runs, two workers; SIGTERM once one run has finished and another has a checkpoint. The
    same command then finishes the sweep: the finished run's files are untouched, the started one
    continues from its checkpoint, and every run ends at the same parameters as a run trained alone."""
    path, out = _sweep_file(tmp_path, 25), tmp_path / "sweep"
    command = [sys.executable, "-m", "pyrovae", "sweep", str(path), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    names = [r.name for r in read_sweep(str(path))]
    deadline = time.time() + 240
    while not (any((out / n / "summary.json").exists() for n in names)
               and any((out / n / "last.pt").exists() and not (out / n / "summary.json").exists() for n in names)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to continue" in err, err
    finished = [n for n in names if (out / n / "summary.json").exists()]
    started = [n for n in names if (out / n / "last.pt").exists() and n not in finished]
    assert finished and started and len(finished) + len(started) <= 3
    stamps = {n: os.stat(out / n / "best.pt").st_mtime_ns for n in finished}
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (f"{len(finished)} finished before, {len(started)} to continue, {4 - len(finished) - len(started)} to start"
            in again.stderr), again.stderr
    assert all(os.stat(out / n / "best.pt").st_mtime_ns == stamps[n] for n in finished)
    assert all((out / n / "summary.json").exists() for n in names)
    resumed = started[0]
    lines = [json.loads(line) for line in (out / resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1))  # one line per epoch, in order
    run = read_sweep(str(path))[names.index(resumed)]
    alone = tmp_path / "alone"
    assert cli.main(["train", "--config", _plan(tmp_path, run), "--out", str(alone)]) == 0
    a, b = load_checkpoint(str(alone / "last.pt")), load_checkpoint(str(out / resumed / "last.pt"))
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _plan(tmp_path, run):
    path = tmp_path / "alone.json"
    run.config.save(str(path))
    return str(path)


def _fake_run(folder, name, config, test, seconds, parameters=(100, 50), finished=True):
    run = folder / name
    run.mkdir(parents=True)
    TrainConfig(**config).save(str(run / "config.json"))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_elbo": -30 + e, "valid_elbo": -31 + e,
                                                           "seconds": seconds / 3}) + "\n" for e in (1, 2, 3)))
    if finished:
        (run / "summary.json").write_text(json.dumps({
            "training_seconds": seconds, "parameters": {"model": parameters[0], "guide": parameters[1]},
            "test": {"log_likelihood": test[0], "elbo": test[1], "active_units": test[2],
                     "khat_share_above_0.7": test[3]}}))
    return run


def test_compare_runs_groups_by_settings_with_mean_and_sd_over_seeds(tmp_path, capsys):
    rows = {("amortized", 0): (-20.0, -21.0, 10, 0.10, 60.0), ("amortized", 1): (-20.5, -21.7, 12, 0.30, 90.0),
            ("amortized", 2): (-19.9, -21.1, 11, 0.20, 75.0), ("iaf", 0): (-19.0, -20.0, 14, 0.05, 120.0)}
    for (guide, seed), (ll, elbo, au, khat, secs) in rows.items():
        _fake_run(tmp_path / "sweep", f"guide={guide}_seed={seed}", {"guide": guide, "seed": seed, "jit": seed == 2},
                  (ll, elbo, au, khat), secs)
    _fake_run(tmp_path / "sweep", "guide=iaf_seed=1", {"guide": "iaf", "seed": 1}, None, 1.0, finished=False)
    finished, unfinished = find_runs([str(tmp_path / "sweep")])
    assert len(finished) == 4 and [os.path.basename(p) for p in unfinished] == ["guide=iaf_seed=1"]
    groups = group_runs([read_run(p) for p in finished])
    assert [(g.label, len(g.runs)) for g in groups] == [("guide=amortized", 3), ("guide=iaf", 1)]
    amortized = [v for k, v in rows.items() if k[0] == "amortized"]
    for i, key in enumerate(("log_likelihood", "elbo", "active_units", "khat_share")):
        mean, sd = groups[0].stats[key]
        assert mean == pytest.approx(statistics.mean(r[i] for r in amortized))
        assert sd == pytest.approx(statistics.stdev(r[i] for r in amortized))
    assert groups[0].stats["minutes"][0] == pytest.approx(75.0 / 60) and groups[0].stats["parameters"] == (150, 0)
    table = list(csv.DictReader(io.StringIO(format_table(groups, "csv"))))
    assert table[1]["settings"] == "guide=iaf" and float(table[1]["log_likelihood_mean"]) == -19.0
    assert table[1]["log_likelihood_sd"] == ""  # one run: no spread
    assert cli.main(["compare-runs", str(tmp_path / "sweep"), "--format", "markdown"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[2] == ("| 3 | guide=amortized | -20.13 ± 0.32 | -21.27 ± 0.38 | 11.0 ± 1.0 | 20% ± 10% "
                                   "| 150 ± 0 | 1.25 ± 0.25 |"), out
    assert "1 unfinished run(s) left out" in err and (tmp_path / "sweep" / "compare_runs.png").stat().st_size > 0
    assert cli.main(["compare-runs", str(tmp_path / "nothing")]) == 2
    (tmp_path / "sweep" / "guide=iaf_seed=0" / "summary.json").write_text('{"test": ')  # torn
    capsys.readouterr()
    assert cli.main(["compare-runs", str(tmp_path / "sweep")]) == 2
    assert "guide=iaf_seed=0/summary.json is not a run summary (JSONDecodeError" in capsys.readouterr().err


def test_the_readme_sweep_file_plans_nine_runs(tmp_path):
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(# guides\.toml.*?)```", readme, flags=re.S).group(1)
    (tmp_path / "guides.toml").write_text(block)
    runs = read_sweep(str(tmp_path / "guides.toml"))
    assert [r.name for r in runs[:4]] == ["guide=amortized_seed=0", "guide=amortized_seed=1", "guide=amortized_seed=2",
                                          "guide=iaf_seed=0"]
    assert len(runs) == 9 and runs[-1].config.local_steps == 10 and runs[-1].config.epochs == 100
