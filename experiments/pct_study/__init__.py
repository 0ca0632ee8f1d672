"""The positive-congruent training study behind ``experiments/pct_mnist1d.py``.

``settings`` (the setup and its data), ``recipes`` (term specs: which loss terms a v2 run trains
with), ``runner`` (training runs, in worker processes), ``analysis`` (scores, sweep picks,
the table's statistics), ``report`` (markdown and plot); the script is the command line.
``cheap`` holds issue 15's cheap recipe (candidates, blends, step cost, its two reports) for
``experiments/pct_cheap.py``, on the same setup and code, or on MNIST-5k and scikit-learn digits.
``new_classes`` scores those rows on seen and unseen classes when v1 knows only classes 0-4
(``Setup.v1_classes``; MPT's setting) for ``experiments/pct_new_classes.py``.
"""
