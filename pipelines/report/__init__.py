"""Reports on many runs: statistics over seeds, tables and a verdict, figures, per pipeline.

    stats      summarize, welch_test, band: numbers in, numbers out (no plotting import)
    results    RunResult, which runs count (FINISHED), how metrics are named and read
    verdict    numbers formatted for readers, and the one-line "A beats B" verdict
    tables     per-arm summaries and Welch differences as Markdown and CSV
    figures    every PNG (curves, Adam's internals, β heatmaps, bias correction): matplotlib
    compare    a comparison's report (write_report)
    internals  the report on Adam's internals (write_internals)
    grids      a grid's report (write_grid_report)

Import from the module that owns a name; this package imports none of them, so that
`import pipelines.report.stats` stays free of matplotlib.
"""
