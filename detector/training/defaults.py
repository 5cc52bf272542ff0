"""The detector's defaults, in one place: chosen on the transfer benchmark (bench/transfer.py,
bench/results/transfer.md) by the mean over its targets and seeds, never by one target.

Torch-free and import-light, so the CLI's help can show them. MaidLog's own settings are one
flag away each (`--embedder fasttext` at `embed`; at `train`, `--detector maidlog --no-rule-feature
--no-level-feature --gamma 2 --beta 1 --epochs 600 --batch-size 2000`).
"""
# The student: logistic regression on the input row (detector.training.estimators.LinearDetector). On the
# benchmark's six unseen targets it ranked lines better than MaidLog's domain-adversarial MLP
# ("maidlog") on the same inputs and labels, and without the MLP's spread over seeds.
DETECTOR = "linear"
LINEAR_C = 0.1  # its inverse L2 strength (scikit-learn's C)
# A pretrained sentence encoder knows the words of a system it never saw; a fastText model
# trained on the sources' few thousand lines does not.
EMBEDDER = "minilm"
# The student sees what the teacher saw: the rules' score of each text and each line's level.
RULE_FEATURE = True
LEVEL_FEATURE = True
# The level as one ordinal column (detector.runtime.features): on the real targets with random source sets, what
# the sources teach about "error" carries to "fatal" where no source logged one.
LEVEL_ENCODING = "ordinal"
EPOCHS = 150
# The focal gamma of the losses, eq. 7 and the domain loss (MaidLog: 2). 0 is plain cross-entropy
# on the soft labels: on the benchmark's mean over targets it ranked unseen systems better
# (bench/results/transfer-maidlog.md).
GAMMA = 0.0
BETA = 0.3  # the adversarial (domain) loss's weight, eq. 10 (MaidLog: 1)
LR = 4e-4
SWA_START = 0.6  # SWA over the last 40 % of the epochs
# Score with the mean logit of the full model and the held-out fits that choose the threshold
# (detector.training.estimators.DetectorEnsemble), per detector kind: no extra training. MaidLog's MLP ranks and
# cuts the unseen targets better with it (bench/results/transfer-ensemble.md); the linear model gains nothing from
# it (bench/results/transfer-linear.md).
FOLD_ENSEMBLE = {"linear": False, "maidlog": True, "linear+maidlog": True}
