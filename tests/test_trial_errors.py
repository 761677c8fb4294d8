"""A trial that raises: its one-line error, as the driver's callbacks see it while Tune runs (the
MLflow tag, the progress line) and as the reports read it afterwards from the experiment on disk
(trials.parquet), through Tune's public Trial and ExperimentAnalysis."""
import pytest

from cmisweep.sweep.tracking import error_message


@pytest.mark.slow(20)
def test_a_raised_error_is_one_line_during_the_run_and_after(tmp_path):
    import ray
    from ray import tune

    def boom(config):  # local: Ray's workers get it by value, not by importing this test module
        raise ValueError(f"boom at gamma {config['gamma']}")

    seen = []

    class Seen(tune.Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            seen.append(error_message(trial))

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    try:
        tune.Tuner(boom, param_space={"gamma": 0.3},
                   run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), callbacks=[Seen()],
                                             verbose=0)).fit()
    finally:
        ray.shutdown()
    assert seen == ["ValueError: boom at gamma 0.3"]
    trials = tune.ExperimentAnalysis(str(tmp_path / "exp")).trials
    assert [error_message(t) for t in trials] == ["ValueError: boom at gamma 0.3"]
