"""Cost of attention, recurrence and convolution, measured (Vaswani et al. 2017, Table 1).

analytic.py (FLOPs, parameters, path lengths by formula) · layers.py (the layers measured) ·
measure.py (FlopCounterMode, time, memory) · paths.py (sequential ops, path length from
gradients) · fit.py (power laws, crossovers) · sweep.py (the experiment) · report.py /
markdown.py / plots.py (`nlpattn cost`) · compare.py (`nlpattn cost compare`).
"""
