"""GLUE metrics as an `evaluate` metric module, loadable offline from the nlpattn package.

Config names and result keys follow the hub's `glue` metric (Wang et al., 2018):
cola -> matthews_correlation; sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli,
hans, imdb -> accuracy; mrpc, qqp -> accuracy, f1; stsb -> pearson, spearmanr. One extra config,
ax (the diagnostic set), gives the multiclass Matthews correlation (R3) the GLUE server
reports for it. Values keep their natural scale: [0, 1] for accuracy/F1, [-1, 1] for
correlations. STS-B scores are kept in float64 end to end (the hub metric uses float32, and
datasets' numpy format would cast to float32, so inputs come back as lists and are converted
here).

This file must stand alone: `evaluate.load(path)` copies it into its module cache under a
hash of its code, and reads its import lines to check dependencies. So: one import per line,
no relative or nlpattn imports, and no other `evaluate.EvaluationModule` subclass in the
module namespace (evaluate instantiates the first one it finds).
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr
from scipy.stats import spearmanr
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = (
    "GLUE benchmark metrics (nlpattn's offline copy of the hub `glue` metric): Matthews "
    "correlation for CoLA and AX, accuracy (plus binary F1 for MRPC and QQP) for the "
    "classification tasks, Pearson and Spearman correlation for STS-B."
)

_CITATION = (
    "Wang, Singh, Michael, Hill, Levy, Bowman. GLUE: A Multi-Task Benchmark and Analysis "
    "Platform for Natural Language Understanding. ICLR 2019 (arXiv:1804.07461)."
)

_INPUTS_DESCRIPTION = """
Args:
    predictions: predicted labels (int) per example; predicted similarity (float) for stsb.
    references: gold labels (int) per example; gold similarity (float) for stsb.
Returns, depending on the config name:
    cola, ax: {"matthews_correlation"} in [-1, 1]
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans, imdb: {"accuracy"} in [0, 1]
    mrpc, qqp: {"accuracy", "f1"} in [0, 1] (F1 of the positive class 1)
    stsb: {"pearson", "spearmanr"} in [-1, 1]
Example:
    >>> metric = nlpattn.metrics.load_glue_metric("mrpc")
    >>> metric.compute(predictions=[0, 1], references=[0, 1])
    {'accuracy': 1.0, 'f1': 1.0}
"""


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> dict:
    """Fraction of predictions equal to the reference label."""
    return {"accuracy": float(np.mean(predictions == references))}


def _accuracy_and_f1(predictions: np.ndarray, references: np.ndarray) -> dict:
    """Accuracy and the binary F1 of class 1 (the MRPC/QQP pair)."""
    f1 = f1_score(y_true=references, y_pred=predictions)
    return {**_accuracy(predictions, references), "f1": float(f1)}


def _matthews(predictions: np.ndarray, references: np.ndarray) -> dict:
    """Matthews correlation; for more than two classes this is Gorodkin's R_K (GLUE's R3)."""
    return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}


def _correlations(predictions: np.ndarray, references: np.ndarray) -> dict:
    """Pearson and Spearman correlation between predicted and gold similarity."""
    pearson = pearsonr(predictions, references)[0]
    spearman = spearmanr(predictions, references)[0]
    return {"pearson": float(pearson), "spearmanr": float(spearman)}


_SCORER_OF_CONFIG = {
    "cola": _matthews,
    "sst2": _accuracy,
    "mrpc": _accuracy_and_f1,
    "stsb": _correlations,
    "qqp": _accuracy_and_f1,
    "mnli": _accuracy,
    "mnli_matched": _accuracy,
    "mnli_mismatched": _accuracy,
    "qnli": _accuracy,
    "rte": _accuracy,
    "wnli": _accuracy,
    "hans": _accuracy,
    "ax": _matthews,
    "imdb": _accuracy,
}

CONFIG_NAMES = tuple(_SCORER_OF_CONFIG)


class NlpattnGlue(evaluate.Metric):
    """The GLUE metric for one task, chosen by `config_name` (see CONFIG_NAMES)."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the inputs (int labels, or float scores for stsb) of this config."""
        if self.config_name not in _SCORER_OF_CONFIG:
            raise KeyError(
                f"unknown GLUE config name {self.config_name!r}; "
                f"choose one of {list(CONFIG_NAMES)}"
            )
        dtype = "float64" if self.config_name == "stsb" else "int64"
        features = datasets.Features(
            {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
        )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=features,
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions: list, references: list) -> dict:
        """Score predictions against references with this config's metric(s)."""
        scorer = _SCORER_OF_CONFIG[self.config_name]
        return scorer(np.asarray(predictions), np.asarray(references))
