"""The paper's study in one command: a Hydra multirun of hn, shn, sct and the modern
baselines over seeds on a testbed, then a table (mean ± std), a verdict per paper claim and
figures. ``python -m hardneg.study --help``; ``hardneg.study.paper_table`` does the same
aggregation for the paper presets beside the paper's reported numbers.
"""
