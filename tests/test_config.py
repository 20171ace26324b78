"""Config loading: YAML + overrides, strict keys, types, invalid combinations."""
import pytest

from nlpattn.config import load_config
from nlpattn.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "model:\n  d_model: 128\n  n_heads: 4\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(path, ["model.n_layers=6", "train.lr=3e-4", "data.train_files=[a.txt, b.txt]"])
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.train.lr) == (128, 6, 3e-4)
    assert cfg.data.train_files == ["a.txt", "b.txt"]


@pytest.mark.parametrize("text,overrides,pattern", [
    ("model:\n  dmodel: 3\n", [], r"x\.yaml: unknown key 'model\.dmodel' \(did you mean 'model\.d_model'\?\)"),
    ("", ["train.lrr=3"], r"unknown key 'train\.lrr' \(did you mean 'train\.lr'\?\)"),
    ("model:\n  n_heads: four\n", [], r"x\.yaml: key 'model\.n_heads' must be int"),
    ("model:\n  d_model: 250\n  n_heads: 4\n", [], r"x\.yaml: key 'model\.d_model' \(250\) must be divisible by 'model\.n_heads'"),
    ("model:\n  d_model: 60\n  n_heads: 4\n  position: rope\n", [], r"key 'model\.position' = rope needs an even head size"),
    ("model:\n  arch: encoder-decoder\n  body: cnn\n", [], r"key 'model\.arch' = encoder-decoder needs model\.body = transformer"),
    ("model:\n  body: transfomer\n", [], r"key 'model\.body' must be one of .*did you mean 'transformer'"),
    ("train: [1, 2]\n", [], r"key 'train' must be a mapping"),
    ("train:\n  decay_over: minutes\n", [], r"x\.yaml: key 'train\.decay_over' is minutes, which needs 'train\.max_minutes'"),
    ("", ["train.decay_over=hours"], r"key 'train\.decay_over' must be one of"),
    ("", ["train.decay_over=minutes", "train.max_minutes=5", "train.warmup_ratio=0.1"], r"key 'train\.warmup_ratio' is a share"),
    ("model: {d_model: 1\n", [], r"x\.yaml:\d+: invalid YAML"),
    ("", ["notakeyvalue"], r"override 'notakeyvalue' is not of the form key=value"),
    ("objective: clm\n", ["data.cls_sep=true"], r"key 'data\.cls_sep' frames masked-LM windows; objective=clm"),
])
def test_errors_name_file_and_key(tmp_path, text, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(write(tmp_path, text), overrides)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted(Path("configs").rglob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        load_config(path)


def test_lengths_are_checked_against_max_len_where_they_are_used():
    """Pretraining reads blocks of data.block_size; fine-tuning reads glue.max_length tokens."""
    from pathlib import Path

    from nlpattn.config import validate

    configs = Path(__file__).resolve().parents[1] / "configs"
    small = ["model.max_len=64", "model.position=learned"]
    with pytest.raises(ConfigError, match="'data.block_size' \\(128\\) exceeds 'model.max_len' \\(64\\)"):
        validate(load_config(configs / "pretrain/mlm-small.yaml", small), "<config>")
    validate(load_config(configs / "finetune/sst2.yaml", [*small, "data.block_size=128"]), "<config>")  # unused
    for position in ("learned", "rope", "sinusoidal"):
        with pytest.raises(ConfigError, match="'glue.max_length' \\(128\\) exceeds 'model.max_len' \\(64\\)"):
            validate(load_config(configs / "finetune/cola.yaml", ["model.max_len=64", f"model.position={position}"]),
                     "<config>")
    validate(load_config(configs / "finetune/cola.yaml", ["model.max_len=64", "model.position=none"]), "<config>")
