"""offprincipal: where in weight space did RL (or SFT) change a model?

Reproduces the weight-space analyses of arXiv 2511.08567 ("The Path Not Taken").
All logic lives in this package; the Snakemake workflow only wires it together.
"""

__version__ = "0.1.0"
