"""The reporter: run records in; paper-style tables, claim verdicts, published numbers, plots out.

``python -m bench report`` calls :func:`bench.report.build.build_report`; the CLI glue is in
:mod:`bench.report.command`. Modules, one job each:

- :mod:`~bench.report.collect`: read ``RESULTS/runs/*.json`` into one row per run (pandas);
- :mod:`~bench.report.learned`: which runs scored at chance (not-learned cells);
- :mod:`~bench.report.budget`: the suite and budget marker each run was trained at;
- :mod:`~bench.report.stats`: mean/std, Welch's t-interval and tests, Holm, power;
- :mod:`~bench.report.render`: Markdown/LaTeX/CSV writers and fixed number formats;
- :mod:`~bench.report.tables`: accuracy tables (Markdown, LaTeX, CSV) with the protocol footnote;
- :mod:`~bench.report.params`: the parameter-count table;
- :mod:`~bench.report.published`: reference numbers from ``results/published/*.csv``, side by side;
- :mod:`~bench.report.claims`: the claims file (``claims.yaml``), validated;
- :mod:`~bench.report.verdicts`: the verdict on each claim, with its evidence;
- :mod:`~bench.report.simulate`: the verdict rule's error rates, by simulation;
- :mod:`~bench.report.plots`: seaborn figures (PNG and PDF) and the prompt heatmap;
- :mod:`~bench.report.index`: the ``OUT/README.md`` index and the list of files written;
- :mod:`~bench.report.build`: all of the above, in order, into one folder.

Nothing heavy (pandas, matplotlib, torch) is imported here, so that ``--help`` stays fast.
"""
