"""The command line: key=value overrides anywhere, one-line errors with exit code 2."""
import subprocess
import sys

from nlpattn.cli import parse


def test_overrides_before_and_after_flags():
    args = parse(["tokenizer", "train", "a=1", "--config", "x.yaml", "b=2", "c.d=[1,2]"])
    assert (args.command, args.action, args.config) == ("tokenizer", "train", "x.yaml")
    assert args.overrides == ["a=1", "b=2", "c.d=[1,2]"]
    args = parse(["finetune", "task=sst2", "--init", "runs/x", "train.lr=1e-4"])
    assert args.action is None and args.init == "runs/x" and args.overrides == ["task=sst2", "train.lr=1e-4"]


def test_config_error_is_one_line_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nlpattn", "info", "--config", "configs/model/transformer-small.yaml",
                          "model.dmodel=3"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == ("nlpattn info: error: configs/model/transformer-small.yaml: unknown key "
                                  "'model.dmodel' (did you mean 'model.d_model'?)")
