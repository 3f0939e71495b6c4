"""The operator's settings (operator/daemonpool_operator/config.py): defaults with reasons, the environment,
flags over both, the old environment name still read, and bad values refused naming the variable."""

import dataclasses

import pytest

from daemonpool_operator import cli
from daemonpool_operator.config import Config


def test_every_setting_has_a_default_a_reason_and_an_environment_variable():
    for f in dataclasses.fields(Config):
        if f.name == "leader_election":  # made by the CLI from the pod's own identity, not a setting
            continue
        assert f.metadata.get("env", "").startswith("DAEMONPOOL_") and len(f.metadata.get("why", "")) > 20, f.name
    assert Config() == Config.from_env({})
    assert (Config().resync_seconds, Config().reconcile_threads, Config().stuck_seconds) == (60.0, 4, 180.0)


def test_the_environment_then_flags():
    env = {"DAEMONPOOL_RESYNC_SECONDS": "30", "DAEMONPOOL_NAMESPACES": "a,b", "DAEMONPOOL_RECONCILE_THREADS": "8"}
    c = Config.from_env(env)
    assert (c.resync_seconds, c.namespaces, c.reconcile_threads) == (30.0, ("a", "b"), 8)
    assert Config.from_env(env, resync_seconds=5.0, reconcile_threads=None).resync_seconds == 5.0
    assert Config.from_env({"DAEMONPOOL_WORKERS": "6"}).reconcile_threads == 6, "the name before 0.2"
    both = {"DAEMONPOOL_WORKERS": "6", "DAEMONPOOL_RECONCILE_THREADS": "2"}
    assert Config.from_env(both).reconcile_threads == 2


@pytest.mark.parametrize(
    "env, words",
    [
        ({"DAEMONPOOL_RESYNC_SECONDS": "soon"}, "DAEMONPOOL_RESYNC_SECONDS='soon' is not a number of seconds"),
        ({"DAEMONPOOL_WORKERS": "many"}, "DAEMONPOOL_WORKERS='many' is not a whole number"),
        ({"DAEMONPOOL_RECONCILE_THREADS": "0"}, "reconcile_threads must be at least 1"),
        ({"DAEMONPOOL_STUCK_SECONDS": "-1"}, "stuck_seconds must be more than 0 seconds"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Config.from_env(env)


def test_every_tunable_setting_is_a_flag_of_the_cli():
    help_ = cli.build_parser().format_help()
    for flag in ("--resync-seconds", "--reconcile-threads", "--stuck-seconds", "--status-batch-seconds"):
        assert flag in help_, flag
    args = cli.build_parser().parse_args(["--resync-seconds", "12", "--reconcile-threads", "3"])
    assert (args.resync_seconds, args.reconcile_threads) == (12.0, 3)
