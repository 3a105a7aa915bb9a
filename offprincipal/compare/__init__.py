"""``offprincipal compare BASE FT [FT2 ...] -o OUT/``: one command from checkpoints to a report.

* :mod:`.sources` -- what a command-line checkpoint argument is (local directory, verl shards,
  Hub id with ``@revision``), checked before anything runs;
* :mod:`.estimate` -- disk and time expected, from file sizes and tensor shapes;
* :mod:`.setup` -- the pipeline config written into OUT (validated by the project's schema);
* :mod:`.numbers` -- every number of the report, from the pipeline's CSVs, as JSON and CSVs;
* :mod:`.html` -- the self-contained HTML report (inline images, no external resources);
* :mod:`.run` -- the command: config, Snakemake underneath, publishing the report atomically.
"""
